"""`edgekd ui`, `serve` and `deploy`: the MLflow UI, the pipeline on a schedule, and the pipeline deployed to a
Prefect work pool."""

from __future__ import annotations

import os
import sys
from datetime import UTC
from pathlib import Path

from flows.cli.bench import positive
from flows.cli.common import SET_HELP, add_dataset, add_set, config, error, overrides
from flows.cli.exits import Exit

DEFAULT_CRON = "0 2 * * *"
SERVE_FIRST_RUN_S = 15  # covers registering the deployment and the server's next scheduling pass (every 5 s)
SERVER_PORT_HELP = "port of the local Prefect server started when PREFECT_API_URL is unset"


def add_parsers(sub) -> None:
    ui = sub.add_parser("ui", help="open the MLflow UI on the project's store")
    ui.add_argument("--host", default="127.0.0.1", help="address the UI listens on (default 127.0.0.1)")
    ui.add_argument("--port", type=int, default=5000, help="port of the UI (default 5000)")
    ui.set_defaults(fn=cmd_ui)
    sv = sub.add_parser("serve", help="serve the flow as a Prefect deployment on a schedule (cron or interval)")
    add_dataset(sv)
    when = sv.add_mutually_exclusive_group()
    when.add_argument("--cron", help=f"cron expression (default: '{DEFAULT_CRON}', nightly at 02:00)")
    when.add_argument(
        "--interval",
        type=positive,
        metavar="SECONDS",
        help=f"run every SECONDS instead, the first run about {SERVE_FIRST_RUN_S} s after start",
    )
    add_set(sv, SET_HELP.replace("for this run", "for every scheduled run"))
    sv.add_argument("--name", default="edgekd-nightly", help="deployment name")
    sv.add_argument("--port", type=int, default=4200, help=SERVER_PORT_HELP)
    sv.set_defaults(fn=cmd_serve)
    dp = sub.add_parser("deploy", help="deploy prefect.yaml to its work pool and run a process worker for it")
    dp.add_argument("--port", type=int, default=4200, help=SERVER_PORT_HELP)
    dp.add_argument(
        "--no-worker",
        action="store_true",
        help="register the deployment and return, for a shared server whose workers run elsewhere",
    )
    dp.set_defaults(fn=cmd_deploy)


def cmd_ui(args) -> int:
    uri = os.environ["MLFLOW_TRACKING_URI"]
    if uri.startswith("http"):  # a team's server: its UI is already there
        import webbrowser

        print(f"MLflow UI of the tracking server: {uri}")
        if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or sys.platform == "darwin":
            webbrowser.open(uri)  # not on a terminal-only machine, where it could start a text browser
        return Exit.OK
    cmd = ["mlflow", "ui", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port)]
    print(f"MLflow UI on http://{args.host}:{args.port} (store {uri}); Ctrl-C to stop")
    os.execvp(sys.executable, [sys.executable, "-m", *cmd])


def _runner(name: str):
    """The Prefect Runner that `flow.serve` runs, whose SIGTERM goes to edgekd's handler (signals.py) rather than
    Prefect 3.8's own, which calls the runner's async stop() without awaiting it and raises SystemExit mid event
    loop."""
    import signal

    from prefect.runner import Runner

    from flows.infra.signals import received

    class StoppableRunner(Runner):
        def handle_sigterm(self, *args, **kwargs) -> None:
            received(signal.SIGTERM)

    # limit=1: two runs of one project at once would contend for DVC's lock and the same artifacts; a run due
    # while another one runs starts when it ends.
    return StoppableRunner(name=name, limit=1)


def _stop(runner):
    """The first signal's action while serving: cancel the flow run in progress (Prefect marks it Cancelled and
    ends its process), pause the schedule and return from runner.start()."""
    import asyncio

    loop = asyncio.get_running_loop()  # the handler runs in the main thread, inside the runner's event loop

    def stop(signum: int) -> None:
        loop.call_soon_threadsafe(lambda: loop.create_task(runner.astop()))

    return stop


def _schedule(args):
    """The schedule asked for, and how to say it. Prefect anchors an interval at "now", so its first run would come
    one interval later; anchored a little ahead, the first run starts right after `serve` does."""
    from datetime import datetime, timedelta

    from prefect.schedules import Cron, Interval

    if args.interval:
        start = datetime.now(UTC) + timedelta(seconds=SERVE_FIRST_RUN_S)
        return Interval(args.interval, anchor_date=start), f"every {args.interval} s from {start:%H:%M:%S} UTC"
    return Cron(args.cron or DEFAULT_CRON), f"on cron '{args.cron or DEFAULT_CRON}'"


def cmd_serve(args) -> int:
    import asyncio

    from components.config import ConfigError
    from flows.infra.prefect_server import prefect_server
    from flows.infra.processes import reap_children
    from flows.infra.signals import on_first_signal

    try:
        config(args)  # a bad params file or --set fails now, not in every scheduled run
    except ConfigError as e:
        error(f"error: {e}")
        return Exit.ERROR
    parameters = {
        "project_dir": str(Path(args.project_dir).resolve()),
        "dataset": args.dataset,
        "overrides": overrides(args) or None,
    }
    os.makedirs(os.environ["PREFECT_HOME"], exist_ok=True)
    try:
        with prefect_server(args.port):
            # Imported once PREFECT_API_URL points at the server, so the flow's client talks to it.
            from flows.pipelines.run import pipeline

            schedule, when = _schedule(args)
            # pipeline.serve(name, schedule=..., parameters=..., limit=1), but with a clean stop on SIGTERM.
            runner = _runner(args.name)
            runner.add_flow(pipeline, name=args.name, schedule=schedule, parameters=parameters)
            print(
                f"serving deployment 'edgekd-pipeline/{args.name}' {when} with parameters {parameters} "
                f"(Ctrl-C or SIGTERM: cancel a run in progress and stop)",
                flush=True,
            )

            async def serve():
                with on_first_signal(_stop(runner)):
                    await runner.start()

            asyncio.run(serve())
    except KeyboardInterrupt:
        print("stopped serving", flush=True)
    finally:
        reap_children()
    return Exit.OK


def _pool(spec: Path) -> tuple[list[dict], str]:
    """The deployments of prefect.yaml and their one work pool; ValueError naming the problem."""
    import yaml

    if not spec.is_file():
        raise ValueError(f"{spec} not found; `deploy` deploys the prefect.yaml of the project")
    deployments = yaml.safe_load(spec.read_text()).get("deployments") or []
    pools = sorted({d["work_pool"]["name"] for d in deployments})
    if len(pools) != 1:
        raise ValueError(f"{spec}: expected the deployments on one work pool, found {pools}")
    return deployments, pools[0]


def cmd_deploy(args) -> int:
    from flows.infra.processes import reap_children

    root = Path(args.project_dir).resolve()
    try:
        deployments, pool = _pool(root / "prefect.yaml")
    except ValueError as e:
        error(f"error: {e}")
        return Exit.ERROR
    if args.no_worker and not os.environ.get("PREFECT_API_URL"):
        error(
            "error: --no-worker registers the deployment on a server that outlives this command: set "
            "PREFECT_API_URL or team.prefect_api_url to it"
        )
        return Exit.ERROR
    os.makedirs(os.environ["PREFECT_HOME"], exist_ok=True)
    try:
        return _deploy(args, root, deployments, pool)
    except KeyboardInterrupt:
        pass
    finally:
        reap_children()
    return Exit.OK


def _deploy(args, root: Path, deployments: list[dict], pool: str) -> int:
    """Deploy to `pool` on the server (created if need be), then hand the runs to workers elsewhere (--no-worker)
    or run a process worker here until it stops."""
    import time

    from flows.infra.prefect_server import prefect, prefect_server, process_worker

    with prefect_server(args.port) as url:
        if prefect("work-pool", "inspect", pool, check=False).returncode != 0:
            prefect("work-pool", "create", pool, "--type", "process")
        prefect("--no-prompt", "deploy", "--all", cwd=root)
        if args.no_worker:  # a team's server: workers elsewhere run the flow runs
            for d in deployments:
                print(
                    f"deployed 'edgekd-pipeline/{d['name']}' to work pool {pool!r} on {url}; a worker with "
                    f"this project at {root} runs its flow runs:\n  PREFECT_API_URL={url} prefect worker start "
                    f"--pool {pool}"
                )
            return Exit.OK
        with process_worker(pool, root) as worker:
            for d in deployments:
                print(
                    f"deployed 'edgekd-pipeline/{d['name']}' to work pool {pool!r}; run it with:\n"
                    f"  PREFECT_API_URL={url} prefect deployment run 'edgekd-pipeline/{d['name']}' "
                    f"[-p dataset=NAME]\n(Ctrl-C to stop the worker and the server)",
                    flush=True,
                )
            while worker.poll() is None:
                time.sleep(1)
            error(f"error: the worker exited with {worker.returncode}; see {os.environ['PREFECT_HOME']}/worker.log")
            return Exit.ERROR
