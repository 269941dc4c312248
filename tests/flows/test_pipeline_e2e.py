"""The real flow, end to end, on a small config: real Prefect (test harness), DVC, GX, MLflow (SQLite), ORT."""

import contextlib
import html
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from tests.conftest import require

pytestmark = pytest.mark.e2e

CANDIDATES = (
    "teacher_fp32",
    "plain_fp32",
    "plain_pruned_fp32",
    "plain_pruned_int8_static",
    "plain_pruned_int8_dynamic",
    "kd_fp32",
    "kd_pruned_fp32",
    "kd_pruned_int8_static",
    "kd_pruned_int8_dynamic",
    "plain_pruned_int8_qat",
    "kd_pruned_int8_qat",
    "classic_fp32",
)
QAT = {"qat_threshold": -1.0, "qat_epochs": 1, "calibration_samples": 64}  # every static INT8 "loses too much"


@pytest.fixture(scope="module")
def write_params(small_params):
    def write(root: Path, **sections) -> None:
        """A complete params.yaml (as shipped) with the small test settings and `sections` on top."""
        params = small_params()
        for name, values in sections.items():
            if name == "data":
                params["datasets"]["digits"] |= values
            else:
                params[name] = params.get(name, {}) | values
        (root / "params.yaml").write_text(yaml.safe_dump(params))

    return write


@pytest.fixture(scope="module")
def project(tmp_path_factory, pipeline_project, small_params, repo):
    """A fresh project with the shipped params.yaml, shrunk for tests."""
    root = tmp_path_factory.mktemp("project")
    with pipeline_project(root, small_params(quantize=QAT), EDGEKD_USER="e2e-tester"):
        git(root, "init", "-q")  # a git repository, so that versions record a commit `reproduce` can rebuild
        shutil.copy(repo / ".gitignore", root)
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", "project")
        yield root


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def run(root: Path):
    from flows.pipelines.run import pipeline

    return pipeline(project_dir=str(root))


def client():
    from mlflow import MlflowClient

    return MlflowClient()


def runs_of(parent_id: str) -> dict:
    c = client()
    parent = c.get_run(parent_id)
    children = c.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    return {r.data.tags["stage"]: r for r in children}


@pytest.fixture(scope="module")
def first(project):
    return run(project)


@pytest.fixture(scope="module")
def second(project, first, cli):
    """Version 1 promoted to production, then a run with another training seed: new artifacts, a new version."""
    from flows.pipelines.run import pipeline

    assert cli(project, "promote", first.version) == 0
    return pipeline(project_dir=str(project), overrides={"train.seed": 1})


def test_first_run_tracks_every_stage_and_registers_staging(project, first, tmp_path):
    c = client()
    parent = c.get_run(first.parent_run_id)
    assert parent.info.status == "FINISHED"
    lineage = {"dataset_hash", "git_commit", "params_hash", "prefect_flow_run_id"}
    assert lineage <= set(parent.data.tags) and parent.data.tags["prefect_flow_run_id"] != "none"
    children = runs_of(first.parent_run_id)
    stages = {
        "validation",
        "teacher",
        "teacher_member",
        "student_plain",
        "student_kd",
        "prune",
        "quantize",
        "qat",
        "classic",
        "benchmark",
        "gate",
    }
    cands = {f"candidate:{n}" for n in CANDIDATES}
    assert stages | cands == set(children)
    assert all(r.info.status == "FINISHED" for r in children.values())
    # per-epoch step metrics of the teacher
    hist = c.get_metric_history(children["teacher_member"].info.run_id, "val_accuracy")
    assert [m.step for m in hist] == list(range(1, len(hist) + 1)) and len(hist) >= 2
    for name in cands:
        assert {
            "val.accuracy",
            "test.accuracy",
            "test.macro_f1",
            "test.precision.3",
            "val.recall.3",
            "p50_ms",
            "p50_lo_ms",
            "p50_hi_ms",
            "p95_ms",
            "p95_lo_ms",
            "p95_hi_ms",
            "p99_ms",
            "throughput_sps",
            "size_bytes",
            "peak_mem_mb",
        } <= set(children[name].data.metrics)
        arts = {a.path for a in c.list_artifacts(children[name].info.run_id)}
        assert {f"confusion_{name[len('candidate:') :]}.png", "confusion_matrix.json"} <= arts
    assert {"kd_gain.val", "kd_gain.test"} <= set(parent.data.metrics)
    arts = {a.path for a in c.list_artifacts(first.parent_run_id)}
    assert {"accuracy_vs_p95.png", "benchmark.csv", "gate_report.json", "effective_config.json"} <= arts
    # the prepared splits as dataset inputs: DVC's md5 of each split's file, as the locked version's manifest has it
    h = parent.data.tags["dataset_hash"]
    manifest = {
        f["relpath"]: f["md5"]
        for f in json.loads((project / ".dvc" / "cache" / "files" / "md5" / h[:2] / h[2:]).read_text())
    }
    counts = json.loads((project / "data" / "prepared" / "digits" / "summary.json").read_text())["counts"]
    inputs = {i.dataset.name: i for i in parent.inputs.dataset_inputs}
    assert set(inputs) == {"digits-train", "digits-val", "digits-test"}
    for split in ("train", "val", "test"):
        i = inputs[f"digits-{split}"]
        assert [(t.key, t.value) for t in i.tags] == [("mlflow.data.context", split)]
        assert i.dataset.digest == manifest[f"{split}.npz"]
        assert json.loads(i.dataset.source) == {"uri": f"data/prepared/digits/{split}.npz"}
        assert json.loads(i.dataset.profile)["targets_size"] == counts[split]
    # the registered version: staging alias, lineage tags, and an ONNX file that scores as logged
    mv = c.get_model_version_by_alias("digits", "staging")
    assert str(mv.version) == first.version
    assert lineage | {
        "sha256",
        "metric.accuracy",
        "metric.macro_f1",
        "metric.p95_ms",
        "metric.p95_lo_ms",
        "metric.p95_hi_ms",
        "metric.size_bytes",
        "val.accuracy",
        "teacher.accuracy",
        "teacher_val.accuracy",
        "plain_val.accuracy",
    } <= set(mv.tags)
    # chosen on val: it scores at least the plain student there
    assert float(mv.tags["val.accuracy"]) >= float(mv.tags["plain_val.accuracy"])
    from components.formats import runtime
    from flows.data.layout import load_splits
    from flows.tracking.registry import model_file

    onnx_file = model_file(c, "digits", mv.version, tmp_path)
    files = {str(p.relative_to(onnx_file.parent)) for p in onnx_file.parent.rglob("*")}
    assert {
        "model.onnx",
        "MLmodel",
        "input_example.json",
        "extra_files/benchmark.csv",
        "extra_files/gate_report.json",
        "extra_files/preprocess.json",
    } <= files
    test = load_splits(project, "digits")["test"]
    assert abs(runtime.accuracy(onnx_file, test.x, test.y) - float(mv.tags["metric.accuracy"])) <= 0.005
    assert "signature" in (onnx_file.parent / "MLmodel").read_text()


def flow_run_artifacts(outcome: dict) -> dict:
    """The Prefect artifacts of a pipeline run's flow run, by key."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    flow_run_id = client().get_run(outcome.parent_run_id).data.tags["prefect_flow_run_id"]
    with get_client(sync_client=True) as c:
        found = c.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in found}


def test_a_quantized_candidate_is_refused_exactly_when_it_is_not_measurably_faster_than_its_fp32_source(first):
    from components.rounds import compare

    c = first.candidates
    for student in ("plain", "kd"):
        source = c[f"{student}_pruned_fp32"].latency
        for mode in ("static", "dynamic"):
            name = f"{student}_pruned_int8_{mode}"
            lat = c[name].latency
            refused = [r for r in first.decisions[name] if r.startswith("INT8 ") and "FP32 on this device" in r]
            paired = compare(lat.p95_series, source.p95_series)  # round by round, in the same measurement
            assert bool(refused) == (paired.verdict >= 0), (name, paired, lat, source)


def test_every_candidate_has_latency_intervals_and_the_run_states_its_resolution(first):
    cands = first.json["candidates"]
    for name, c in cands.items():
        for p in ("p50", "p95"):
            assert c[p]["lo"] <= c[p]["value"] <= c[p]["hi"] and c[p]["value"] == c[f"{p}_ms"], (name, p, c[p])
    res = first.json["timing_resolution"]
    assert {"plain_fp32", "kd_fp32"} in [set(g) for g in res["same_graph"]]  # same architecture, other weights
    assert res["spread"] >= 0 and res["rounds"] == 10 + res["added"] and res["added"] in (0, 10, 20)
    # one runtime call with no model in it costs less than any model's
    assert 0 < res["floor_p50"]["value"] < min(c["p50"]["value"] for c in cands.values())
    assert f"Timing resolution: medians of {res['rounds']} interleaved rounds" in first.summary


def test_the_summary_gives_each_training_its_time_and_the_teacher_views_pool(first):
    t, pools = first.json["training"], first.json["teacher_views"]
    stages = sorted(x["stage"] for x in t["trainings"])
    assert stages == ["prune", "prune", "student_kd", "student_plain", "teacher_member"]
    assert all(x["epochs"] >= 1 and 0 < x["epoch_s"] < x["seconds"] for x in t["trainings"])
    # in this process the trainings ran one after another: none overlaps another, the wall time is their sum
    assert t["wall_s"] == pytest.approx(t["sum_s"], rel=1e-3) and t["wall_over_sum"] == pytest.approx(1.0, abs=1e-3)
    # the KD student (dkd) trained on a pool of 16 cached views of every training sample, built in this run
    (pool,) = pools
    assert pool["views"] == 16 and pool["cached_views"] == 0 and pool["sum_s"] > 0
    assert pool["logits_mib"] == pytest.approx(16 * pool["samples"] * 10 * 4 / 2**20, abs=0.01)


def test_qat_and_classical_candidates_are_measured_and_gated_like_the_others(first):
    """With quantize.qat_threshold below any loss, each pruned student gets a QAT candidate: static INT8 of weights
    fine-tuned with INT8 simulated, judged like an INT8 against its FP32 source; the classical baseline is a
    candidate with val, test, size and latency."""
    for s in ("plain", "kd"):
        qat, static = first.candidates[f"{s}_pruned_int8_qat"], first.candidates[f"{s}_pruned_int8_static"]
        assert qat.artifact.sha256 != static.artifact.sha256  # other weights, the same recipe after them
        assert qat.val.accuracy > 0.5 and qat.latency.p95_ms > 0
        speed = [r for r in first.decisions[f"{s}_pruned_int8_qat"] if "FP32 on this device" in r]
        assert all(r.startswith("INT8 (QAT) ") for r in speed)
    classic = first.candidates["classic_fp32"]
    assert classic.val.accuracy > 0.9 and classic.test.accuracy > 0.9  # an SVM or logistic regression on digits
    assert classic.artifact.size_bytes > 0 and classic.latency.p50_ms > 0


def test_gate_report_and_candidate_table_are_artifacts_of_the_flow_run(first):
    arts = flow_run_artifacts(first)
    assert set(arts) == {"gate-digits", "candidates-digits"}
    gate, table = arts["gate-digits"], arts["candidates-digits"]
    assert (gate.type, table.type) == ("markdown", "table")
    assert gate.data.startswith(
        f"# Gate: digits\n\nRegistered digits version {first.version} ({first.selected}, "
        "chosen on val accuracy) with alias 'staging'.\n"
    )
    for name, reasons in first.decisions.items():
        assert f"\n- {name}: {'fail: ' + '; '.join(reasons) if reasons else 'pass'}\n" in gate.data
    assert f"pipeline run `{first.parent_run_id}`" in gate.data
    rows = {r["candidate"]: r for r in json.loads(table.data)}
    assert set(rows) == set(CANDIDATES)
    for name, m in first.candidates.items():
        assert rows[name]["val_score"] == pytest.approx(m.val.accuracy, abs=5e-5)
        assert rows[name]["test_score"] == pytest.approx(m.test.accuracy, abs=5e-5)
        assert rows[name]["gate"] == ("fail" if first.decisions[name] else "pass")


def page_text(dom: str) -> str:
    """What a page shows: its DOM without scripts, styles and tags, whitespace collapsed."""
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", dom)).split())


def test_the_uis_show_the_dataset_inputs_and_the_artifacts(project, first, tmp_path, free_port):
    """The MLflow UI on the project's store and the Prefect UI on the database the flow run used, looked at in
    headless Chromium (screenshots in tmp_path): the parent run's row lists its three dataset inputs, the flow run
    lists both artifacts, and the gate artifact's page renders the report."""
    chromium = shutil.which("chromium")
    require(chromium is not None, "chromium is not installed (Debian's package; .ci/run installs it)")
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

    from flows.infra.processes import healthy, stop_tree

    run = client().get_run(first.parent_run_id)
    gate_id = flow_run_artifacts(first)["gate-digits"].id
    mlflow_port, prefect_port = free_port(), free_port()
    mlflow_url, prefect_url = f"http://127.0.0.1:{mlflow_port}", f"http://127.0.0.1:{prefect_port}"
    environ = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    commands = {
        "mlflow": (
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                os.environ["MLFLOW_TRACKING_URI"],
                "--host",
                "127.0.0.1",
                "--port",
                str(mlflow_port),
                "--workers",
                "1",
            ],
            {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        ),
        # --port does not reach the UI's idea of where the API is: PREFECT_UI_API_URL does
        "prefect": (
            [
                sys.executable,
                "-m",
                "prefect",
                "server",
                "start",
                "--no-services",
                "--host",
                "127.0.0.1",
                "--port",
                str(prefect_port),
            ],
            {
                "PREFECT_SERVER_DATABASE_CONNECTION_URL": PREFECT_SERVER_DATABASE_CONNECTION_URL.value(),
                "PREFECT_UI_API_URL": f"{prefect_url}/api",
            },
        ),
    }
    servers = {}
    try:
        for name, (cmd, extra) in commands.items():
            with open(tmp_path / f"{name}.log", "wb") as log:
                servers[name] = subprocess.Popen(cmd, env=environ | extra, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        while not (healthy(mlflow_url) and healthy(f"{prefect_url}/api")):
            dead = [n for n, p in servers.items() if p.poll() is not None]
            assert not dead and time.monotonic() < deadline, "\n".join(
                (tmp_path / f"{n}.log").read_text()[-3000:] for n in servers
            )
            time.sleep(1)
        digests = {i.dataset.name: i.dataset.digest for i in run.inputs.dataset_inputs}
        datasets = [f"digits-{s} ({digests[f'digits-{s}']}) {s}" for s in ("train", "val", "test")]  # with context
        search = urllib.parse.quote(f"attributes.run_id = '{run.info.run_id}'")
        pages = {
            "mlflow-run-datasets": (
                f"{mlflow_url}/#/experiments/{run.info.experiment_id}/runs?searchFilter={search}",
                datasets,
            ),
            "prefect-flow-run-artifacts": (
                f"{prefect_url}/v2/runs/flow-run/{run.data.tags['prefect_flow_run_id']}?tab=Artifacts",
                ["gate-digits", "candidates-digits"],
            ),
            "prefect-gate-artifact": (
                f"{prefect_url}/v2/artifacts/artifact/{gate_id}",
                ["Gate: digits", f"Registered digits version {first.version}"]
                + [f"{n}: {'fail' if r else 'pass'}" for n, r in first.decisions.items()],
            ),
        }
        for name, (url, expected) in pages.items():
            shot = tmp_path / f"{name}.png"
            proc = subprocess.run(
                [
                    chromium,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--window-size=1600,1000",
                    "--virtual-time-budget=10000",
                    f"--screenshot={shot}",
                    "--dump-dom",
                    url,
                ],
                capture_output=True,
                text=True,
                timeout=120,
            )
            text = page_text(proc.stdout)
            assert shot.is_file(), proc.stderr[-2000:]
            assert [e for e in expected if e not in text] == [], f"{url} (screenshot {shot}) shows: {text[:3000]}"
    finally:
        for p in servers.values():
            stop_tree(p, grace=10)


@pytest.fixture(scope="module")
def rerun(project, first, cli):
    """`edgekd run` with nothing changed since `first`, which ran the flow directly and so left no record of a
    command to answer from: a whole run from the cache, which leaves that record. Its exit code, what it printed, its
    JSON summary and its MLflow parent run (one run read by the two tests below)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli(project, "run", "--json", str(project / "rerun.json"))
    c = client()
    experiment = c.get_experiment_by_name("digits").experiment_id
    [parent] = c.search_runs(
        [experiment], "tags.stage = 'pipeline'", order_by=["attributes.start_time DESC"], max_results=1
    )
    summary = json.loads((project / "rerun.json").read_text())
    return SimpleNamespace(code=code, out=out.getvalue(), json=summary, parent_run_id=parent.info.run_id)


def test_rerun_skips_dvc_and_reuses_cached_training(project, first, rerun):
    assert rerun.code == 0
    children = runs_of(rerun.parent_run_id)
    assert children["validation"].data.tags["dvc_stages_ran"] == "none (up to date)"
    for stage in ("teacher_member", "student_plain", "student_kd", "prune", "quantize"):
        assert children[stage].data.tags["cached"] == "True", stage
    # the same artifact again: no new version, the one holding it is named
    assert rerun.json["registered"]["version"] == first.version and rerun.json["registered"]["new_version"] is False
    assert len(client().search_model_versions("name='digits'")) == int(first.version)
    assert "already holds this artifact" in rerun.out


def test_cli_rerun_with_nothing_changed_answers_from_the_record(project, first, rerun, capsys, cli):
    c = client()
    experiment = c.get_experiment_by_name("digits").experiment_id
    assert rerun.code == 0  # a full run (cached stages), which leaves the record
    capsys.readouterr()
    runs, versions = len(c.search_runs([experiment])), len(c.search_model_versions("name='digits'"))
    t0 = time.monotonic()
    assert cli(project, "run", "--json", str(project / "again.json")) == 0
    took = time.monotonic() - t0
    out = capsys.readouterr().out
    assert "nothing changed since run" in out and out.count("Candidates:") == 1
    assert json.loads((project / "again.json").read_text())["registered"]["version"] == first.version
    assert len(c.search_runs([experiment])) == runs and len(c.search_model_versions("name='digits'")) == versions
    print(f"\nno-change re-run answered in {took:.1f} s")


def test_strict_policy_set_from_the_cli_registers_nothing_and_names_each_reason(project, first, capsys, cli, small):
    before = client().search_model_versions("name='digits'")
    assert cli(project, "run", "--set", "gate.max_size_kb=0.001") == 2
    out = capsys.readouterr().out
    assert "No candidate passed the gate; nothing was registered." in out
    for name in CANDIDATES:
        assert f"{name} failed: size" in out
    assert len(client().search_model_versions("name='digits'")) == len(before)
    latest = client().search_runs(
        [client().get_experiment_by_name("digits").experiment_id],
        "tags.stage LIKE 'candidate:%'",
        order_by=["start_time DESC"],
        max_results=5,
    )
    assert all(r.data.tags["gate_passed"] == "False" and "max_size_kb" in r.data.tags["gate_reasons"] for r in latest)
    # the override is part of the logged effective config, and the run's name says what and when
    parent = client().get_run(latest[0].data.tags["mlflow.parentRunId"])
    config = json.loads(Path(client().download_artifacts(parent.info.run_id, "effective_config.json")).read_text())
    assert config["gate"]["max_size_kb"] == 0.001 and config["gate"]["min_accuracy"] == small["gate"]["min_accuracy"]
    # `train.precision: auto` is logged as what this machine trained in
    assert config["train"]["precision"] == parent.data.params["train.precision"] in ("fp32", "bf16")
    assert json.loads(parent.data.tags["overrides"]) == {"gate.max_size_kb": 0.001}
    assert re.fullmatch(r"digits · pipeline · \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", parent.info.run_name)
    assert latest[0].info.run_name.startswith("digits · candidate:")


def test_promote_then_rollback_moves_aliases_with_audit_tags(project, first, second, capsys, cli):
    c = client()
    v1, v2 = first.version, second.version
    assert int(v2) == int(v1) + 1 and second.json["registered"]["new_version"] is True
    assert str(c.get_model_version_by_alias("digits", "production").version) == v1
    assert cli(project, "promote", v2) == 0
    assert str(c.get_model_version_by_alias("digits", "production").version) == v2
    assert cli(project, "rollback") == 0
    assert str(c.get_model_version_by_alias("digits", "production").version) == v1
    audits = {
        v: {k: yaml.safe_load(t) for k, t in c.get_model_version("digits", v).tags.items() if k.startswith("audit.")}
        for v in (v1, v2)
    }
    rollback = [a for a in audits[v2].values() if a["action"] == "rollback"]
    assert rollback and rollback[0] | {"when": None} == {
        "action": "rollback",
        "who": "e2e-tester",
        "when": None,
        "from": v2,
        "to": v1,
    }
    assert any(a["action"] == "promote" and a["from"] == v1 and a["to"] == v2 for a in audits[v1].values())
    assert cli(project, "rollback") == 4  # v1 was the first production version: nothing earlier
    assert "nothing to roll back to" in capsys.readouterr().err


def _sections(card: str) -> dict[str, str]:
    parts = re.split(r"^## (.+)$", card, flags=re.M)
    return {title: body.strip() for title, body in zip(parts[1::2], parts[2::2])}


def test_model_card_holds_every_item_and_the_production_version_of_its_time(project, first, second, tmp_path):
    from flows.tracking.registry import fit_description, model_file

    c = client()
    production, outcome = first.version, second  # version 1 held production when version 2 was registered
    mv = c.get_model_version("digits", outcome.version)
    card = (model_file(c, "digits", mv.version, tmp_path).parent / "extra_files" / "model_card.md").read_text()
    assert mv.description == fit_description(card) and len(mv.description) <= 5000  # what PostgreSQL holds
    import torch

    assert f"({torch.backends.cpu.get_cpu_capability()} kernels) on 1 CPU thread(s)" in card  # what rebuilds need
    assert card.startswith(f"# Model card: digits / {outcome.selected}\n")
    s = _sections(card)
    assert list(s) == [
        "Intended use",
        "Data",
        "Metrics (validation and test splits, measured through each model's runtime)",
        "Benchmark",
        "Gate",
        "Lineage",
    ]
    assert "Classifies image inputs into 0, 1," in s["Intended use"]
    assert "Format: ONNX (`model.onnx`)" in s["Intended use"]
    assert f"`{mv.tags['dataset_hash']}`" in s["Data"] and "Validation (Great Expectations): passed" in s["Data"]
    metrics = s["Metrics (validation and test splits, measured through each model's runtime)"]
    rows = {
        r.split("|")[1].strip(): r.split("|") for r in metrics.splitlines() if r.startswith("| ") and "---" not in r
    }
    assert set(CANDIDATES) <= set(rows)
    assert "**registered**" in rows[outcome.selected][2] and "teacher" in rows["teacher_fp32"][2]
    # val and test side by side
    assert [c.strip() for c in rows["model"][3:5]] == ["val accuracy", "test accuracy"]
    assert rows[outcome.selected][3].strip() == f"{float(mv.tags['val.accuracy']):.4f}"
    assert rows[outcome.selected][4].strip() == f"{float(mv.tags['metric.accuracy']):.4f}"
    assert "KD gain (" in metrics and "val " in metrics and "points, test " in metrics
    assert re.search(
        r"Device profile: ONNX Runtime [\d.]+ CPU execution provider, 1 intra-op thread\(s\), batch 1, "
        r"10 interleaved rounds of 5 warm-up \+ 50 timed runs",
        s["Benchmark"],
    )
    assert "- **host** (the gate used these numbers): Timing resolution: medians of " in s["Benchmark"]
    assert sum(line.startswith("| ") and "_pruned_" in line for line in s["Benchmark"].splitlines()) == sum(
        "_pruned_" in c for c in CANDIDATES
    )
    assert f"Production at the time: version {production} (val accuracy " in s["Gate"]
    assert all(f"- {n}: " in s["Gate"] for n in CANDIDATES)
    assert f"`model.onnx` sha256: `{mv.tags['sha256']}`" in s["Lineage"]


@pytest.mark.parametrize("corruption", ["nan_pixel", "unknown_label"])
def test_corrupted_sample_fails_validation_and_leaves_registry_unchanged(
    project, first, corruption, capsys, cli, write_params
):
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = d.images.astype(np.float32), d.target.copy()
    if corruption == "nan_pixel":
        x[100, 3, 3] = np.nan
    else:
        y[100] = 11
    np.savez(project / "data" / "external" / "bad.npz", x=x, y=y, scale=np.float32(16))
    c = client()
    versions = {v.version for v in c.search_model_versions("name='digits'")}
    aliases = c.get_registered_model("digits").aliases
    write_params(project, data={"source": "bad.npz"})
    try:
        assert cli(project, "run") == 3
    finally:
        write_params(project)
    err = capsys.readouterr().err
    column = "non_finite" if corruption == "nan_pixel" else "label"
    assert f"expect_column_values_to_be_in_set({column}): 1 of 1797 rows unexpected" in err
    assert "row 100" in err
    assert {v.version for v in c.search_model_versions("name='digits'")} == versions
    assert c.get_registered_model("digits").aliases == aliases
    exp = c.get_experiment_by_name("digits").experiment_id
    last = c.search_runs([exp], "tags.stage = 'validation'", order_by=["start_time DESC"], max_results=1)[0]
    assert last.info.status == "FAILED" and last.data.tags["validation_success"] == "False"
    parent = c.get_run(last.data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FAILED"
    assert not runs_of(parent.info.run_id).keys() - {"validation"}  # nothing trained


def test_predict_raw_inputs_in_a_fresh_process_matches_pipeline_ort(project, first, tmp_path):
    from PIL import Image

    from components.formats import onnx_rt
    from flows.data.layout import load_splits
    from flows.tracking.registry import model_file

    test = load_splits(project, "digits")["test"]
    files = []
    for i in range(20):  # raw digits are 0..16 intensities; the prepared ones are those / 16
        f = tmp_path / f"{i}.png"
        Image.fromarray(np.rint(test.x[i, 0] * 16).astype(np.uint8)).save(f)
        files.append(str(f))
    mv = client().get_model_version_by_alias("digits", "staging")
    expected = onnx_rt.predict(model_file(client(), "digits", str(mv.version), tmp_path / "model"), test.x[:20]).argmax(
        1
    )
    code = (
        "import sys; from flows.cli import main; rc = main(sys.argv[1:]); "
        "assert 'torch' not in sys.modules, 'predict imported torch'; sys.exit(rc)"
    )
    tmp = tmp_path / "tmp"  # predict's own temporary folder: the download lives there only while it predicts
    tmp.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", code, "--project-dir", str(project), "predict", "digits", *files],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, TMPDIR=str(tmp)),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    labels = [line.split("\t")[0] for line in proc.stdout.strip().splitlines()]
    assert labels == [str(c) for c in expected]
    # ONNX Runtime keeps one `.ses` file there (the same name every session); the download's folder must be gone
    assert not [p for p in tmp.iterdir() if p.name != ".ses"], "predict left its download behind"


def test_predict_refuses_a_tampered_artifact(project, first, capsys, cli, tmp_path):
    from flows.tracking.registry import model_file

    c = client()
    mv = c.get_model_version_by_alias("digits", "staging")
    # the registry's own copy (local store): flip one byte in place
    src = Path(c.get_model_version("digits", str(mv.version)).source)
    stored = next(Path(project / "mlruns").rglob(f"{src.name}/artifacts/model.onnx"), None) if src.name else None
    assert stored is not None and stored.is_file()
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    try:
        assert cli(project, "predict", "digits", "whatever.png") == 4
        assert "sha256" in capsys.readouterr().err
    finally:
        data[len(data) // 2] ^= 0xFF
        stored.write_bytes(bytes(data))
    assert model_file(c, "digits", str(mv.version), tmp_path).is_file()


def _png(path: Path, size: int = 8, value: int = 0) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, dtype=np.uint8)).save(path)


def _digit_folders(ext: Path, empty: str | None = None) -> None:
    """Class folders of real digits, 25 PNGs each; `empty` names a class whose folder holds nothing."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    for c in range(10):
        folder = ext / "folders" / str(c)
        folder.mkdir(parents=True, exist_ok=True)
        if str(c) != empty:
            for i in np.flatnonzero(d.target == c)[:25]:
                Image.fromarray((d.images[i] * 15).astype(np.uint8)).save(folder / f"{i}.png")


def _bad_table(ext: Path) -> None:
    (ext / "patients.csv").write_text("radius,texture,outcome\n14.1,20.3,benign\n20.6,29.3,malignant\n")


BAD_DATA = {  # case: (write the user's files, the dataset section, the message that must name the problem)
    "corrupt file": (
        lambda ext: (_digit_folders(ext), (ext / "folders" / "3" / "scan.png").write_bytes(b"\x89PNG..")),
        {"source": "folders"},
        r"folders/3/scan\.png: unreadable or corrupt image",
    ),
    "mixed image sizes": (
        lambda ext: (_digit_folders(ext), _png(ext / "folders" / "7" / "big.png", size=12)),
        {"source": "folders"},
        r"folders/7/big\.png: image size \(12, 12\) differs from \(8, 8\)",
    ),
    "empty class": (
        lambda ext: _digit_folders(ext, empty="4"),
        {"source": "folders"},
        r"\[raw_samples_per_class\].*examples \[\"class '4': 0\"\]",
    ),
    "missing label column": (
        _bad_table,
        {
            "kind": "tabular",
            "source": "patients.csv",
            "classes": ["benign", "malignant"],
            "options": {"label_column": "diagnosis"},
        },
        r"patients\.csv: label column 'diagnosis' not found",
    ),
    "path outside the root": (lambda ext: None, {"source": "../../../etc"}, r"outside the data root"),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_is_named_and_changes_neither_data_nor_registry(
    project, first, case, capsys, cli, write_params, data_state
):
    write, section, message = BAD_DATA[case]
    ext = project / "data" / "external"
    write(ext)
    c = client()
    versions = {v.version for v in c.search_model_versions("name='digits'")}
    aliases = c.get_registered_model("digits").aliases
    before = data_state(project)
    write_params(project, data=section)
    try:
        assert cli(project, "run") == 3
    finally:
        write_params(project)
        for p in ext.iterdir():
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    err = capsys.readouterr().err
    assert "nothing was trained or registered, data/ is unchanged" in err
    assert re.search(message, err), err
    assert data_state(project) == before
    assert {v.version for v in c.search_model_versions("name='digits'")} == versions
    assert c.get_registered_model("digits").aliases == aliases


def test_a_held_dvc_lock_gets_bounded_retries_and_a_clear_message(project, first, capsys, cli):
    from dvc.lock import make_lock

    lock = make_lock(str(project / ".dvc" / "tmp" / "lock"), tmp_dir=str(project / ".dvc" / "tmp"))
    lock.lock()  # another DVC process working in this repository
    try:
        started = time.monotonic()
        assert cli(project, "run") == 5
        took = time.monotonic() - started
    finally:
        lock.unlock()
    assert "the DVC repository is locked by another process; nothing was trained" in capsys.readouterr().err
    assert took < 120  # three attempts with 2 s and 8 s back-off, never a hang


def test_reproduce_rebuilds_the_recorded_commit_and_names_a_tampered_data_hash(project, first, capsys, cli):
    c = client()
    recorded = git(project, "rev-parse", "HEAD")
    # A later commit changes a training default: version 1 is still rebuilt from its own commit.
    stages = project / "components" / "config" / "stages.py"
    stages.write_text(
        stages.read_text().replace(
            'Field(200, ge=1, description="Maximum epochs of every student.")',
            'Field(150, ge=1, description="Maximum epochs of every student.")',
        )
    )
    git(project, "commit", "-q", "-am", "students train 150 epochs at most")
    registry = sorted((str(v.version), sorted(v.aliases)) for v in c.search_model_versions("name='digits'"))
    out = project / "reproduce.json"
    assert cli(project, "reproduce", "digits@1", "--json", str(out)) == 0, capsys.readouterr()
    got = json.loads(out.read_text())
    assert got["commit"] == recorded and got["identical"], got
    # the rebuild is `edgekd run` on Dask workers, side by side; `first` ran its trainings one after another here:
    # single-threaded, seeded trainings give the same bytes either way
    assert got["verdict"] == "identical artifact", got
    assert f"digits version 1 ({got['candidate']}, commit {recorded[:12]}): {got['verdict']}" in capsys.readouterr().out
    assert "edgekd-reproduce" not in git(project, "worktree", "list")  # removed afterwards

    # A tampered record: the data hash is named, exit 8, and nothing registered or moved.
    hash_ = c.get_model_version("digits", "1").tags["dataset_hash"]
    c.set_model_version_tag("digits", "1", "dataset_hash", "0" * 32)
    try:
        assert cli(project, "reproduce", "digits@1") == 8
    finally:
        c.set_model_version_tag("digits", "1", "dataset_hash", hash_)
    err = capsys.readouterr().err
    assert f"records dataset_hash {'0' * 32}, but the data of commit {recorded[:12]} prepares to {hash_}" in err, err
    assert sorted((str(v.version), sorted(v.aliases)) for v in c.search_model_versions("name='digits'")) == registry
