"""`edgekd reproduce NAME@VERSION`: a registered version rebuilt from its record, and compared with it.

A version records the git commit of its code, a hash of its effective config, the `--set` overrides of its run
and DVC's hash of its prepared data. In a temporary git worktree of that commit (the project's own DVC cache
shared, its data folders linked), with a temporary MLflow store and Prefect home, the data stages run first and
their hash must equal the recorded one; then the recorded commit's own `edgekd run --force` rebuilds every
candidate. The outcome: the same artifact (sha256), or the same test-split predictions, or exactly what differs
(the first stage whose val metrics differ, the metric deltas). Nothing is registered or moved in the project's
registry: the rebuild registers into its temporary store, which is deleted with the worktree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from flows.data import dvc


class ReproduceError(RuntimeError):
    """The version cannot be rebuilt as recorded (no commit, a config or data hash that differs); the message says
    which record and what was found."""


@dataclass
class Reproduction:
    name: str
    version: str
    commit: str
    candidate: str
    verdict: str  # "identical artifact", "identical test predictions" or "differs"
    recorded_sha256: str
    rebuilt_sha256: str | None
    rebuilt_candidate: str | None = None
    first_differing_stage: str | None = None
    metric_deltas: dict[str, float] = field(default_factory=dict)
    details: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return self.verdict != "differs"

    def as_json(self) -> dict:
        return asdict(self) | {"identical": self.identical}


def record(name: str, ref: str):
    """The version (by number or alias, completely registered) and its parent run."""
    from flows.tracking.registry import complete_version
    from flows.tracking.tracker import client

    mv = complete_version(client(), name, ref)
    for tag in ("git_commit", "params_hash", "dataset_hash", "sha256", "candidate"):
        if not mv.tags.get(tag) or mv.tags[tag] == "unknown":
            raise ReproduceError(f"{name} version {mv.version} records no {tag}: it cannot be rebuilt")
    return mv, client().get_run(mv.run_id)


def reproduce(root: Path, ref: str, log=print) -> Reproduction:
    from flows.tracking.registry import parse_ref

    name, wanted = parse_ref(ref)
    mv, parent = record(name, wanted)
    tags, version = mv.tags, str(mv.version)
    commit = tags["git_commit"]
    overrides = json.loads(parent.data.tags.get("overrides", "{}"))
    dataset = parent.data.params.get("data.name", name)
    log(f"{name} version {version}: {tags['candidate']} of commit {commit[:12]}, data {tags['dataset_hash']}")
    with worktree(root, commit) as (wt, tmp):
        link_data(root, wt, dataset, overrides)
        env = rebuild_env(wt, tmp, root)
        check_config(wt, env, dataset, overrides, tags["params_hash"], name, version)
        log(f"data: `dvc repro prepare@{dataset}` at {commit[:12]} (the project's DVC cache shared)")
        dvc.repro(wt, f"prepare@{dataset}", log=lambda line: log(f"  {line}"))
        rebuilt_hash = dvc.dataset_hash(wt, dataset)
        if rebuilt_hash != tags["dataset_hash"]:
            raise ReproduceError(
                f"{name} version {version} records dataset_hash {tags['dataset_hash']}, but the data of commit "
                f"{commit[:12]} prepares to {rebuilt_hash}: the data it was trained on is not what that commit makes"
            )
        log(f"data hash {rebuilt_hash} as recorded; rebuilding every candidate (`edgekd run --force` of the commit)")
        summary = run_pipeline(wt, tmp, env, dataset, overrides, log)
        return compare(name, version, mv, parent, summary, wt, dataset, env)


@contextmanager
def worktree(root: Path, commit: str):
    """A detached git worktree of `commit` in a temporary folder (and the folder), removed afterwards."""
    if not (root / ".git").exists():
        raise ReproduceError(f"{root} is not a git repository: a version is rebuilt from the commit it records")
    if subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=root, capture_output=True).returncode:
        raise ReproduceError(f"commit {commit} is not in {root}'s git history (fetch it first)")
    tmp = Path(tempfile.mkdtemp(prefix="edgekd-reproduce-"))
    wt = tmp / "project"
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(wt), commit], cwd=root, check=True)
    try:
        yield wt, tmp
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(wt)], cwd=root, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(["git", "worktree", "prune"], cwd=root, capture_output=True)


def link_data(root: Path, wt: Path, dataset: str, overrides: dict) -> None:
    """The worktree reads the dataset's source where the project does (its root, relative to the project: data/
    external, ../shared/datasets) and uses the project's DVC cache, so that nothing is copied or downloaded."""
    import yaml

    params = yaml.safe_load((wt / "params.yaml").read_text())
    source = overrides.get(f"datasets.{dataset}.root") or params["datasets"][dataset]["root"]
    target = (wt / source).resolve() if not Path(source).is_absolute() else Path(source)
    original = (root / source).resolve()
    if not target.exists() and original.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(original, target_is_directory=True)
    dvc.run(wt, ["config", "--local", "cache.dir", str(dvc.cache_dir(root))], timeout=60)


def rebuild_env(wt: Path, tmp: Path, root: Path) -> dict[str, str]:
    """The rebuild's environment: the commit's code, a temporary MLflow store and Prefect home."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "EDGEKD_REAPER"))}
    return keep | {
        "PYTHONPATH": str(wt),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
        "PREFECT_HOME": str(tmp / "prefect"),
    }


def check_config(wt: Path, env: dict, dataset: str, overrides: dict, recorded: str, name: str, version: str) -> None:
    """The commit's params.yaml with the run's overrides, read by the commit's own code, must give the recorded
    effective config."""
    code = (
        "import hashlib, json, sys; from pathlib import Path; from components.config import load_config; "
        "cfg = load_config(Path('params.yaml'), sys.argv[1], json.loads(sys.argv[2])).model_dump(mode='json'); "
        "print(hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16])"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, dataset, json.dumps(overrides)], cwd=wt, env=env, capture_output=True, text=True
    )
    if res.returncode:
        raise ReproduceError(f"the commit's params.yaml cannot be read by its own code:\n{res.stderr[-2000:]}")
    if (got := res.stdout.strip()) != recorded:
        raise ReproduceError(
            f"{name} version {version} records params_hash {recorded}, but the commit's params.yaml with the "
            f"run's overrides {overrides} gives {got}: params.yaml had uncommitted changes when it was trained"
        )


def run_pipeline(wt: Path, tmp: Path, env: dict, dataset: str, overrides: dict, log) -> Path:
    """The commit's own `edgekd run --force`, its output relayed; returns its summary JSON file."""
    out = tmp / "rebuilt.json"
    sets = [a for k, v in overrides.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    cmd = [sys.executable, "-m", "flows.cli", "--project-dir", str(wt), "run", "--force", "--dataset", dataset]
    proc = subprocess.Popen(
        [*cmd, *sets, "--json", str(out)], cwd=wt, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    tail: list[str] = []
    for line in proc.stdout:
        log(f"  | {line.rstrip()}")
        tail = (tail + [line])[-40:]
    if proc.wait() not in (0, 2) or not out.exists():  # 2: nothing passed the gate, still a summary
        raise ReproduceError(f"the rebuild's `edgekd run` exited with {proc.returncode}:\n{''.join(tail)}")
    return out


def compare(name, version, mv, parent, summary_file: Path, wt: Path, dataset: str, env: dict) -> Reproduction:
    summary, tags = json.loads(summary_file.read_text()), mv.tags
    cand = tags["candidate"]
    rebuilt = summary["candidates"].get(cand, {})
    out = Reproduction(
        name,
        version,
        tags["git_commit"],
        cand,
        "differs",
        tags["sha256"],
        rebuilt.get("sha256"),
        rebuilt_candidate=(summary.get("registered") or {}).get("candidate"),
    )
    for split, prefix in (("val", "val."), ("test", "metric.")):  # what the version recorded at registration
        for k, v in (rebuilt.get(split) or {}).items():
            if (recorded := tags.get(prefix + k)) is not None and v != float(recorded):
                out.metric_deltas[f"{split}.{k}"] = v - float(recorded)
    if out.rebuilt_sha256 == out.recorded_sha256:
        out.verdict = "identical artifact"
        return out
    same, detail = same_predictions(name, version, wt, dataset, env, rebuilt)
    out.details.append(detail)
    if same:
        out.verdict = "identical test predictions"
        return out
    out.first_differing_stage = first_differing_stage(parent, env)
    return out


@contextmanager
def store(uri: str):
    """MLflow's client on another tracking store (the rebuild's) for the block."""
    before = os.environ["MLFLOW_TRACKING_URI"]
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        yield
    finally:
        os.environ["MLFLOW_TRACKING_URI"] = before


def same_predictions(name: str, version: str, wt: Path, dataset: str, env: dict, rebuilt: dict) -> tuple[bool, str]:
    """Whether the recorded and the rebuilt artifact of the candidate predict the same class for every row of the
    test split, each through its own runtime; and what was found."""
    from components.formats import runtime
    from flows.data import layout
    from flows.tracking.registry import fetch_verified, version_with_sha256

    x = layout.load_splits(wt, dataset)["test"].x
    with fetch_verified(name, version) as (recorded, _, _):
        a = runtime.predict(recorded, x).argmax(axis=1)
    with store(env["MLFLOW_TRACKING_URI"]):
        got = version_with_sha256(name, rebuilt.get("sha256") or "")
        if got is None:
            return False, "the rebuild did not register this candidate: no artifact to compare predictions with"
        with fetch_verified(name, got) as (again, _, _):
            b = runtime.predict(again, x).argmax(axis=1)
    differ = int(np.sum(a != b))
    return differ == 0, f"test predictions: {differ} of {len(a)} rows differ (sha256 differs)"


def first_differing_stage(parent, env: dict) -> str | None:
    """The first stage, in the order the run ran them, whose val metrics differ between the recorded run and the
    rebuild; None when every stage's match (the difference is then in measuring or selection)."""
    from flows.tracking.tracker import client

    def stages(experiment: str, parent_id: str | None = None) -> list[tuple[str, dict]]:
        c = client()
        exp = c.get_experiment_by_name(experiment).experiment_id
        if parent_id is None:  # the rebuild's store holds its one pipeline run
            parent_id = c.search_runs([exp], "tags.stage = 'pipeline'")[0].info.run_id
        runs = c.search_runs([exp], f"tags.mlflow.parentRunId = '{parent_id}'", order_by=["attributes.start_time ASC"])
        return [
            (r.data.tags.get("stage", "?"), {k: v for k, v in r.data.metrics.items() if k.startswith("val.")})
            for r in runs
        ]

    experiment = client().get_experiment(parent.info.experiment_id).name
    before = dict(stages(experiment, parent.info.run_id))
    with store(env["MLFLOW_TRACKING_URI"]):
        after = stages(experiment)
    for stage, metrics in after:
        if stage in before and before[stage] != metrics:
            return stage
    return None
