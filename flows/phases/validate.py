"""Phase 1, validate: DVC's ingest and prepare stages of the dataset, each followed by the Great Expectations suite
that guards it. Data that fails to ingest or to validate is rolled back to the last good version in dvc.lock."""

from __future__ import annotations

from components.validation import DataValidationError, ValidationReport
from flows.data import dvc, layout, remote
from flows.phases.context import Run, ValidationSummary
from flows.tasks.data import dvc_repro, validate_data
from flows.tasks.specs import DataRef
from flows.tracking.tracker import dataset_inputs


def validate(run: Run) -> DataRef:
    root, cfg, tr = run.root, run.cfg, run.tracker
    if pulled := remote.pull_missing(root, cfg.data.name):  # a clone has the .dvc files, not the data
        run.log.info(f"pulled from the DVC remote: {', '.join(pulled)}")
    lock_before = dvc.read_lock(root)
    with tr.stage("validation") as rid:
        try:
            ran = dvc_repro(str(root), f"ingest@{cfg.data.name}")
            reports = [validate_data(str(root), cfg, "raw")]
            if reports[0].report.success:
                ran += dvc_repro(str(root), f"prepare@{cfg.data.name}")
                reports.append(validate_data(str(root), cfg, "splits"))
        except dvc.DvcError:
            dvc.restore(root, cfg.data.name, lock_before, log=run.log.info)
            raise
        for rep in reports:
            tr.json(rid, rep.as_json(), f"validation_{rep.phase}.json")
            tr.folder(rid, rep.docs_dir, f"data_docs_{rep.phase}")
        failures = [f for rep in reports for f in rep.report.failures]
        run.validation = ValidationSummary(not failures, sum(len(r.report.results) for r in reports), len(failures))
        tr.metrics(rid, {"expectations_evaluated": run.validation.evaluated, "expectations_failed": len(failures)})
        tr.tags(rid, {"dvc_stages_ran": ",".join(ran) or "none (up to date)", "validation_success": not failures})
        tr.tags(run.parent, {"validation_success": not failures})
        if failures:
            dvc.restore(root, cfg.data.name, lock_before, log=run.log.info)
            raise DataValidationError(
                ValidationReport(
                    success=False, failures=failures, results=[r for rep in reports for r in rep.report.results]
                )
            )
    run.lineage.dataset_hash = dvc.dataset_hash(root, cfg.data.name)
    tr.tags(run.parent, run.lineage.tags())
    tr.inputs(
        run.parent,
        dataset_inputs(
            layout.load_splits(root, cfg.data.name), layout.split_files(root, cfg.data.name), root, cfg.data.name
        ),
    )
    run.log.info(
        f"dataset {cfg.data.name} validated; hash {run.lineage.dataset_hash}; DVC stages run: "
        f"{ran or 'none (up to date)'}"
    )
    return data_ref(root, cfg, run.lineage.dataset_hash)


def data_ref(root, cfg, dataset_hash: str) -> DataRef:
    """What training stages read of the data: its prepared version and how to interpret it, nothing else (the
    data section's reading options and validation thresholds are behind the DVC hash or not read at all)."""
    return DataRef(
        root=str(root),
        name=cfg.data.name,
        dataset_hash=dataset_hash,
        kind=cfg.data.kind,
        classes=list(cfg.data.classes),
    )
