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
    tu.add_argument(
        "--tls-cert",
        default=None,
        help="the servers' certificate (PEM) instead of one signed by the team's own CA (TEAM_DIR/tls/ca.pem)",
    )
    tu.add_argument("--tls-key", default=None, help="the key of --tls-cert (PEM, unencrypted; keep it 0600)")
    tu.add_argument("--tls-ca", default=None, help="the CA clients verify --tls-cert with (default: --tls-cert itself)")
    tu.set_defaults(fn=cmd_team_up)
    td = tsub.add_parser("down", help="stop the servers; their data stays in --dir (delete it to delete the data)")
    td.add_argument("--dir", default=".edgekd/team", help=DIR_HELP)
    td.set_defaults(fn=cmd_team_down)
    ts = tsub.add_parser("status", help="each server's URL and whether it answers")
    ts.add_argument("--dir", default=".edgekd/team", help=DIR_HELP)
    ts.set_defaults(fn=cmd_team_status)
    _add_user_parser(tsub)


# flows.infra.team.mlflow_auth.ROLES, spelled out: building the parser must not import the team's servers (the
# device agent's install has neither PostgreSQL's client nor the pipeline).
ROLES = ("viewer", "developer", "releaser")


def _add_user_parser(tsub) -> None:
    user = tsub.add_parser(
        "user",
        help="the MLflow server's users and their roles: viewer (reads), developer (runs, registers, moves "
        "staging), releaser (also moves production); run where `team up` ran",
    )
    usub = user.add_subparsers(dest="user_command", required=True)
    ua = usub.add_parser("add", help="create a user; their credentials go to TEAM_DIR/users/NAME.env (0600)")
    ua.add_argument("name")
    ua.add_argument("--role", required=True, choices=ROLES)
    ua.set_defaults(fn=cmd_user_add)
    up = usub.add_parser("passwd", help="give a user a new password (the old one stops working at once)")
    up.add_argument("name")
    up.set_defaults(fn=cmd_user_passwd)
    ur = usub.add_parser("remove", help="delete a user and their credentials file")
    ur.add_argument("name")
    ur.set_defaults(fn=cmd_user_remove)
    ul = usub.add_parser("list", help="every user and their role")
    ul.set_defaults(fn=cmd_user_list)
    for p in (ua, up, ur, ul):
        p.add_argument("--dir", default=".edgekd/team", help=DIR_HELP)


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
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            tls_ca=args.tls_ca,
        )
    except (team.TeamError, OSError) as e:
        error(f"error: {e}")
        return Exit.ERROR
    print(f"MLflow {env['MLFLOW_TRACKING_URI']}, Prefect {env['PREFECT_API_URL']}")
    print(f"clients verify the servers with {env['PREFECT_API_SSL_CERT_FILE']}")
    print(f"clients source {team_dir / 'team.env'} (0600: it holds secrets) and their own user file")
    print(f"add users with: edgekd team user add NAME --role viewer|developer|releaser --dir {team_dir}")
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


def _user_command(fn) -> int:
    from flows.infra.team import TeamError

    try:
        fn()
    except TeamError as e:
        error(f"error: {e}")
        return Exit.ERROR
    return Exit.OK


def cmd_user_add(args) -> int:
    from flows.infra.team import users

    def add() -> None:
        path = users.add(_dir(args), args.name, args.role)
        print(f"added {args.name} ({args.role}); their credentials: {path} (0600, hand it to them; they source it)")

    return _user_command(add)


def cmd_user_passwd(args) -> int:
    from flows.infra.team import users

    def passwd() -> None:
        print(f"new password of {args.name} in {users.passwd(_dir(args), args.name)}; the old one no longer works")

    return _user_command(passwd)


def cmd_user_remove(args) -> int:
    from flows.infra.team import users

    def remove() -> None:
        users.remove(_dir(args), args.name)
        print(f"removed {args.name}")

    return _user_command(remove)


def cmd_user_list(args) -> int:
    from flows.infra.team import users

    def show() -> None:
        for u in users.list_users(_dir(args)):
            print(f"{u.name:<24} {u.role or '(no role)'}")

    return _user_command(show)
