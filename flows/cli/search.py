"""`edgekd search`: recipes searched on Dask for the most accurate, fastest, smallest models; the pick registered."""

from __future__ import annotations

from flows.cli.common import add_dataset, add_set, checked_config, overrides, pipeline_errors, write_json
from flows.cli.exits import Exit


def add_parser(sub) -> None:
    se = sub.add_parser(
        "search",
        help="search recipes (width, depth, KD method, prune ratio, precision) for the "
        "most accurate, fastest, smallest models; register the pick",
    )
    add_dataset(se)
    se.add_argument(
        "--budget",
        default="15m",
        help="a wall time of trials (15m, 90s, 1h; over every run of the same "
        "study) or a number of finished trials (default 15m)",
    )
    se.add_argument(
        "--objectives",
        help="comma-separated, from accuracy (the gate metric), p95, size, energy "
        "(default: accuracy,p95,size, plus energy where RAPL measures it)",
    )
    se.add_argument(
        "--pick",
        choices=("latency", "accuracy", "size"),
        help="which front point to register (default: search.pick, latency: the fastest)",
    )
    se.add_argument(
        "--dask-address",
        metavar="tcp://HOST:PORT",
        help="a running Dask scheduler (default: search.dask_address, else a LocalCluster here)",
    )
    add_set(se)
    se.add_argument("--json", metavar="PATH", help="write the references, the chosen point and the front here")
    se.set_defaults(fn=cmd_search)


def cmd_search(args) -> int:
    from components.search import parse_budget, parse_objectives

    if args.pick:
        args.set = (args.set or []) + [f"search.pick={args.pick}"]
    with pipeline_errors("nothing was trained or registered"):
        cfg = checked_config(args)
        parse_budget(args.budget)
        parse_objectives(args.objectives, False)
        from flows.infra.prefect_server import shared_api
        from flows.pipelines.search import search, search_runner

        with shared_api():
            outcome = search.with_options(task_runner=search_runner(cfg, args.dask_address))(
                project_dir=args.project_dir,
                dataset=args.dataset,
                budget=args.budget,
                objectives=args.objectives,
                overrides=overrides(args),
            )
    print(outcome.summary, end="")
    if outcome.version:
        print(
            f"Registered {cfg.data.name} version {outcome.version} with alias 'staging'"
            + ("" if outcome.new_version else " (already registered: the same sha256)")
        )
    if args.json:
        write_json(args.json, outcome.json)
        print(f"search summary written to {args.json}")
    return Exit.OK if outcome.chosen else Exit.NOTHING_PASSED
