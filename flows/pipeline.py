"""The pipeline flow: six named phases over the stage tasks of flows/stages.py, tracked in MLflow.

validate (DVC + GX) -> train (teacher, plain student, KD variants; the best KD variant on val) -> compress (the
recipe table of components/recipes.py) -> measure (ORT on val and test, latency) -> gate (on val, against the
equal-budget plain student) -> publish (report, model card, registry, JSON summary)
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import mlflow.data
import yaml
from mlflow.data.sources import LocalArtifactDatasetSource
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from components import gate, kd
from components.config import PipelineConfig, load_config
from components.export import artifact_info, atomic_path
from components.recipes import Recipe, recipes
from components.teachers import TORCHSCRIPT_SUFFIXES, TeacherFileError, check_teacher, load_teacher_file
from components.validation import DataValidationError, ValidationReport
from flows import dvc_remote, dvc_stages, env, reporting, tracking
from flows.stages import (DataRef, DvcError, PruneSpec, QuantizeSpec, StudentSpec, TeacherRef, TeacherSpec, dvc_repro,
                          export_teacher, load_data, measure_candidate, ort_metrics, prune_student, quantize_int8,
                          train_student, train_teacher, validate_data)


@dataclass
class Run:
    """One pipeline run: its config, MLflow tracker and parent run, lineage, and what each phase hands on."""

    root: Path
    cfg: PipelineConfig
    tracker: tracking.Tracker
    parent: str
    lineage: dict
    validation: dict = field(default_factory=dict)

    @property
    def log(self):
        return get_run_logger()

    def section(self, name: str) -> dict:
        return self.cfg.model_dump(mode="json")[name]


def cached(task_fn, spec: dict) -> tuple[dict, bool]:
    """Run a cached task; if its cached files were deleted since, recompute instead of returning stale paths."""
    state = task_fn(spec, return_state=True)
    out = state.result()
    paths = [v["path"] for v in _walk(out) if isinstance(v, dict) and "path" in v]
    if not all(Path(p).is_file() for p in paths):
        state = task_fn.with_options(refresh_cache=True)(spec, return_state=True)
        out = state.result()
    return out, state.is_completed() and state.name == "Cached"


def _walk(obj):
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from _walk(v)


def tracked(run: Run, stage: str, task_fn, spec, tags: dict | None = None) -> dict:
    """A cached stage task inside its own nested MLflow run: cache hit, per-epoch history, val metrics."""
    with run.tracker.stage(stage, {"dataset_hash": run.lineage["dataset_hash"], **(tags or {})}) as rid:
        out, was_cached = cached(task_fn, spec.model_dump(mode="json") if hasattr(spec, "model_dump") else spec)
        run.tracker.tags(rid, {"cached": was_cached})
        run.tracker.history(rid, out.get("history", []))
        run.tracker.metrics(rid, {"params": out.get("params", 0)}
                            | {f"val.{k}": v for k, v in out.get("val", {}).items()})
        if "prune" in out:
            run.tracker.metrics(rid, {k: v for k, v in out["prune"].items() if isinstance(v, (int, float))})
            run.tracker.json(rid, out["prune"], "prune_report.json")
    run.log.info(f"{stage}{' ' + str(tags) if tags else ''}: {'reused from cache' if was_cached else 'done'}")
    return out


# --- phase 1: validate ------------------------------------------------------------------------------------------


def validate(run: Run) -> DataRef:
    """DVC's ingest and prepare stages, each followed by the GX suite that guards it; bad data is rolled back."""
    root, cfg, tr = run.root, run.cfg, run.tracker
    if pulled := dvc_remote.pull_missing(root, cfg.data.name):  # a clone has the .dvc files, not the data
        run.log.info(f"pulled from the DVC remote: {', '.join(pulled)}")
    lock_before = (root / "dvc.lock").read_text() if (root / "dvc.lock").exists() else None
    with tr.stage("validation") as rid:
        try:
            ran = dvc_repro(str(root), f"ingest@{cfg.data.name}")
            reports = [validate_data(str(root), cfg, "raw")]
            if reports[0]["success"]:
                ran += dvc_repro(str(root), f"prepare@{cfg.data.name}")
                reports.append(validate_data(str(root), cfg, "splits"))
        except DvcError:
            restore_data(root, cfg, lock_before)
            raise
        for rep in reports:
            tr.json(rid, rep, f"validation_{rep['phase']}.json")
            tr.folder(rid, rep["docs_dir"], f"data_docs_{rep['phase']}")
        failures = [f for rep in reports for f in rep["failures"]]
        run.validation = {"success": not failures, "evaluated": sum(len(r["results"]) for r in reports),
                          "failed": len(failures)}
        tr.metrics(rid, {"expectations_evaluated": run.validation["evaluated"], "expectations_failed": len(failures)})
        tr.tags(rid, {"dvc_stages_ran": ",".join(ran) or "none (up to date)", "validation_success": not failures})
        tr.tags(run.parent, {"validation_success": not failures})
        if failures:
            restore_data(root, cfg, lock_before)
            raise DataValidationError(ValidationReport(success=False, failures=failures,
                                                       results=[r for rep in reports for r in rep["results"]]))
    run.lineage["dataset_hash"] = dataset_hash(root, cfg.data.name)
    tr.tags(run.parent, run.lineage)
    tr.inputs(run.parent, split_datasets(root, cfg.data.name))
    run.log.info(f"dataset {cfg.data.name} validated; hash {run.lineage['dataset_hash']}; DVC stages run: "
                 f"{ran or 'none (up to date)'}")
    return data_ref(root, cfg, run.lineage["dataset_hash"])


def data_ref(root: Path, cfg: PipelineConfig, dataset_hash: str) -> DataRef:
    """What training stages read of the data: its prepared version and how to interpret it, nothing else (the
    data section's reading options and validation thresholds are behind the DVC hash or not read at all)."""
    return DataRef(root=str(root), name=cfg.data.name, dataset_hash=dataset_hash, kind=cfg.data.kind,
                   classes=list(cfg.data.classes))


def restore_data(root: Path, cfg: PipelineConfig, lock_before: str | None) -> None:
    """Put dvc.lock and the dataset's outputs back as they were before this run: data that failed to ingest or to
    validate is never left in data/. The outputs of the previous lock come back from DVC's cache; outputs of stages
    that had no lock entry are removed."""
    log, name = get_run_logger(), cfg.data.name
    lock = root / "dvc.lock"
    if lock_before is None:
        lock.unlink(missing_ok=True)
    else:
        with atomic_path(lock) as tmp:
            tmp.write_text(lock_before)
    locked = (yaml.safe_load(lock_before or "") or {}).get("stages", {})
    for stage, out in ((f"ingest@{name}", dvc_stages.raw_dir(root, name)),
                       (f"prepare@{name}", dvc_stages.prepared_dir(root, name))):
        if stage not in locked:
            shutil.rmtree(out, ignore_errors=True)
            continue
        proc = subprocess.run([sys.executable, "-m", "dvc", "checkout", "--force", stage], cwd=root,
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            log.error(f"could not restore {out} from DVC's cache: {proc.stderr.strip()[-1000:]}")
    log.info(f"data of {name!r} restored to the last good version in dvc.lock")


def dataset_hash(root: Path, name: str) -> str:
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    return lock["stages"][f"prepare@{name}"]["outs"][0]["md5"]


def split_datasets(root: Path, name: str) -> dict[str, "mlflow.data.dataset.Dataset"]:
    """The prepared splits as MLflow datasets by split, named NAME-SPLIT: the digest is DVC's md5 of the split's
    file (its entry in the manifest of the dataset hash), the source its DVC-tracked path in the project."""
    out = {}
    for split, d in dvc_stages.load_splits(root, name).items():
        path = dvc_stages.prepared_dir(root, name) / f"{split}.npz"
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "md5").hexdigest()
        # A source object, not a path string: MLflow warns that a path could be either of its two local sources.
        source = LocalArtifactDatasetSource(str(path.relative_to(root)))
        out[split] = mlflow.data.from_numpy(d.x, source=source, targets=d.y, name=f"{name}-{split}", digest=digest)
    return out


# --- phase 2: train ---------------------------------------------------------------------------------------------


@dataclass
class Trained:
    teacher: dict  # {"onnx", "val", "ref": TeacherRef}
    plain: dict  # train_student's output, with "spec"
    kd: dict | None  # the KD variant chosen on val (None when the plain student won the choice), with "spec"
    variants: dict[str, dict]  # every KD variant trained: label -> output
    teacher_strong: bool


def student_spec(cfg: PipelineConfig, data: DataRef, variant: kd.Variant, teacher: TeacherRef | None,
                 seed: int | None = None, width: int | None = None) -> StudentSpec:
    """What a student stage reads: the same budget for every variant, the teacher only when the variant has one."""
    return StudentSpec(data=data, width=width or cfg.student.width, seed=cfg.train.seed if seed is None else seed,
                       train=cfg.train.model_dump(), budget=cfg.student.model_dump(exclude={"width"}),
                       variant={"method": variant.method, "options": variant.options},
                       teacher=None if variant.method == "plain" else teacher)


def train(run: Run, data: DataRef, variants: list[kd.Variant]) -> Trained:
    """The teacher, the plain student, and every KD variant asked for; the KD student is the best on val."""
    cfg, metric = run.cfg, run.cfg.gate.metric
    teacher = train_teachers(run, data)
    plain = tracked(run, "student_plain", train_student, spec := student_spec(cfg, data, kd.PLAIN, None))
    plain["spec"] = spec
    outs = {}
    for v in variants:
        if v.method == "plain":
            outs[v.label] = plain
            continue
        spec = student_spec(cfg, data, v, teacher["ref"])
        outs[v.label] = tracked(run, "student_kd", train_student, spec, {"variant": v.label}) | {"spec": spec}
    best = max(outs, key=lambda label: outs[label]["val"][metric]) if outs else None
    margin = teacher["val"][metric] - plain["val"][metric]
    strong = margin >= cfg.teacher.min_margin
    if not strong:
        run.log.warning(teacher_warning(metric, teacher["val"][metric], plain["val"][metric], cfg.teacher.min_margin))
    if best is not None:
        run.log.info(f"KD student chosen on val {metric}: {best} ({outs[best]['val'][metric]:.4f}; plain "
                     f"{plain['val'][metric]:.4f})" + ("; the plain student won: no KD candidate" if best == "plain"
                                                       else ""))
    kd_out = None if best is None or best == "plain" else outs[best] | {"variant": best}
    run.tracker.tags(run.parent, {"kd_variant": best or "none", "teacher_clearly_stronger": strong})
    return Trained(teacher, plain, kd_out, outs, strong)


def teacher_warning(metric: str, teacher: float, plain: float, margin: float) -> str:
    return (f"the teacher is not clearly stronger than the plain student (val {metric} {teacher:.4f} vs "
            f"{plain:.4f}, needed a margin of {margin}): KD cannot be expected to help; strengthen the teacher "
            f"(teacher.width, teacher.epochs, teacher.ensemble) or bring one (teacher.source)")


def train_teachers(run: Run, data: DataRef) -> dict:
    """The KD teacher: a user's file (teacher.source), or N networks trained here (one, or an ensemble)."""
    cfg, t = run.cfg, run.cfg.teacher
    splits, pspec, _ = load_data(data)
    with run.tracker.stage("teacher", {"source": t.source or "trained", "ensemble": t.ensemble}) as rid:
        if t.source:
            ref = TeacherRef(file=artifact_info(teacher_path(run.root, t.source)))
            check_teacher(load_teacher_file(ref.file["path"])[0], splits["val"].x, len(data.classes), t.source)
        else:
            specs = teacher_specs(cfg, data)
            members = [tracked(run, "teacher_member", train_teacher, spec, {"member": i})
                       for i, spec in enumerate(specs)]
            ref = TeacherRef(members=[{"width": spec.width, "weights": m["weights"]}
                                      for spec, m in zip(specs, members)])
        if len(ref.members) == 1:
            out = {"onnx": members[0]["onnx"], "val": members[0]["val"]}
        elif ref.file and ref.file["path"].endswith(".onnx"):
            out = {"onnx": ref.file, "val": ort_metrics(ref.file["path"], splits["val"], data.classes)}
        else:
            out, _ = cached(export_teacher, {"data": data.model_dump(mode="json"), "teacher": ref.model_dump()})
        run.tracker.tags(rid, {"teacher_id": ref.id})
        run.tracker.metrics(rid, {f"val.{k}": v for k, v in out["val"].items()})
    return out | {"ref": ref}


def teacher_specs(cfg: PipelineConfig, data: DataRef) -> list[TeacherSpec]:
    """One spec per teacher network: member i of an ensemble has seed train.seed + i and the i-th width (cycled)."""
    t = cfg.teacher
    widths = t.ensemble_widths or [t.width]
    recipe = t.model_dump(include={"epochs", "lr", "patience", "checkpoint", "label_smoothing"})
    return [TeacherSpec(data=data, width=widths[i % len(widths)], seed=cfg.train.seed + i,
                        train=cfg.train.model_dump(), recipe=recipe) for i in range(t.ensemble)]


def teacher_path(root: Path, source: str) -> str:
    """The absolute path of `teacher.source` (relative to the project), refused when missing or of another kind."""
    path = (Path(root) / source).resolve()
    if not path.is_file():
        raise TeacherFileError(f"teacher.source {source!r}: {path} does not exist (paths are relative to the "
                               "project)")
    if path.suffix != ".onnx" and path.suffix not in TORCHSCRIPT_SUFFIXES:
        raise TeacherFileError(f"teacher.source {source!r}: expected an .onnx or TorchScript "
                               f"({', '.join(TORCHSCRIPT_SUFFIXES)}) file")
    return str(path)


# --- phase 3: compress ------------------------------------------------------------------------------------------


def compress(run: Run, data: DataRef, trained: Trained) -> dict[str, dict]:
    """Every recipe of the candidate table, in order: candidate -> {"onnx": artifact info, ...}."""
    sources = {"teacher": trained.teacher, "plain": trained.plain, "kd": trained.kd}
    made: dict[str, dict] = {}
    for r in recipes(("plain", "kd") if trained.kd else ("plain",)):
        source = sources[r.source] if r.source in sources else made[r.source]
        made[r.name] = TRANSFORMS[r.transform](run, data, r, source)
    return made


def _export(run: Run, data: DataRef, r: Recipe, source: dict) -> dict:
    return {"onnx": source["onnx"], "spec": source.get("spec"), "weights": source.get("weights")}


def _prune(run: Run, data: DataRef, r: Recipe, source: dict) -> dict:
    spec = PruneSpec(source=source["spec"], weights=source["weights"], prune=run.section("prune"))
    return tracked(run, "prune", prune_student, spec, {"candidate": r.name})


def _int8(run: Run, data: DataRef, r: Recipe, source: dict) -> dict:
    spec = QuantizeSpec(data=data, fp32=source["onnx"], mode=r.options["mode"], quantize=run.section("quantize"))
    return tracked(run, "quantize", quantize_int8, spec, {"candidate": r.name})


TRANSFORMS = {"export": _export, "prune": _prune, "int8": _int8}


# --- phase 4: measure -------------------------------------------------------------------------------------------


def measure(run: Run, data: DataRef, made: dict[str, dict]) -> dict[str, dict]:
    """Each candidate's metrics through ORT on val and test, and its latency under the device profile."""
    b = run.cfg.benchmark
    results = {}
    for name, m in made.items():
        run.log.info(f"measuring {name} (ORT metrics on val and test, latency at {b.intra_op_threads} thread(s), "
                     f"batch {b.batch_size})")
        results[name] = measure_candidate(data.model_dump(mode="json"), m["onnx"]["path"], run.section("benchmark")) \
            | {"sha256": m["onnx"]["sha256"], "path": m["onnx"]["path"]}
    return results


# --- phase 5: gate ----------------------------------------------------------------------------------------------


@dataclass
class Verdict:
    decisions: dict[str, gate.Decision]
    best: str | None
    champion_version: str | None
    champion: dict | None


def judge(run: Run, results: dict[str, dict]) -> Verdict:
    """The gate on validation metrics: each candidate against the policy, the teacher, the plain student trained
    on the same budget, the model it was compressed from, and the version holding production; the best passing
    one on val is selected."""
    view = {n: gate.gate_view(m) for n, m in results.items()}
    c = tracking.client()
    champion_mv = tracking.version_by_alias(c, run.cfg.data.name, tracking.PRODUCTION)
    champion = tracking.gate_metrics(champion_mv, "val.") if champion_mv else None
    table = {r.name: r for r in recipes()}  # a compression step is judged against its source measured here
    decisions = {n: gate.decide(v, view["teacher_fp32"], champion, run.cfg.gate, plain=view["plain_fp32"],
                                source=view.get(table[n].source), transform=table[n].transform)
                 for n, v in view.items()}
    best = gate.select_best(view, decisions, run.cfg.gate.metric)
    return Verdict(decisions, best, str(champion_mv.version) if champion_mv else None, champion)


# --- phase 6: publish -------------------------------------------------------------------------------------------


def publish(run: Run, data: DataRef, trained: Trained, results: dict[str, dict], verdict: Verdict) -> dict:
    """The report (terminal, MLflow runs, plots), the registered version with its model card, the JSON summary."""
    cfg, tr = run.cfg, run.tracker
    report = reporting.Report(cfg, results, verdict.decisions, verdict.best, trained.kd and trained.kd["variant"],
                              trained.teacher_strong)
    gate_report = {"policy": run.section("gate"), "champion_version": verdict.champion_version,
                   "champion": verdict.champion, "selected": verdict.best, "decided_on": "val",
                   "candidates": {n: {"passed": d.passed, "reasons": d.reasons} for n, d in verdict.decisions.items()}}
    with tempfile.TemporaryDirectory() as tmp:
        files = report.write(Path(tmp), gate_report)
        with tr.stage("benchmark", {"device_profile": json.dumps(run.section("benchmark"))}) as rid:
            tr.file(rid, files["benchmark.csv"])
            tr.file(rid, files["accuracy_vs_p95.png"])
        for name, m in results.items():
            d = verdict.decisions[name]
            with tr.stage(f"candidate:{name}", {"candidate": name, "gate_passed": d.passed,
                                                "gate_reasons": "; ".join(d.reasons) or "none"}) as rid:
                tr.metrics(rid, reporting.flat_metrics(m))
                tr.file(rid, files[f"confusion_{name}.png"])
                tr.json(rid, {"classes": cfg.data.classes, "matrix": m["test"]["confusion"]}, "confusion_matrix.json")
        tr.metrics(run.parent, report.summary_metrics())
        for f in ("benchmark.csv", "accuracy_vs_p95.png", "gate_report.json"):
            tr.file(run.parent, files[f])
        with tr.stage("gate", {"selected": verdict.best or "none"}) as rid:
            tr.file(rid, files["gate_report.json"])
        version, new = register(run, report, gate_report, Path(tmp)) if verdict.best else (None, False)
    tr.tags(run.parent, {"registered_version": version or "none: no candidate passed the gate"})
    key = artifact_key(cfg.data.name)
    create_markdown_artifact(report.gate_markdown(gate_report, version, new, run.parent), key=f"gate-{key}",
                             description=f"The gate's verdict on every candidate of {cfg.data.name}, on val")
    create_table_artifact(report.table().round(4).to_dict("records"), key=f"candidates-{key}",
                          description=f"The candidates of {cfg.data.name}: val (chosen on) and test (reported) "
                                      "through ORT, latency under the device profile")
    text = report.render(version, cfg.data.name, new)
    # The table itself is printed once, by the caller (`edgekd run`), and kept as a Prefect artifact.
    run.log.info(report.verdict(version, cfg.data.name, new))
    return {"summary": text, "selected": verdict.best, "version": version, "kd_gain": report.kd_gain(),
            "parent_run_id": run.parent, "candidates": results, "champion_version": verdict.champion_version,
            "decisions": {n: d.reasons for n, d in verdict.decisions.items()}, "json": report.json(version, new)}


def artifact_key(name: str) -> str:
    """`name` as Prefect allows in an artifact key: lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def register(run: Run, report: "reporting.Report", gate_report: dict, tmp: Path, extra_card: str = "",
             extra_files: list[str] = ()) -> tuple[str, bool]:
    """The selected candidate as a new version of the dataset's registered model, alias 'staging'; or, when a
    version already holds the very same artifact (sha256), that version, and nothing is registered or moved.
    `extra_card` is appended to the model card, `extra_files` go with it. Returns (version, whether it is new)."""
    best, cfg = report.best, run.cfg
    m = report.results[best]
    if existing := tracking.version_with_sha256(cfg.data.name, m["sha256"]):  # publish's verdict line says so
        run.tracker.tags(run.parent, {"registered_version": existing, "registered_candidate": best,
                                      "registered_new": False})
        return existing, False
    prepared = dvc_stages.prepared_dir(run.root, cfg.data.name)
    card = report.model_card(gate_report, run.validation, json.loads((prepared / "summary.json").read_text()),
                             run.lineage, m["sha256"], run.parent) + extra_card
    (tmp / "model_card.md").write_text(card)
    run.tracker.file(run.parent, tmp / "model_card.md")
    example = dvc_stages.load_splits(run.root, cfg.data.name)["test"].x[:1]
    version = tracking.register(
        run.parent, cfg.data.name, m["path"], example,
        [str(tmp / f) for f in ("model_card.md", "benchmark.csv", "gate_report.json")] + [str(prepared / "preprocess.json")]
        + list(extra_files),
        tags=run.lineage | {"candidate": best, "sha256": m["sha256"], "gate_metric": cfg.gate.metric}
        | tracking.metric_tags(m, report.results["teacher_fp32"], report.results["plain_fp32"]),
        description=card)
    run.tracker.tags(run.parent, {"registered_version": version, "registered_candidate": best, "registered_new": True})
    return version, True


# --- the flow ---------------------------------------------------------------------------------------------------


def git_commit(root: Path) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _flow_run_name() -> str:
    """Prefect's name of a flow run: the dataset (params.yaml's default when none is given) and the start time,
    e.g. 'fsdd-20261123-140509'."""
    params = flow_run.parameters
    name = params.get("dataset")
    if not name:
        try:
            name = yaml.safe_load((Path(params.get("project_dir", ".")) / "params.yaml").read_text())["dataset"]
        except (OSError, yaml.YAMLError, KeyError, TypeError):  # the flow itself reports a bad params.yaml
            name = "default-dataset"
    return f"{name}-{datetime.now():%Y%m%d-%H%M%S}"


def open_run(root: Path, cfg: PipelineConfig, stage: str, overrides: dict | None) -> Run:
    """The tracker and parent run of a pipeline (or bench) run, after marking runs of killed processes FAILED."""
    cfg_dict = cfg.model_dump(mode="json")
    local_store = os.environ["MLFLOW_TRACKING_URI"] == env.tracking_uri(root)
    tracker = tracking.Tracker(cfg.data.name, root / "mlruns" if local_store else None)
    dead = tracker.close_dead_runs()
    if dead:
        dropped = tracking.drop_partial_versions(cfg.data.name, dead)
        get_run_logger().warning(f"{len(dead)} MLflow run(s) left RUNNING by a killed process marked FAILED"
                                 + (f"; partly registered version(s) {dropped} deleted" if dropped else ""))
    lineage = {"git_commit": git_commit(root),
               "params_hash": hashlib.sha256(json.dumps(cfg_dict, sort_keys=True).encode()).hexdigest()[:16],
               "prefect_flow_run_id": flow_run.get_id() or "none"}
    parent = tracker.start(stage, lineage | {"overrides": json.dumps(overrides or {}, sort_keys=True)}, parent=True)
    tracker.params(parent, tracking.flatten(cfg_dict))
    tracker.json(parent, cfg_dict, "effective_config.json")
    return Run(root, cfg, tracker, parent, lineage)


@flow(name="edgekd-pipeline", flow_run_name=_flow_run_name)
def pipeline(project_dir: str = ".", dataset: str | None = None, overrides: dict[str, Any] | None = None) -> dict:
    """Run every stage on `dataset` (default: params.yaml's `dataset`) as configured in the project's params.yaml,
    which DVC's stages read too, with `overrides` of stage keys on top ({"distill.hinton.temperature": 4});
    register the best passing candidate with alias 'staging'."""
    root = Path(project_dir).resolve()
    cfg = load_config(root / "params.yaml", dataset, overrides)
    variants = kd.resolve(cfg.distill, cfg.teacher)  # a bad distill.* setting fails before anything runs
    run = open_run(root, cfg, "pipeline", overrides)
    try:
        data = validate(run)
        trained = train(run, data, variants)
        results = measure(run, data, compress(run, data, trained))
        outcome = publish(run, data, trained, results, judge(run, results))
    except BaseException as e:
        run.tracker.fail_open_runs(e)
        raise
    run.tracker.end(run.parent)
    return outcome
