"""`edgekd team up|down|status`: the shared servers of a team, on this machine (flows/infra/team)."""

from __future__ import annotations

from pathlib import Path

from flows.cli.common import error
from flows.cli.exits import Exit

DIR_HELP = "the team's folder (data, logs, password, team.env), relative to --project-dir (default .edgekd/team)"


def add_parser(sub) -> None:
    team = sub.add_parser(
        "team",
        help="start, stop or check the shared servers of a team on this machine: "
        "PostgreSQL, an MLflow server and a Prefect server",
    )
    tsub = team.add_subparsers(dest="team_command", required=True)
    tu = tsub.add_parser(
        "up",
        help="start the servers not running; print and write the settings clients source "
        "(idempotent; a setting not given is the one the team last ran with)",
    )
    tu.add_argument("--dir", default=".edgekd/team", help=DIR_HELP)
    tu.add_argument(
        "--host",
        default=None,
        help="address the servers bind to (default 127.0.0.1: this machine "
        "only; 0.0.0.0: every machine that can reach this one)",
    )
    tu.add_argument(
        "--advertise",
        default=None,
        help="the host name clients use in the URLs (default: --host, or this machine's name when --host is 0.0.0.0)",
    )
    tu.add_argument("--pg-port", type=int, default=None, help="PostgreSQL's port (default 5432)")
    tu.add_argument("--mlflow-port", type=int, default=None, help="the MLflow server's port (default 5000)")
    tu.add_argument("--prefect-port", type=int, default=None, help="the Prefect server's port (default 4200)")
    tu.add_argument(
        "--artifacts-destination",
        default=None,
        help="where the MLflow server stores artifacts it proxies (default TEAM_DIR/artifacts; e.g. "
        "s3://bucket/path for a shared bucket, with AWS credentials in this environment)",
    )
    tu.set_defaults(fn=cmd_team_up)
    td = tsub.add_parser("down", help="stop the servers; their data stays in --dir (delete it to delete the data)")
    td.add_argument("--dir", default=".edgekd/team", help=DIR_HELP)
    td.set_defaults(fn=cmd_team_down)
    ts = tsub.add_parser("status", help="each server's URL and whether it answers")
    ts.add_argument("--dir", default=".edgekd/team", help=DIR_HELP)
    ts.set_defaults(fn=cmd_team_status)


def _dir(args) -> Path:
    return (Path(args.project_dir) / args.dir).resolve()


def cmd_team_up(args) -> int:
    from flows.infra import team

    team_dir = _dir(args)
    try:
        env = team.up(
            team_dir,
            host=args.host,
            advertise=args.advertise,
            pg_port=args.pg_port,
            mlflow_port=args.mlflow_port,
            prefect_port=args.prefect_port,
            artifacts_destination=args.artifacts_destination,
        )
    except (team.TeamError, OSError) as e:
        error(f"error: {e}")
        return Exit.ERROR
    print("clients use:")
    for k, v in env.items():
        print(f"export {k}={v}")
    print(f"source {team_dir / 'team.env'}")
    return Exit.OK


def cmd_team_down(args) -> int:
    from flows.infra import team

    try:
        team.down(_dir(args))
    except (team.TeamError, OSError) as e:
        error(f"error: {e}")
        return Exit.ERROR
    return Exit.OK


def cmd_team_status(args) -> int:
    from flows.infra import team

    team_dir = _dir(args)
    if not (team_dir / "team.json").is_file():
        error(f"error: {team_dir / 'team.json'} not found: no team was started there (`edgekd team up`)")
        return Exit.ERROR
    for name, s in team.status(team_dir).items():
        print(f"{team.LABELS[name]:<15} {s.url:<40} {'healthy' if s.healthy else 'down'}")
    return Exit.OK
