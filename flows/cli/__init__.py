"""edgekd compresses neural networks for edge devices: run the pipeline, benchmark, search, open the MLflow UI,
serve on a schedule, deploy, promote, roll back, show the history, predict, manage datasets and a team's servers.

One module per command group; the exit codes are in exits.py."""

from __future__ import annotations

import argparse
import os
import sys

from flows.cli import bench, data, device, registry, run, search, serve, team
from flows.cli.exits import Exit
from flows.infra.environment import configure

# Commands that start processes (a Prefect server, a worker, flow runs, Dask workers): SIGTERM and SIGINT stop them
# within seconds (flows/infra/signals.py), and a watchdog ends what they started if they are killed. Only from the
# command line (argv None): a test calling main() in-process has its own clean-up.
GUARDED = {"run", "bench", "search", "serve", "deploy", "reproduce"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgekd", description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("--project-dir", default=".", help="project root holding params.yaml, dvc.yaml, data/, mlruns/")
    sub = p.add_subparsers(dest="command", required=True)
    run.add_parser(sub)
    bench.add_parser(sub)
    search.add_parser(sub)
    serve.add_parsers(sub)
    registry.add_parsers(sub)
    data.add_parsers(sub)
    team.add_parser(sub)
    device.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from flows.cli.common import Failed

    args = parser().parse_args(argv)
    if args.command == "device":  # the agent's install has no project, Prefect or MLflow to set up
        return int(args.fn(args))
    configure(args.project_dir)
    if argv is None and args.command in GUARDED:
        from flows.infra import signals
        from flows.infra.watchdog import guard

        guard()
        signals.install()
    try:
        return int(args.fn(args))
    except Failed as e:
        return e.code
    except KeyboardInterrupt as e:
        from flows.infra import signals

        code = getattr(e, "exit_code", 130)
        print(
            f"{args.command} stopped ({e or 'interrupted'}): nothing half-registered; finished stages are cached, the "
            "same command resumes from there",
            file=sys.stderr,
        )
        signals.finish(code)
        return code
    except Exception as e:
        if (code := _store_failure(e)) is not None:
            return code
        raise


def _store_failure(e: Exception) -> int | None:
    """The exit code of an MLflow store that stayed locked or a tracking server that stopped answering, after
    saying so; None for any other error."""
    uri = os.environ["MLFLOW_TRACKING_URI"]
    # SQLite waits up to 20 s for a writer (MLflow sets busy_timeout), then gives up: say so, don't trace.
    if "database is locked" in str(e):
        print(
            f"error: the MLflow store {uri} stayed locked by another process beyond SQLite's 20 s busy "
            "timeout; this command stopped there, try again",
            file=sys.stderr,
        )
        return Exit.BUSY
    from flows.tracking.errors import denied, unreachable  # here: they import MLflow, loaded later or never

    if why := denied(e):
        print(f"error: the MLflow server {uri} refused this: {why}; that request changed nothing", file=sys.stderr)
        return Exit.REFUSED
    if uri.startswith("http") and unreachable(e):
        print(
            f"error: the MLflow tracking server {uri} stopped answering (each request was retried "
            f"{os.environ['MLFLOW_HTTP_REQUEST_MAX_RETRIES']} times); this command stopped there. A model "
            "version it had begun to register stays incomplete: nothing uses it, and the next run deletes it. "
            "When the server is back, run the command again: finished stages are reused from the cache.\n"
            f"  (... {str(e).splitlines()[0][-160:]})",
            file=sys.stderr,
        )  # the end names the cause
        return Exit.UNREACHABLE
    return None
