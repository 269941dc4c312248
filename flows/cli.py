"""`edgekd`: run the pipeline, open the MLflow UI, serve on a schedule, promote, roll back, show the history."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from flows import dvc_remote, env, team

EXIT_NOTHING_PASSED, EXIT_BAD_DATA, EXIT_REFUSED, EXIT_BUSY, EXIT_UNREACHABLE = 2, 3, 4, 5, 6


def _overrides(args) -> dict:
    """`--set SECTION.KEY=VALUE` pairs as {"SECTION.KEY": value}, values parsed as YAML (4 -> int, true -> bool)."""
    import yaml

    from components.config import ConfigError

    out = {}
    for kv in getattr(args, "set", None) or []:
        key, sep, value = kv.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {kv!r}: expected SECTION.KEY=VALUE, e.g. student.epochs=100")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _config(args):
    from components.config import load_config

    return load_config(Path(args.project_dir) / "params.yaml", getattr(args, "dataset", None), _overrides(args))


def _checked_config(args):
    """The effective config with its KD methods resolved and its teacher file found: a bad params file, override,
    distill.* setting or teacher.source fails here, before any server starts."""
    from components.kd import resolve

    cfg = _config(args)
    resolve(cfg.distill, cfg.teacher)
    if cfg.teacher.source:
        from flows.pipeline import teacher_path

        teacher_path(Path(args.project_dir), cfg.teacher.source)
    return cfg


def write_json(path: str, obj: dict) -> None:
    from components.data.base import write_text

    write_text(Path(path), json.dumps(obj, indent=2, default=float) + "\n")


def up_to_date(args) -> int | None:
    """The last run's exit code, after printing its summary, when nothing that decides a run changed since (see
    flows/uptodate.py); None when the pipeline has to run."""
    from components.config import ConfigError
    from flows import uptodate

    try:
        cfg = _config(args)
    except ConfigError:
        return None  # reported by the run
    record = None if args.force else uptodate.up_to_date(Path(args.project_dir).resolve(), cfg)
    if record is None:
        return None
    print(f"{cfg.data.name}: nothing changed since run {record['parent_run_id']} of {record['when']} (config, code, "
          f"data per `dvc status`, registry): its summary follows; --force runs the pipeline anyway\n"
          f"{record['summary']}", end="")
    if args.json:
        write_json(args.json, record["json"])
        print(f"run summary written to {args.json}")
    return record["exit_code"]


def cmd_run(args) -> int:
    if (code := up_to_date(args)) is not None:
        return code
    from components.config import ConfigError
    from components.kd import KDConfigError
    from components.teachers import TeacherFileError
    from components.validation import DataValidationError
    from flows import uptodate
    from flows.pipeline import pipeline
    from flows.stages import DvcError

    try:
        cfg = _checked_config(args)
        outcome = pipeline(project_dir=args.project_dir, dataset=args.dataset, overrides=_overrides(args))
    except (ConfigError, KDConfigError, TeacherFileError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except DataValidationError as e:
        print(f"error: data validation failed; nothing was trained or registered, data/ is unchanged.\n{e}",
              file=sys.stderr)
        return EXIT_BAD_DATA
    except TimeoutError as e:  # after the task's bounded retries: another process holds a lock
        print(f"error: {e}; nothing was trained or registered, try again when it has finished", file=sys.stderr)
        return EXIT_BUSY
    except DvcError as e:
        if e.data_error is None:
            raise
        print(f"error: the data could not be ingested; nothing was trained or registered, data/ is unchanged.\n"
              f"{e.data_error}", file=sys.stderr)
        return EXIT_BAD_DATA
    print(outcome["summary"], end="")
    if args.json:
        write_json(args.json, outcome["json"])
        print(f"run summary written to {args.json}")
    code = 0 if outcome["selected"] else EXIT_NOTHING_PASSED
    uptodate.save(Path(args.project_dir).resolve(), cfg, outcome, code)
    return code


def cmd_bench_kd(args) -> int:
    from components.config import ConfigError
    from components.kd import KDConfigError
    from components.teachers import TeacherFileError
    from components.validation import DataValidationError
    from flows.bench import bench_kd
    from flows.stages import DvcError

    try:
        _checked_config(args)
        outcome = bench_kd(project_dir=args.project_dir, dataset=args.dataset, widths=args.widths, seeds=args.seeds,
                           methods=args.methods, labelled_fraction=args.labelled_fraction,
                           overrides=_overrides(args))
    except (ConfigError, KDConfigError, TeacherFileError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (DataValidationError, DvcError) as e:
        print(f"error: the dataset could not be prepared; nothing was trained.\n{e}", file=sys.stderr)
        return EXIT_BAD_DATA
    print(outcome["text"])
    if args.json:
        write_json(args.json, outcome["json"])
        print(f"bench results written to {args.json}")
    return 0


def cmd_search(args) -> int:
    from components.config import ConfigError
    from components.kd import KDConfigError
    from components.search import SearchConfigError, parse_budget, parse_objectives
    from components.teachers import TeacherFileError
    from components.validation import DataValidationError
    from flows.stages import DvcError

    if args.pick:
        args.set = (args.set or []) + [f"search.pick={args.pick}"]
    try:
        overrides = _overrides(args)
        cfg = _checked_config(args)
        parse_budget(args.budget)
        parse_objectives(args.objectives, False)
        from flows.search import search, task_runner
        from flows.server import shared_api

        with shared_api():
            outcome = search.with_options(task_runner=task_runner(cfg, args.dask_address))(
                project_dir=args.project_dir, dataset=args.dataset, budget=args.budget, objectives=args.objectives,
                overrides=overrides)
    except (ConfigError, KDConfigError, TeacherFileError, SearchConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (DataValidationError, DvcError) as e:
        print(f"error: the dataset could not be prepared; nothing was trained or registered.\n{e}", file=sys.stderr)
        return EXIT_BAD_DATA
    print(outcome["summary"], end="")
    if outcome["version"]:
        print(f"Registered {cfg.data.name} version {outcome['version']} with alias 'staging'"
              + ("" if outcome["json"]["registered"]["new_version"] else " (already registered: the same sha256)"))
    if args.json:
        write_json(args.json, outcome["json"])
        print(f"search summary written to {args.json}")
    return 0 if outcome["chosen"] else EXIT_NOTHING_PASSED


def cmd_bench_rerun(args) -> int:
    from flows.bench_rerun import bench_rerun, render

    result = bench_rerun(Path(args.project_dir).resolve(), args.dataset or _config(args).data.name, args.keep)
    print(render(result))
    if args.json:
        write_json(args.json, result)
        print(f"bench results written to {args.json}")
    return 0


def cmd_ui(args) -> int:
    uri = os.environ["MLFLOW_TRACKING_URI"]
    if uri.startswith("http"):  # a team's server: its UI is already there
        import webbrowser

        print(f"MLflow UI of the tracking server: {uri}")
        if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or sys.platform == "darwin":
            webbrowser.open(uri)  # not on a terminal-only machine, where it could start a text browser
        return 0
    cmd = ["mlflow", "ui", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port)]
    print(f"MLflow UI on http://{args.host}:{args.port} (store {uri}); Ctrl-C to stop")
    os.execvp(sys.executable, [sys.executable, "-m", *cmd])


DEFAULT_CRON = "0 2 * * *"
SERVE_FIRST_RUN_S = 15  # covers registering the deployment and the server's next scheduling pass (every 5 s)


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


def _positive(text: str) -> int:
    value = int(text) if text.strip().isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= 1")
    return value


def _runner(name: str):
    """The Prefect Runner that `flow.serve` runs, stopping on SIGTERM the way it does on Ctrl-C: Prefect 3.8's own
    SIGTERM handler calls the runner's async stop() without awaiting it and raises SystemExit mid event loop."""
    import signal

    from prefect.runner import Runner

    class StoppableRunner(Runner):
        def handle_sigterm(self, *args, **kwargs) -> None:
            signal.raise_signal(signal.SIGINT)  # asyncio.run's Ctrl-C path: cancel, pause the schedule, return

    # limit=1: two runs of one project at once would contend for DVC's lock and the same artifacts; a run due
    # while another one runs starts when it ends.
    return StoppableRunner(name=name, limit=1)


def cmd_serve(args) -> int:
    import asyncio
    from datetime import datetime, timedelta, timezone

    from components.config import ConfigError
    from flows.server import prefect_server, reap_children, sigterm_as_interrupt

    try:
        _config(args)  # a bad params file or --set fails now, not in every scheduled run
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    parameters = {"project_dir": str(Path(args.project_dir).resolve()), "dataset": args.dataset,
                  "overrides": _overrides(args) or None}
    os.makedirs(os.environ["PREFECT_HOME"], exist_ok=True)
    try:
        with sigterm_as_interrupt(), prefect_server(args.port):
            # Imported once PREFECT_API_URL points at the server, so the flow's client talks to it.
            from prefect.schedules import Cron, Interval

            from flows.pipeline import pipeline

            if args.interval:
                # Prefect anchors an interval at "now", so its first run would come one interval later; anchored
                # a little ahead, the first run starts right after `serve` does and then every SECONDS.
                start = datetime.now(timezone.utc) + timedelta(seconds=SERVE_FIRST_RUN_S)
                schedule = Interval(args.interval, anchor_date=start)
                when = f"every {args.interval} s from {start:%H:%M:%S} UTC"
            else:
                schedule, when = Cron(args.cron or DEFAULT_CRON), f"on cron '{args.cron or DEFAULT_CRON}'"
            # pipeline.serve(name, schedule=..., parameters=..., limit=1), but with a clean stop on SIGTERM.
            runner = _runner(args.name)
            runner.add_flow(pipeline, name=args.name, schedule=schedule, parameters=parameters)
            print(f"serving deployment 'edgekd-pipeline/{args.name}' {when} with parameters {parameters} "
                  f"(Ctrl-C: stop once a run in progress ends; twice: stop now)", flush=True)
            asyncio.run(runner.start())
    except KeyboardInterrupt:
        print("stopped serving", flush=True)
    finally:
        reap_children()
    return 0


def cmd_deploy(args) -> int:
    import time

    import yaml

    from flows.server import prefect, prefect_server, process_worker, reap_children, sigterm_as_interrupt

    root = Path(args.project_dir).resolve()
    spec = root / "prefect.yaml"
    if not spec.is_file():
        print(f"error: {spec} not found; `deploy` deploys the prefect.yaml of the project", file=sys.stderr)
        return 1
    deployments = yaml.safe_load(spec.read_text()).get("deployments") or []
    pools = sorted({d["work_pool"]["name"] for d in deployments})
    if len(pools) != 1:
        print(f"error: {spec}: expected the deployments on one work pool, found {pools}", file=sys.stderr)
        return 1
    pool = pools[0]
    if args.no_worker and not os.environ.get("PREFECT_API_URL"):
        print("error: --no-worker registers the deployment on a server that outlives this command: set "
              "PREFECT_API_URL or team.prefect_api_url to it", file=sys.stderr)
        return 1
    os.makedirs(os.environ["PREFECT_HOME"], exist_ok=True)
    try:
        with sigterm_as_interrupt(), prefect_server(args.port) as url:
            if prefect("work-pool", "inspect", pool, check=False).returncode != 0:
                prefect("work-pool", "create", pool, "--type", "process")
            prefect("--no-prompt", "deploy", "--all", cwd=root)
            if args.no_worker:  # a team's server: workers elsewhere run the flow runs
                for d in deployments:
                    print(f"deployed 'edgekd-pipeline/{d['name']}' to work pool {pool!r} on {url}; a worker with "
                          f"this project at {root} runs its flow runs:\n  PREFECT_API_URL={url} prefect worker start "
                          f"--pool {pool}")
                return 0
            with process_worker(pool, root) as worker:
                for d in deployments:
                    print(f"deployed 'edgekd-pipeline/{d['name']}' to work pool {pool!r}; run it with:\n"
                          f"  PREFECT_API_URL={url} prefect deployment run 'edgekd-pipeline/{d['name']}' "
                          f"[-p dataset=NAME]\n(Ctrl-C to stop the worker and the server)", flush=True)
                while worker.poll() is None:
                    time.sleep(1)
                print(f"error: the worker exited with {worker.returncode}; "
                      f"see {os.environ['PREFECT_HOME']}/worker.log", file=sys.stderr)
                return 1
    except KeyboardInterrupt:
        pass
    finally:
        reap_children()
    return 0


def _name(args) -> str:
    return args.model or _config(args).data.name


def cmd_promote(args) -> int:
    from components.gate import decide
    from flows import tracking

    policy = _config(args).gate

    def gate_check(candidate: dict, teacher: dict, production: dict | None, plain: dict | None):
        if not {"accuracy", "p95_ms", "size_bytes"} <= set(candidate) or "accuracy" not in teacher:
            raise tracking.PromotionError("the version carries no measured metrics; only versions registered by "
                                          "the pipeline can be promoted")
        return decide(candidate, teacher, production, policy, plain=plain)

    try:
        rec = tracking.promote(_name(args), str(args.version), gate_check)
    except tracking.PromotionError as e:
        print(f"refused: {e}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"{_name(args)}: production {rec['from'] or '(none)'} -> {rec['to']} by {rec['who']} at {rec['when']}")
    return 0


def cmd_rollback(args) -> int:
    from flows import tracking

    try:
        rec = tracking.rollback(_name(args))
    except tracking.PromotionError as e:
        print(f"refused: {e}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"{_name(args)}: production rolled back {rec['from']} -> {rec['to']} by {rec['who']} at {rec['when']}")
    return 0


def cmd_history(args) -> int:
    from mlflow.exceptions import MlflowException

    from flows import tracking

    name = _name(args)
    try:
        entries = tracking.history(name)
        aliases = tracking.client().get_registered_model(name).aliases
    except MlflowException as e:
        if tracking.unreachable(e):
            raise  # main() says so
        print(f"error: {e.message}", file=sys.stderr)
        return 1
    print(f"{name}: who moved 'production', oldest first")
    if not entries:
        print("  (never promoted)")
    for h in entries:
        move = f"{h['from'] or '(none)'} -> {h['to']}"
        outcome = f"REFUSED: {h['refused'].splitlines()[0]}" if "refused" in h else "done"
        print(f"  {h['when']}  {h['action']:<8}  {move:<12}  by {h['who']:<12}  {outcome}")
    print("now: " + (", ".join(f"{a} = version {v}" for a, v in sorted(aliases.items())) or "no aliases"))
    return 0


def cmd_predict(args) -> int:
    # No training code: the registry client, the ONNX file, its preprocessing spec and ONNX Runtime.
    from components.predict import predict, read_input
    from flows import tracking

    try:
        folder, spec, mv = tracking.fetch_verified(args.model, args.ref)
        raw = [read_input(spec, a) for a in args.inputs]
    except (tracking.PromotionError, tracking.IntegrityError, OSError, ValueError) as e:
        print(f"refused: {e}", file=sys.stderr)
        return EXIT_REFUSED
    for arg, out in zip(args.inputs, predict(folder / "model.onnx", spec, raw)):
        print(f"{out['label']}\t{out['probability']:.4f}\t{arg}")
    return 0


def cmd_data_add(args) -> int:
    from components.config import ConfigError
    from components.data import DataError
    from flows.data_add import add_dataset

    options = {}
    for kv in args.option or []:
        key, sep, value = kv.partition("=")
        if not sep:
            print(f"error: --option {kv!r}: expected KEY=VALUE", file=sys.stderr)
            return 1
        import yaml

        options[key] = yaml.safe_load(value)  # numbers, booleans, lists and mappings as in YAML
    try:
        section = add_dataset(Path(args.project_dir), args.name, args.kind, args.source, args.root,
                              args.classes.split(",") if args.classes else None, options, args.unlabelled,
                              _overrides(args))
    except (ConfigError, DataError, ValueError) as e:
        print(f"error: {e}\nnothing was added.", file=sys.stderr)
        return EXIT_BAD_DATA
    if section["inferred"]:
        print(f"{section['inferred']} (recorded in datasets.{args.name}.options; --option overrides it)")
    if section["splits_from_source"]:
        print(f"splits kept as the source has them: {', '.join(section['splits_from_source'])}")
    gate = ", ".join(f"{k} {v}" for k, v in section["overrides"]["gate"].items())
    print(f"gate of {args.name!r}: {gate} (datasets.{args.name}.overrides.gate; tighten it there or with "
          f"edgekd run --set gate.KEY=VALUE)")
    pool = f", {section['unlabelled_samples']} unlabelled samples" if "unlabelled_samples" in section else ""
    print(f"added dataset {args.name!r}: {section['samples']} samples, classes {section['classes']}{pool}; "
          f"run it with: edgekd run --dataset {args.name}")
    if section["push"]:
        print(section["push"], file=sys.stdout if section["pushed"] else sys.stderr)
    return 0


def cmd_data_remove(args) -> int:
    from components.config import ConfigError
    from flows.data_remove import plan_removal, remove_dataset

    try:
        plan = plan_removal(Path(args.project_dir), args.name)
    except ConfigError as e:
        print(f"refused: {e}; nothing was removed", file=sys.stderr)
        return EXIT_REFUSED
    print(f"to remove: {plan.describe()}")
    if not args.yes:
        if not sys.stdin.isatty():
            print("refused: no terminal to confirm on; pass --yes to remove without asking; nothing was removed",
                  file=sys.stderr)
            return EXIT_REFUSED
        if input(f"remove dataset {args.name!r}? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing was removed")
            return EXIT_REFUSED
    try:
        remove_dataset(plan)
    except (OSError, RuntimeError) as e:
        print(f"error: {e}\n{args.name!r} is still in params.yaml; run `edgekd data remove {args.name}` again "
              f"once this is fixed, to finish", file=sys.stderr)
        return 1
    print(f"removed dataset {args.name!r}")
    for p in plan.kept:
        print(f"kept on disk: {p} (your data; delete it yourself if you no longer need it)")
    print(f"the registered model {args.name!r} and its history stay in MLflow: "
          f"`edgekd predict {args.name} INPUT...` still works")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgekd", description=__doc__)
    p.add_argument("--project-dir", default=".", help="project root holding params.yaml, dvc.yaml, data/, mlruns/")
    sub = p.add_subparsers(dest="command", required=True)
    dataset_help = "a key of `datasets` in params.yaml (default: its `dataset`)"
    server_port_help = "port of the local Prefect server started when PREFECT_API_URL is unset"
    run = sub.add_parser("run", help="run the pipeline once")
    set_help = ("override a stage key for this run, SECTION.KEY=VALUE (repeatable), e.g. distill.dkd.beta=4; "
                "logged with the effective config")
    run.add_argument("--dataset", help=dataset_help)
    run.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help=set_help)
    run.add_argument("--json", metavar="PATH", help="also write the run summary (every candidate's val and test "
                                                    "metrics, latency, size, gate verdict; what was registered) here")
    run.add_argument("--force", action="store_true", help="run the pipeline even when nothing changed since the "
                                                          "last run (which otherwise just prints its summary again)")
    run.set_defaults(fn=cmd_run)
    bench = sub.add_parser("bench", help="benchmarks (not tests): kd compares KD methods against the plain student")
    bsub = bench.add_subparsers(dest="bench_command", required=True)
    bk = bsub.add_parser("kd", help="train the teacher, then every width x method x seed student and the "
                                    "equal-budget plain student; report mean ± std and teacher-gap recovery")
    bk.add_argument("--dataset", help=dataset_help)
    bk.add_argument("--widths", type=_ints, default=None, metavar="W,W,...",
                    help="student widths (default: the dataset's student.width)")
    bk.add_argument("--seeds", type=_positive, default=3, metavar="N", help="seeds per width and method (default 3)")
    bk.add_argument("--methods", type=lambda t: [m.strip() for m in t.split(",") if m.strip()], default=None,
                    metavar="A,B,...", help="KD methods (default: every method the data allows); 'plain' is "
                                            "always trained")
    bk.add_argument("--labelled-fraction", type=_fraction, default=1.0, metavar="F",
                    help="keep the labels of a stratified fraction F of train; the rest becomes the unlabelled pool")
    bk.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                    help=set_help.replace("for this run", "for the benchmark"))
    bk.add_argument("--json", metavar="PATH", help="write the rows and the teacher's accuracy here")
    bk.set_defaults(fn=cmd_bench_kd)
    br = bsub.add_parser("rerun", help="time `edgekd run` twice in a row in a fresh clone of the project (HEAD): "
                                       "the first run against a no-change re-run, as a ratio")
    br.add_argument("--dataset", help=dataset_help)
    br.add_argument("--keep", action="store_true", help="keep the clone (its logs, store and data) for inspection")
    br.add_argument("--json", metavar="PATH", help="write both wall times, the ratio and the version counts here")
    br.set_defaults(fn=cmd_bench_rerun)
    se = sub.add_parser("search", help="search recipes (width, depth, KD method, prune ratio, precision) for the "
                                       "most accurate, fastest, smallest models; register the pick")
    se.add_argument("--dataset", help=dataset_help)
    se.add_argument("--budget", default="15m", help="a wall time of trials (15m, 90s, 1h; over every run of the same "
                                                    "study) or a number of finished trials (default 15m)")
    se.add_argument("--objectives", help="comma-separated, from accuracy (the gate metric), p95, size, energy "
                                         "(default: accuracy,p95,size, plus energy where RAPL measures it)")
    se.add_argument("--pick", choices=("latency", "accuracy", "size"),
                    help="which front point to register (default: search.pick, latency: the fastest)")
    se.add_argument("--dask-address", metavar="tcp://HOST:PORT",
                    help="a running Dask scheduler (default: search.dask_address, else a LocalCluster here)")
    se.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help=set_help)
    se.add_argument("--json", metavar="PATH", help="write the references, the chosen point and the front here")
    se.set_defaults(fn=cmd_search)

    ui = sub.add_parser("ui", help="open the MLflow UI on the project's store")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(fn=cmd_ui)
    sv = sub.add_parser("serve", help="serve the flow as a Prefect deployment on a schedule (cron or interval)")
    sv.add_argument("--dataset", help=dataset_help)
    when = sv.add_mutually_exclusive_group()
    when.add_argument("--cron", help=f"cron expression (default: '{DEFAULT_CRON}', nightly at 02:00)")
    when.add_argument("--interval", type=_positive, metavar="SECONDS",
                      help=f"run every SECONDS instead, the first run about {SERVE_FIRST_RUN_S} s after start")
    sv.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                    help=set_help.replace("for this run", "for every scheduled run"))
    sv.add_argument("--name", default="edgekd-nightly", help="deployment name")
    sv.add_argument("--port", type=int, default=4200, help=server_port_help)
    sv.set_defaults(fn=cmd_serve)
    dp = sub.add_parser("deploy", help="deploy prefect.yaml to its work pool and run a process worker for it")
    dp.add_argument("--port", type=int, default=4200, help=server_port_help)
    dp.add_argument("--no-worker", action="store_true", help="register the deployment and return, for a shared "
                                                             "server whose workers run elsewhere")
    dp.set_defaults(fn=cmd_deploy)
    pr = sub.add_parser("promote", help="move the 'production' alias to a version, after the gate passes again")
    pr.add_argument("version", help="registered model version")
    pr.add_argument("--model", help="registered model name (default: the dataset's name)")
    pr.add_argument("--dataset", help=dataset_help + "; its gate policy is checked")
    pr.set_defaults(fn=cmd_promote)
    rb = sub.add_parser("rollback", help="give 'production' back to the version that held it before")
    rb.add_argument("--model", help="registered model name (default: the dataset's name)")
    rb.add_argument("--dataset", help=dataset_help)
    rb.set_defaults(fn=cmd_rollback)
    hi = sub.add_parser("history", help="which version held 'production' when, who moved it, refused attempts")
    hi.add_argument("--model", help="registered model name (default: the dataset's name)")
    hi.add_argument("--dataset", help=dataset_help)
    hi.set_defaults(fn=cmd_history)
    data = sub.add_parser("data", help="manage datasets").add_subparsers(dest="data_command", required=True)
    da = data.add_parser("add", help="put a dataset under DVC and add it to params.yaml")
    da.add_argument("name", help="dataset name (also the registered model's name)")
    da.add_argument("--kind", required=True, help="data kind: image, audio, text or tabular")
    da.add_argument("--source", required=True, help="file or folder, relative to --root")
    da.add_argument("--root", default="data/external", help="data root, relative to the project")
    da.add_argument("--classes", help="comma-separated label set in index order (default: the labels found)")
    da.add_argument("--option", action="append", help="kind option KEY=VALUE (repeatable)")
    da.add_argument("--unlabelled", metavar="PATH", help="an unlabelled pool of the same kind, relative to --root "
                                                         "(for distill methods that use one, e.g. pseudo_label)")
    da.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                    help="a stage key recorded in the dataset's overrides (repeatable), e.g. gate.min_accuracy=0.9 "
                         "on top of the relative gate a new dataset gets")
    da.set_defaults(fn=cmd_data_add)
    dvc_remote.add_parser(data)
    dr = data.add_parser("remove", help="take a dataset out of params.yaml, dvc.lock and data/ (its registered "
                                        "model stays; its source file stays on disk)")
    dr.add_argument("name", help="a key of `datasets` in params.yaml, not the default `dataset`")
    dr.add_argument("--yes", action="store_true", help="remove without asking (needed without a terminal)")
    dr.set_defaults(fn=cmd_data_remove)
    team.add_parser(sub)
    pd_ = sub.add_parser("predict", help="predict raw inputs with a registered model (ONNX Runtime + its spec only)")
    pd_.add_argument("model", help="registered model name (the dataset's name)")
    pd_.add_argument("inputs", nargs="+", help="image or wav files, text lines, or CSV rows of features")
    pd_.add_argument("--ref", default="staging", help="a version number or an alias (default: staging)")
    pd_.set_defaults(fn=cmd_predict)
    return p


# Commands that start processes (a Prefect server, a worker, flow runs): a watchdog ends them if the command is
# killed. Only from the command line (argv None): a test calling main() in-process has its own clean-up.
GUARDED = {"run", "bench", "search", "serve", "deploy"}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    env.configure(args.project_dir)
    if argv is None and args.command in GUARDED:
        from flows.reaper import guard

        guard()
    try:
        return args.fn(args)
    except Exception as e:
        uri = os.environ["MLFLOW_TRACKING_URI"]
        # SQLite waits up to 20 s for a writer (MLflow sets busy_timeout), then gives up: say so, don't trace.
        if "database is locked" in str(e):
            print(f"error: the MLflow store {uri} stayed locked by another process beyond SQLite's 20 s busy "
                  "timeout; this command stopped there, try again", file=sys.stderr)
            return EXIT_BUSY
        from flows.tracking import unreachable  # here: it imports MLflow, which most commands load later or never

        if uri.startswith("http") and unreachable(e):
            print(f"error: the MLflow tracking server {uri} stopped answering (each request was retried "
                  f"{os.environ['MLFLOW_HTTP_REQUEST_MAX_RETRIES']} times); this command stopped there. A model "
                  "version it had begun to register stays incomplete: nothing uses it, and the next run deletes it. "
                  "When the server is back, run the command again: finished stages are reused from the cache.\n"
                  f"  (... {str(e).splitlines()[0][-160:]})", file=sys.stderr)  # the end names the cause
            return EXIT_UNREACHABLE
        raise


if __name__ == "__main__":
    sys.exit(main())
