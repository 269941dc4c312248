"""`edgekd bench kd`, `bench rerun` and `bench soak`: benchmarks, not tests."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from flows.cli.common import (
    DATASET_HELP,
    SET_HELP,
    add_dataset,
    add_set,
    checked_config,
    config,
    overrides,
    pipeline_errors,
    write_json,
)
from flows.cli.exits import Exit


def _ints(text: str) -> list[int]:
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated whole numbers >= 1, e.g. 2,4,8")
    return values


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a fraction in (0, 1], e.g. 0.1")
    return value


def positive(text: str) -> int:
    value = int(text) if text.strip().isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= 1")
    return value


def add_parser(sub) -> None:
    bench = sub.add_parser("bench", help="benchmarks (not tests): kd compares KD methods against the plain student")
    bsub = bench.add_subparsers(dest="bench_command", required=True)
    _add_kd(bsub)
    br = bsub.add_parser(
        "rerun",
        help="time `edgekd run` twice in a row in a fresh clone of the project (HEAD): "
        "the first run against a no-change re-run, as a ratio",
    )
    add_dataset(br)
    br.add_argument("--keep", action="store_true", help="keep the clone (its logs, store and data) for inspection")
    br.add_argument("--json", metavar="PATH", help="write both wall times, the ratio and the version counts here")
    br.set_defaults(fn=cmd_bench_rerun)
    _add_soak(bsub)


def _add_kd(bsub) -> None:
    bk = bsub.add_parser(
        "kd",
        help="train the teacher, then every width x method x seed x split student and the "
        "equal-budget plain student; report mean ± std, each method's paired gain over plain with its 95% "
        "interval over splits (test items' sampling variance included) and verdict (Holm over the methods of a "
        "width), and teacher-gap recovery",
    )
    add_dataset(bk, DATASET_HELP)
    bk.add_argument(
        "--widths",
        type=_ints,
        default=None,
        metavar="W,W,...",
        help="student widths (default: the dataset's student.width)",
    )
    bk.add_argument(
        "--seeds", type=positive, default=5, metavar="N", help="seeds per width, method and split (default 5)"
    )
    bk.add_argument(
        "--splits",
        type=positive,
        default=1,
        metavar="K",
        help="draw train and val K times (stratified, seeded; test fixed), a teacher on each, so that the method "
        "chosen on val is the best over seeds x splits, not tuned to one split; the intervals and verdicts are "
        "over splits, so they need K >= 2 (default 1: the prepared split, no verdict)",
    )
    bk.add_argument(
        "--methods",
        type=lambda t: [m.strip() for m in t.split(",") if m.strip()],
        default=None,
        metavar="A,B,...",
        help="KD methods (default: every method the data allows); 'plain' is always trained",
    )
    bk.add_argument(
        "--labelled-fraction",
        type=_fraction,
        default=1.0,
        metavar="F",
        help="keep the labels of a stratified fraction F of train; the rest becomes the unlabelled pool",
    )
    bk.add_argument(
        "--workers",
        type=positive,
        default=None,
        metavar="N",
        help="students trained at once, on Dask worker processes of one thread each (default: one per "
        "CPU core); 1 trains them one after another in this process. The numbers are the same "
        "either way for the same seeds",
    )
    add_set(bk, SET_HELP.replace("for this run", "for the benchmark"))
    bk.add_argument(
        "--json",
        metavar="PATH",
        help="write the conditions, every student's accuracies and test items, the paired differences, intervals, "
        "Holm-adjusted p-values and verdicts here",
    )
    bk.set_defaults(fn=cmd_bench_kd)


def _add_soak(bsub) -> None:
    bs = bsub.add_parser(
        "soak",
        help="run the scheduled pipeline N times through `edgekd serve` and check that no long-lived process "
        "grows run over run (RSS, open files, threads, children, database connections)",
    )
    bs.add_argument("--runs", type=positive, default=20, metavar="N", help="completed scheduled runs (default 20)")
    bs.add_argument(
        "--schedule",
        type=positive,
        default=30,
        metavar="SECONDS",
        help="the serve interval (default 30); longer than one run leaves an idle moment to sample in",
    )
    bs.add_argument("--port", type=int, default=4201, help="port of the local Prefect server `serve` starts")
    add_dataset(bs)
    add_set(bs, SET_HELP.replace("for this run", "for every scheduled run"))
    bs.add_argument("--json", metavar="PATH", help="write the samples and the growth per quantity here")
    bs.set_defaults(fn=cmd_bench_soak)


def cmd_bench_kd(args) -> int:
    from flows.infra.cluster import task_runner
    from flows.infra.prefect_server import shared_api
    from flows.pipelines.bench_kd import bench_kd

    workers = args.workers or os.cpu_count() or 1
    with pipeline_errors("nothing was trained"):
        checked_config(args)
        kwargs = dict(
            project_dir=args.project_dir,
            dataset=args.dataset,
            widths=args.widths,
            seeds=args.seeds,
            splits=args.splits,
            methods=args.methods,
            labelled_fraction=args.labelled_fraction,
            overrides=overrides(args),
            workers=workers,
        )
        if workers > 1:
            with shared_api():  # the Dask workers report their task runs to the same Prefect server
                text, result = bench_kd.with_options(task_runner=task_runner(workers, None))(**kwargs)
        else:
            text, result = bench_kd(**kwargs)
    print(text)
    if args.json:
        write_json(args.json, result.as_json())
        print(f"bench results written to {args.json}")
    return Exit.OK


def cmd_bench_rerun(args) -> int:
    from flows.pipelines.bench_rerun import bench_rerun, render

    result = bench_rerun(Path(args.project_dir).resolve(), args.dataset or config(args).data.name, args.keep)
    print(render(result))
    if args.json:
        write_json(args.json, result.as_json())
        print(f"bench results written to {args.json}")
    return Exit.OK


def cmd_bench_soak(args) -> int:
    from components.config import ConfigError
    from components.soak import MIN_FIT, WARMUP, growth_table, table
    from flows.cli.common import error
    from flows.infra.processes import ServerStartError
    from flows.pipelines.soak import SoakError, soak

    if args.runs < WARMUP + MIN_FIT:
        error(
            f"error: --runs {args.runs}: a soak needs at least {WARMUP + MIN_FIT} runs (a warm-up of {WARMUP}, then "
            f"{MIN_FIT} to fit each slope to)"
        )
        return Exit.ERROR
    try:
        config(args)  # a bad params file or --set fails now, not in every scheduled run
    except ConfigError as e:
        error(f"error: {e}")
        return Exit.ERROR
    serve_args = (["--dataset", args.dataset] if args.dataset else []) + [
        a for kv in args.set or [] for a in ("--set", kv)
    ]
    root = Path(args.project_dir).resolve()
    try:
        result = soak(root, args.runs, args.schedule, args.port, serve_args, log=lambda m: print(m, flush=True))
    except (SoakError, ServerStartError) as e:
        error(f"error: {e}")
        return Exit.ERROR
    print(f"\n{table(result.samples)}\n\n{growth_table(result.growth)}")
    if args.json:
        write_json(
            args.json,
            {"samples": [s.model_dump() for s in result.samples], "growth": [g.model_dump() for g in result.growth]},
        )
        print(f"soak results written to {args.json}")
    if result.grows:
        error(f"error: grows run over run: {', '.join(result.grows)} (serve's log: {result.log})")
        return Exit.ERROR
    print(f"nothing but artifact storage grew over {args.runs} runs")
    return Exit.OK
