"""`edgekd run`: the pipeline once, or the last run's summary when nothing that decides it changed since."""

from __future__ import annotations

from pathlib import Path

from flows.cli.common import add_dataset, add_set, checked_config, config, overrides, pipeline_errors, write_json
from flows.cli.exits import Exit


def add_parser(sub) -> None:
    run = sub.add_parser("run", help="run the pipeline once")
    add_dataset(run)
    add_set(run)
    run.add_argument(
        "--json",
        metavar="PATH",
        help="also write the run summary (every candidate's val and test "
        "metrics, latency, size, gate verdict; what was registered) here",
    )
    run.add_argument(
        "--force",
        action="store_true",
        help="run the pipeline even when nothing changed since the "
        "last run (which otherwise just prints its summary again)",
    )
    run.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="trainings at once: the ones that do not wait on each other (the teacher and the plain student, the KD "
        "variants, the teacher views, the prunings) run side by side on a local Dask cluster of N single-threaded "
        "worker processes (default 0: one per CPU core); 1 runs them one after another in this process. Each "
        "training is single-threaded and seeded, so the weights are the same either way",
    )
    run.add_argument(
        "--dask-address", metavar="URL", help="a running Dask scheduler (tcp://HOST:8786) instead of a local cluster"
    )
    run.set_defaults(fn=cmd_run)


def up_to_date(args) -> int | None:
    """The last run's exit code, after printing its summary, when nothing that decides a run changed since (see
    flows/pipelines/uptodate.py); None when the pipeline has to run."""
    from components.config import ConfigError
    from flows.pipelines import uptodate

    try:
        cfg = config(args)
    except ConfigError:
        return None  # reported by the run
    record = None if args.force else uptodate.up_to_date(Path(args.project_dir).resolve(), cfg)
    if record is None:
        return None
    print(
        f"{cfg.data.name}: nothing changed since run {record.parent_run_id} of {record.when} (config, code, "
        f"data per `dvc status`, registry): its summary follows; --force runs the pipeline anyway\n"
        f"{record.summary}",
        end="",
    )
    if args.json:
        write_json(args.json, record.json_summary)
        print(f"run summary written to {args.json}")
    return record.exit_code


def runner(args, flow):
    """The flow on a Dask cluster (--dask-address, or --workers local processes) or, with one worker, as it is."""
    import os

    workers = args.workers or os.cpu_count() or 1
    if args.dask_address is None and workers <= 1:
        return flow
    from flows.infra.cluster import task_runner

    return flow.with_options(task_runner=task_runner(workers, args.dask_address))


def cmd_run(args) -> int:
    if (code := up_to_date(args)) is not None:
        return code
    from flows.infra.prefect_server import shared_api
    from flows.pipelines import uptodate
    from flows.pipelines.run import pipeline

    with pipeline_errors("nothing was trained or registered"):
        cfg = checked_config(args)
        with shared_api():
            outcome = runner(args, pipeline)(
                project_dir=args.project_dir, dataset=args.dataset, overrides=overrides(args)
            )
    print(outcome.summary, end="")
    if args.json:
        write_json(args.json, outcome.json)
        print(f"run summary written to {args.json}")
    code = Exit.OK if outcome.selected else Exit.NOTHING_PASSED
    uptodate.save(Path(args.project_dir).resolve(), cfg, outcome, code)
    return code
