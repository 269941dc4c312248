"""The pipeline flow: thin Prefect tasks over components, MLflow tracking around them.

ingest (DVC) -> validate raw (GX) -> prepare (DVC) -> validate splits (GX) -> teacher -> students (plain, KD)
-> prune + KD fine-tune -> ONNX export + INT8 -> ORT accuracy -> ORT benchmark -> gate -> register (staging)
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from prefect import flow, get_run_logger, task
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.runtime import flow_run

import components
from components import benchmark as bench
from components import gate, quantize
from components.config import PipelineConfig, load_config
from components.data import get_kind
from components.distill import kd_objective
from components.export import artifact_info, atomic_path, export_onnx, file_sha256, ort_accuracy, ort_predict
from components.metrics import classification_metrics
from components.models import build, count_params
from components.prune import prune_channels
from components.train import evaluate, fit, select_device
from components.validation import DataValidationError, describe_features, raw_plan, split_plan, validate
from flows import dvc_stages, env, reporting, tracking


def _retry_on_io(task, task_run, state) -> bool:
    """Retry a task that failed on I/O (a full or busy disk, a lock held too long); a missing file, a permission
    problem or any other error (bad data, NaN loss) fails at once."""
    try:
        state.result()
    except (OSError, TimeoutError) as e:
        return not isinstance(e, (FileNotFoundError, PermissionError))
    except Exception:
        return False
    return False


IO_RETRIES = dict(retries=2, retry_delay_seconds=[2, 8], retry_condition_fn=_retry_on_io)
# Cached stages persist a small JSON result (paths + metrics); the weights live in files, loaded safely.
CACHED = dict(cache_policy=INPUTS + TASK_SOURCE, persist_result=True, result_serializer="json", **IO_RETRIES)
CANDIDATES = ("teacher_fp32", "student_fp32", "pruned_fp32", "pruned_int8_static", "pruned_int8_dynamic")


def code_version() -> str:
    """Hash of the component sources: a code change invalidates the cache of every stage."""
    h = hashlib.sha256()
    for p in sorted(Path(components.__file__).parent.rglob("*.py")):
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def spec_dir(spec: dict, stage: str) -> Path:
    key = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return Path(spec["root"]) / ".edgekd" / "artifacts" / stage / key


def _progress(name: str, total: int):
    log = get_run_logger()
    every = max(1, total // 10)

    def on_epoch(epoch: int, row: dict) -> None:
        if epoch == 1 or epoch % every == 0:
            log.info(f"[{name}] epoch {epoch}/{total} train_loss={row['train_loss']:.4f} "
                     f"val_acc={row['val_accuracy']:.4f}")

    return on_epoch


def _save_weights(model: torch.nn.Module, path: Path) -> dict:
    with atomic_path(path) as tmp:
        torch.save(model.state_dict(), tmp)
    return artifact_info(path)


def _build(cfg: PipelineConfig, role: str, spec: dict) -> torch.nn.Module:
    width = cfg.model.teacher_width if role == "teacher" else cfg.model.student_width
    return build(cfg.data.kind, role, spec, cfg.data.num_classes, width, cfg.train.seed)


class UntrustedFileError(RuntimeError):
    pass


def _load(cfg: PipelineConfig, role: str, spec: dict, weights: dict) -> torch.nn.Module:
    """Weights saved by an upstream stage (`weights`: its path and sha256), loaded without unpickling code."""
    path = weights["path"]
    if file_sha256(path) != weights["sha256"]:
        raise UntrustedFileError(f"{path}: sha256 differs from the one recorded when the stage saved it; "
                                 "refusing to load it (delete .edgekd/artifacts to retrain)")
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        raise UntrustedFileError(f"{path}: not a plain tensor file; refusing to unpickle it ({e})") from None
    model = _build(cfg, role, spec)
    model.load_state_dict(state)
    return model.eval()


def _inputs(spec: dict) -> tuple[Path, PipelineConfig, dict, dict]:
    """What every training task starts from: project root, config, preprocessing spec and the splits."""
    root, cfg = Path(spec["root"]), PipelineConfig.model_validate(spec["cfg"])
    return root, cfg, dvc_stages.load_spec(root, cfg), dvc_stages.load_splits(root, cfg)


def _fit_kwargs(cfg: PipelineConfig, epochs: int, lr: float, name: str) -> dict:
    return dict(epochs=epochs, lr=lr, batch_size=cfg.train.batch_size, patience=cfg.train.patience,
                seed=cfg.train.seed, device=select_device(cfg.train.device), weight_decay=cfg.train.weight_decay,
                augment=get_kind(cfg.data.kind).augment if cfg.train.augment else None,
                on_epoch=_progress(name, epochs))


def _finish(model: torch.nn.Module, cfg: PipelineConfig, out: Path, history: list[dict], test) -> dict:
    """Save weights and the FP32 ONNX export of a trained model; report its size and PyTorch accuracy."""
    return {
        "weights": _save_weights(model, out / "weights.pt"),
        "onnx": export_onnx(model, test.x, out / "model.onnx"),
        "history": history,
        "params": count_params(model),
        "torch_test_accuracy": evaluate(model, test, torch.device("cpu"))["accuracy"],
    }


# --- tasks --------------------------------------------------------------------------------------------------


class DvcError(RuntimeError):
    """A DVC stage failed; `data_error` is the stage's own 'error: ...' line when the data was at fault."""

    def __init__(self, message: str, data_error: str | None = None):
        super().__init__(message)
        self.data_error = data_error


@task(**IO_RETRIES)
def dvc_repro(root: str, stage: str) -> list[str]:
    """`dvc repro STAGE` (with its upstream stages) in the project; returns the stages that actually ran."""
    # A subprocess, so DVC resolves paths against the project and its stage commands find this interpreter.
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run([sys.executable, "-m", "dvc", "repro", stage], cwd=root, env=env, capture_output=True,
                          text=True, timeout=3600)
    log = get_run_logger()
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.strip():
            log.info(f"dvc: {line}")
    if proc.returncode != 0:
        if "Unable to acquire lock" in proc.stderr:
            raise TimeoutError(f"dvc repro {stage}: the DVC repository is locked by another process")
        data_errors = [line[len("error: "):] for line in proc.stderr.splitlines() if line.startswith("error: ")]
        raise DvcError(f"dvc repro {stage} failed (exit {proc.returncode}):\n{proc.stderr.strip()[-3000:]}",
                       data_errors[-1] if data_errors else None)
    return re.findall(r"Running stage '([^']+)'", proc.stdout)


@task(**IO_RETRIES)
def validate_data(root: str, cfg: PipelineConfig, phase: str) -> dict:
    """GX suites over the raw dataset (phase 'raw') or the prepared splits (phase 'splits')."""
    rootp = Path(root)
    if phase == "raw":
        plan = raw_plan(get_kind(cfg.data.kind), dvc_stages.load_raw_data(rootp, cfg), cfg)
    else:
        splits, spec = dvc_stages.load_splits(rootp, cfg), dvc_stages.load_spec(rootp, cfg)
        plan = split_plan({n: describe_features(d.x, d.y, list(d.meta["hash"])) for n, d in splits.items()}, spec, cfg)
        kind = get_kind(cfg.data.kind)
        if hasattr(kind, "split_checks"):  # optional hook: checks a kind adds per prepared split
            plan += [c for n, d in splits.items() for c in kind.split_checks(spec, n, d)]
    docs = rootp / ".edgekd" / "validation" / cfg.data.name / phase
    report = validate(plan, docs_dir=docs)
    out = report.to_dict() | {"phase": phase, "docs_dir": str(docs)}
    with atomic_path(docs / "result.json") as tmp:
        tmp.write_text(json.dumps(out, indent=2, default=str))
    return out


@task(**CACHED)
def train_teacher(spec: dict) -> dict:
    _, cfg, pspec, s = _inputs(spec)
    t = cfg.train
    model, hist = fit(_build(cfg, "teacher", pspec), s["train"], s["val"], **_fit_kwargs(cfg, t.epochs, t.lr, "teacher"))
    return _finish(model, cfg, spec_dir(spec, "teacher"), hist, s["test"])


@task(**CACHED)
def train_student(spec: dict) -> dict:
    """The student trained with KD (spec['teacher'] set) or on labels only (the no-KD baseline)."""
    _, cfg, pspec, s = _inputs(spec)
    d = cfg.distill
    kw = _fit_kwargs(cfg, d.epochs, d.lr, spec["name"])
    if spec.get("teacher"):
        kw["loss_fn"] = kd_objective(_load(cfg, "teacher", pspec, spec["teacher"]), d.temperature, d.alpha)
    model, hist = fit(_build(cfg, "student", pspec), s["train"], s["val"], **kw)
    return _finish(model, cfg, spec_dir(spec, spec["name"]), hist, s["test"])


@task(**CACHED)
def prune_student(spec: dict) -> dict:
    _, cfg, pspec, s = _inputs(spec)
    p, d = cfg.prune, cfg.distill
    student = _load(cfg, "student", pspec, spec["student"])
    pruned, report = prune_channels(student, torch.from_numpy(s["train"].x[:2]), p.ratio)
    report["torch_test_accuracy_before_finetune"] = evaluate(pruned, s["test"], torch.device("cpu"))["accuracy"]
    hist: list[dict] = []
    if p.finetune_epochs:
        kw = _fit_kwargs(cfg, p.finetune_epochs, p.finetune_lr, "prune-finetune")
        kw["loss_fn"] = kd_objective(_load(cfg, "teacher", pspec, spec["teacher"]), d.temperature, d.alpha)
        pruned, hist = fit(pruned, s["train"], s["val"], **kw)
    return _finish(pruned, cfg, spec_dir(spec, "pruned"), hist, s["test"]) | {"prune": report}


@task(**CACHED)
def quantize_int8(spec: dict) -> dict:
    _, cfg, _, s = _inputs(spec)
    train = s["train"]
    out = spec_dir(spec, "quantized")
    calib = quantize.calibration_sample(train.x, cfg.quantize.calibration_samples, cfg.data.seed)
    return {
        "pruned_int8_static": quantize.quantize_static_int8(spec["fp32"]["path"], out / "static.onnx", calib,
                                                            cfg.quantize.per_channel),
        "pruned_int8_dynamic": quantize.quantize_dynamic_int8(spec["fp32"]["path"], out / "dynamic.onnx"),
    }


@task(**IO_RETRIES)
def measure_candidate(root: str, cfg: PipelineConfig, onnx_path: str) -> dict:
    """Metrics through ONNX Runtime on the test split, then latency under the device profile."""
    test = dvc_stages.load_splits(Path(root), cfg)["test"]
    b = cfg.benchmark
    metrics = classification_metrics(ort_predict(onnx_path, test.x), test.y, cfg.data.classes)
    return metrics | bench.benchmark(
        onnx_path, test.x, threads=b.intra_op_threads, batch_size=b.batch_size,
        warmup_runs=b.warmup_runs, timed_runs=b.timed_runs)


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


# --- the flow -----------------------------------------------------------------------------------------------


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
    for stage, out in ((f"ingest@{name}", dvc_stages.raw_dir(root, cfg)),
                       (f"prepare@{name}", dvc_stages.prepared_dir(root, cfg))):
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


def git_commit(root: Path) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _flow_run_name() -> str:
    """Prefect's name of a flow run: the dataset and the start time, e.g. 'fsdd-20261123-140509'."""
    return f"{flow_run.parameters.get('dataset') or 'default-dataset'}-{datetime.now():%Y%m%d-%H%M%S}"


@flow(name="edgekd-pipeline", flow_run_name=_flow_run_name)
def pipeline(project_dir: str = ".", dataset: str | None = None, overrides: dict[str, Any] | None = None) -> dict:
    """Run every stage on `dataset` (default: params.yaml's `dataset`) as configured in the project's params.yaml,
    which DVC's stages read too, with `overrides` of stage keys on top ({"distill.temperature": 4}); register
    the best passing candidate with alias 'staging'."""
    root = Path(project_dir).resolve()
    cfg = load_config(root / "params.yaml", dataset, overrides)
    cfg_dict = cfg.model_dump(mode="json")
    params_hash = hashlib.sha256(json.dumps(cfg_dict, sort_keys=True).encode()).hexdigest()[:16]
    local_store = os.environ["MLFLOW_TRACKING_URI"] == env.tracking_uri(root)
    tracker = tracking.Tracker(cfg.data.name, root / "mlruns" if local_store else None)
    dead = tracker.close_dead_runs()
    if dead:
        dropped = tracking.drop_partial_versions(cfg.data.name, dead)
        get_run_logger().warning(f"{len(dead)} MLflow run(s) left RUNNING by a killed process marked FAILED"
                                 + (f"; partly registered version(s) {dropped} deleted" if dropped else ""))
    lineage = {"git_commit": git_commit(root), "params_hash": params_hash,
               "prefect_flow_run_id": flow_run.get_id() or "none"}
    parent = tracker.start("pipeline", lineage | {"overrides": json.dumps(overrides or {}, sort_keys=True)},
                           parent=True)
    tracker.params(parent, tracking.flatten(cfg_dict))
    tracker.json(parent, cfg_dict, "effective_config.json")
    try:
        result = _stages(root, cfg, cfg_dict, tracker, parent, lineage)
    except BaseException:
        tracker.fail_open_runs()
        raise
    tracker.end(parent)
    return result


def _stages(root: Path, cfg: PipelineConfig, cfg_dict: dict, tr: tracking.Tracker, parent: str,
            lineage: dict) -> dict:
    log = get_run_logger()
    # Data: DVC stages, each followed by the GX suite that guards it.
    run = tr.start("validation")
    lock_before = (root / "dvc.lock").read_text() if (root / "dvc.lock").exists() else None
    try:
        ran = dvc_repro(str(root), f"ingest@{cfg.data.name}")
        raw = validate_data(str(root), cfg, "raw")
        reports = [raw]
        if raw["success"]:
            ran += dvc_repro(str(root), f"prepare@{cfg.data.name}")
            reports.append(validate_data(str(root), cfg, "splits"))
    except DvcError:
        restore_data(root, cfg, lock_before)
        raise
    for rep in reports:
        tr.json(run, rep, f"validation_{rep['phase']}.json")
        tr.folder(run, rep["docs_dir"], f"data_docs_{rep['phase']}")
    failures = [f for rep in reports for f in rep["failures"]]
    validation = {"success": not failures, "evaluated": sum(len(r["results"]) for r in reports),
                  "failed": len(failures)}
    tr.metrics(run, {"expectations_evaluated": validation["evaluated"], "expectations_failed": len(failures)})
    tr.tags(run, {"dvc_stages_ran": ",".join(ran) or "none (up to date)", "validation_success": not failures})
    tr.tags(parent, {"validation_success": not failures})
    if failures:
        from components.validation import ValidationReport

        restore_data(root, cfg, lock_before)
        tr.end(run, ok=False)
        raise DataValidationError(ValidationReport(success=False, failures=failures,
                                                   results=[r for rep in reports for r in rep["results"]]))
    tr.end(run)
    ds_hash = dataset_hash(root, cfg.data.name)
    lineage = lineage | {"dataset_hash": ds_hash}
    tr.tags(parent, lineage)
    log.info(f"dataset {cfg.data.name} validated; hash {ds_hash}; DVC stages run: {ran or 'none (up to date)'}")

    base = {"root": str(root), "dataset_hash": ds_hash, "code": code_version()}
    data_spec = {k: v for k, v in cfg_dict["data"].items() if k != "intended_use"}  # prose: never retrains
    sections = lambda *names: {"data": data_spec} | {n: cfg_dict[n] for n in ("model", "train", *names)}  # noqa: E731

    def stage(name: str, fn, spec: dict) -> dict:
        rid = tr.start(name, {"dataset_hash": ds_hash})
        out, was_cached = cached(fn, spec)
        tr.tags(rid, {"cached": was_cached})
        tr.history(rid, out.get("history", []))
        tr.metrics(rid, {"params": out.get("params", 0), "torch_test_accuracy": out.get("torch_test_accuracy", 0)})
        if "prune" in out:
            tr.metrics(rid, {k: v for k, v in out["prune"].items() if isinstance(v, (int, float))})
            tr.json(rid, out["prune"], "prune_report.json")
        tr.end(rid)
        log.info(f"{name}: {'reused from cache' if was_cached else 'trained'}")
        return out

    # Each spec holds only what its stage depends on, so e.g. a gate change never retrains anything.
    teacher = stage("teacher", train_teacher, {**base, "cfg": sections()})
    plain = stage("student_plain", train_student, {**base, "name": "student_plain", "cfg": sections("distill")})
    kd = stage("student_kd", train_student, {**base, "name": "student_kd", "teacher": teacher["weights"],
                                             "cfg": sections("distill")})
    pruned = stage("prune", prune_student, {**base, "student": kd["weights"], "teacher": teacher["weights"],
                                            "cfg": sections("distill", "prune")})
    qrun = tr.start("quantize")
    qspec = {**base, "fp32": pruned["onnx"], "cfg": {"data": data_spec, "quantize": cfg_dict["quantize"]}}
    quantized, q_cached = cached(quantize_int8, qspec)
    tr.tags(qrun, {"cached": q_cached})
    tr.json(qrun, quantized, "quantization.json")
    tr.end(qrun)

    artifacts = {"teacher_fp32": teacher["onnx"], "student_fp32": kd["onnx"], "pruned_fp32": pruned["onnx"],
                 **quantized}
    results: dict[str, dict] = {}
    for name in CANDIDATES:
        log.info(f"measuring {name} (ORT metrics on test, latency at {cfg.benchmark.intra_op_threads} thread(s), "
                 f"batch {cfg.benchmark.batch_size})")
        results[name] = measure_candidate(str(root), cfg, artifacts[name]["path"]) | {
            "sha256": artifacts[name]["sha256"], "path": artifacts[name]["path"]}

    # The no-KD baseline is measured the same way (through ORT) to report an honest KD gain.
    test = dvc_stages.load_splits(root, cfg)["test"]
    plain_acc = ort_accuracy(plain["onnx"]["path"], test.x, test.y)
    kd_gain = results["student_fp32"]["accuracy"] - plain_acc
    teacher_m = results["teacher_fp32"]

    c = tracking.client()
    champion_mv = tracking.version_by_alias(c, cfg.data.name, tracking.PRODUCTION)
    champion = tracking.version_metrics(champion_mv) if champion_mv else None
    decisions = {n: gate.decide(m, teacher_m, champion, cfg.gate) for n, m in results.items()}
    best = gate.select_best(results, decisions, cfg.gate.metric)

    table = reporting.candidate_table(results, decisions, teacher_m, cfg.gate.metric)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "benchmark.csv").write_text(table.to_csv(index=False))
        reporting.tradeoff_plot(results, tmp / "accuracy_vs_p95.png", cfg.benchmark)
        gate_report = {
            "policy": cfg_dict["gate"], "champion_version": str(champion_mv.version) if champion_mv else None,
            "champion": champion, "selected": best,
            "candidates": {n: {"passed": d.passed, "reasons": d.reasons} for n, d in decisions.items()},
        }
        (tmp / "gate_report.json").write_text(json.dumps(gate_report, indent=2))

        brun = tr.start("benchmark", {"device_profile": json.dumps(cfg_dict["benchmark"])})
        tr.file(brun, tmp / "benchmark.csv")
        tr.file(brun, tmp / "accuracy_vs_p95.png")
        tr.end(brun)
        for name, m in results.items():
            rid = tr.start(f"candidate:{name}", {"candidate": name, "gate_passed": decisions[name].passed,
                                                 "gate_reasons": "; ".join(decisions[name].reasons) or "none"})
            tr.metrics(rid, {k: v for k, v in m.items() if isinstance(v, (int, float))})
            reporting.confusion_plot(m["confusion"], cfg.data.classes, tmp / f"confusion_{name}.png", name)
            tr.file(rid, tmp / f"confusion_{name}.png")
            tr.json(rid, {"classes": cfg.data.classes, "matrix": m["confusion"]}, "confusion_matrix.json")
            tr.end(rid)
        summary = {"kd_gain": kd_gain, "student_plain_accuracy": plain_acc,
                   "teacher_accuracy": teacher_m["accuracy"]}
        for name in CANDIDATES:
            summary[f"{name}.size_ratio"] = teacher_m["size_bytes"] / results[name]["size_bytes"]
            summary[f"{name}.p50_speedup"] = teacher_m["p50_ms"] / results[name]["p50_ms"]
            summary[f"{name}.accuracy_retention"] = results[name]["accuracy"] / teacher_m["accuracy"]
        tr.metrics(parent, summary)
        for f in ("benchmark.csv", "accuracy_vs_p95.png", "gate_report.json"):
            tr.file(parent, tmp / f)

        grun = tr.start("gate", {"selected": best or "none"})
        tr.file(grun, tmp / "gate_report.json")
        tr.end(grun)

        version = None
        if best is not None:
            m = results[best]
            prepared = dvc_stages.prepared_dir(root, cfg)
            card = reporting.model_card(
                cfg=cfg, candidate=best, table=table, decisions=decisions, gate_report=gate_report,
                validation=validation, data_summary=json.loads((prepared / "summary.json").read_text()),
                lineage=lineage, kd_gain=kd_gain, plain_acc=plain_acc, sha256=m["sha256"], run_id=parent)
            (tmp / "model_card.md").write_text(card)
            tr.file(parent, tmp / "model_card.md")
            version = tracking.register(
                parent, cfg.data.name, m["path"], test.x[:1],
                [str(tmp / f) for f in ("model_card.md", "benchmark.csv", "gate_report.json")]
                + [str(prepared / "preprocess.json")],
                tags=lineage | {"candidate": best, "sha256": m["sha256"], "gate_metric": cfg.gate.metric}
                | tracking.metric_tags(m, teacher_m),
                description=card,
            )
            tr.tags(parent, {"registered_version": version, "registered_candidate": best})
        else:
            tr.tags(parent, {"registered_version": "none: no candidate passed the gate"})

    text = reporting.render_summary(table, kd_gain, plain_acc, cfg.benchmark, best, version, decisions, cfg.data.name,
                                    cfg.gate.metric)
    log.info("summary\n" + text)
    return {"summary": text, "selected": best, "version": version, "kd_gain": kd_gain, "parent_run_id": parent,
               "candidates": results, "decisions": {n: d.reasons for n, d in decisions.items()}}
