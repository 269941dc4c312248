"""Start, stop and check a team's servers: PostgreSQL (postgres.py), `mlflow server` and `prefect server start`,
each in a session of its own and marked with EDGEKD_TEAM_SERVER so that `down` finds every process it started."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from flows.infra.environment import REAPER_TOKEN, TEAM_SERVER
from flows.infra.processes import ServerStartError, healthy, marked, reap, wait_healthy
from flows.infra.team import postgres, tls
from flows.infra.team.settings import (
    MEMBER,
    MEMBER_DATABASE,
    PORT_FLAGS,
    SERVER_ROLES,
    WILDCARDS,
    Resolved,
    ServerSecrets,
    TeamError,
    TeamSettings,
    TeamState,
    member_password,
    need_port,
    password,
    record,
    write_file,
)

# A client's settings (team.env, a user's file): a server given them would point at itself or act as someone.
CLIENT_VARIABLES = (
    "PREFECT_API_URL",
    "PREFECT_API_AUTH_STRING",
    "PREFECT_API_SSL_CERT_FILE",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_SERVER_CERT_PATH",
)
AUTH_INI = """[mlflow]
default_permission = {default}
database_uri = sqlite:///{db}
admin_username = admin
authorization_function = flows.infra.team.mlflow_auth:authenticate
"""
LABELS = {"postgres": "PostgreSQL", "mlflow": "MLflow server", "prefect": "Prefect server"}
# MLflow's own default Host allow-list (localhost and private networks), which --allowed-hosts replaces.
MLFLOW_DEFAULT_HOSTS = [
    "localhost",
    "localhost:*",
    "127.0.0.1",
    "127.0.0.1:*",
    "10.*",
    "192.168.*",
    *(f"172.{i}.*" for i in range(16, 32)),
]


@dataclass(frozen=True)
class Launch:
    """What starting a server takes: where, with which settings, TLS and the secrets (its database password among
    them: each server logs in as its own database's owner, not as the superuser)."""

    team_dir: Path
    r: Resolved
    tls: tls.Tls
    secrets: ServerSecrets


@dataclass(frozen=True)
class ServerState:
    url: str
    healthy: bool


def processes(team_dir: Path, name: str) -> list:
    """The processes of team server `name` (psutil.Process): all that carry its marker, whoever their parent."""
    return marked(TEAM_SERVER.name, f"{team_dir}#{name}")


def _stop(team_dir: Path, name: str) -> int:
    """Terminate (after 10 s kill) every process of server `name`; how many there were."""
    total = 0
    for _ in range(3):  # a server being stopped may still start a worker: look again
        procs = processes(team_dir, name)
        if not procs:
            break
        total += len(procs)
        reap(procs)
    return total


def _child_env(team_dir: Path, name: str, **extra: str) -> dict:
    env = dict(os.environ, **extra)
    env[TEAM_SERVER.name] = f"{team_dir}#{name}"
    # Not the caller's: a client setting would point a server at itself, and a command's reaper token would have
    # the servers ended with the command that started them.
    for var in (*CLIENT_VARIABLES, REAPER_TOKEN.name):
        env.pop(var, None)
    return env


def _mlflow_cmd(x: Launch) -> tuple[list[str], dict]:
    """`mlflow server` with its basic-auth app (users and their permissions in TEAM_DIR/mlflow-auth.db, edgekd's
    roles on top: mlflow_auth.py) behind TLS."""
    r = x.r
    ini = x.team_dir / "mlflow-auth.ini"
    # Nothing but MLflow's permissions for what edgekd's roles do not decide: a user reads what nobody restricted.
    write_file(ini, AUTH_INI.format(default="READ", db=x.team_dir / "mlflow-auth.db"))
    cmd = [
        "mlflow",
        "server",
        "--app-name",
        "basic-auth",
        "--uvicorn-opts",
        shlex.join(["--ssl-keyfile", str(x.tls.key), "--ssl-certfile", str(x.tls.cert)]),
        "--artifacts-destination",
        r.artifacts_destination,
        "--host",
        r.s.host,
        "--port",
        str(r.s.mlflow_port),
        "--workers",
        "2",
    ]
    if r.s.host in WILDCARDS:
        # MLflow 3 answers only Host headers it knows; the list replaces its default (localhost, private networks).
        cmd += ["--allowed-hosts", ",".join([r.advertise, f"{r.advertise}:*", *MLFLOW_DEFAULT_HOSTS])]
    # Secrets and the store URI (it holds the database password) through the environment: on the command line they
    # would show in everyone's `ps`. No job runner: its huey consumers serve MLflow's GenAI jobs (trace scoring),
    # which edgekd does not use.
    return cmd, _child_env(
        x.team_dir,
        "mlflow",
        MLFLOW_BACKEND_STORE_URI=r.db_url(SERVER_ROLES["mlflow"], x.secrets.mlflow_db_password, "mlflow"),
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
        MLFLOW_AUTH_CONFIG_PATH=str(ini),
        MLFLOW_AUTH_ADMIN_PASSWORD=x.secrets.mlflow_admin_password,
        MLFLOW_FLASK_SERVER_SECRET_KEY=x.secrets.flask_secret_key,
    )


def _prefect_cmd(x: Launch) -> tuple[list[str], dict]:
    """Prefect's API and UI under uvicorn with TLS (what `prefect server start` runs, which has no TLS options),
    every request but its health check authenticated with the team's auth string."""
    import prefect

    r = x.r
    home = x.team_dir / "prefect-home"
    home.mkdir(exist_ok=True)
    cmd = [
        "uvicorn",
        "--app-dir",
        str(Path(prefect.__file__).parent.parent),
        "--factory",
        "prefect.server.api.server:create_app",
        "--host",
        r.s.host,
        "--port",
        str(r.s.prefect_port),
        "--ssl-keyfile",
        str(x.tls.key),
        "--ssl-certfile",
        str(x.tls.cert),
    ]
    return cmd, _child_env(
        x.team_dir,
        "prefect",
        PREFECT_API_DATABASE_CONNECTION_URL=r.db_url(
            SERVER_ROLES["prefect"], x.secrets.prefect_db_password, "prefect", "postgresql+asyncpg"
        ),
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_API_AUTH_STRING=x.secrets.prefect_auth_string,
        PREFECT__SERVER_FINAL="1",
        # The UI in a browser elsewhere asks this URL for its API.
        PREFECT_UI_API_URL=f"https://{r.advertise}:{r.s.prefect_port}/api",
    )


def _launch(team_dir: Path, name: str, cmd: list[str], env: dict) -> tuple[subprocess.Popen, Path]:
    log = team_dir / "logs" / f"{name}.log"
    with open(log, "ab") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", *cmd],
            stdin=subprocess.DEVNULL,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            cwd=team_dir,
        )
    return proc, log


def _settings(team_dir: Path, state: TeamState, asked: dict) -> TeamSettings:
    """The settings to run with: those asked for over those recorded. Changing one of a running team is refused."""
    running = [n for n in ("mlflow", "prefect") if processes(team_dir, n)]
    if postgres.running(team_dir):
        running.append("postgres")
    recorded = state.settings
    changed = [k for k, v in asked.items() if v is not None and v != getattr(recorded, k)]
    if running and changed:
        raise TeamError(
            f"the team in {team_dir} runs ({', '.join(running)}) with "
            + ", ".join(f"{PORT_FLAGS[k]} {getattr(recorded, k)}" for k in changed)
            + f"; `edgekd team down --dir {team_dir}` first to change that"
        )
    return recorded.model_copy(update={k: v for k, v in asked.items() if v is not None})


def _to_start(team_dir: Path, r: Resolved, say) -> list[str]:
    """The servers to start: those not answering (a broken one is stopped first). Their ports are checked before
    anything starts, so that a busy port leaves nothing half up."""
    urls, out = r.health_urls(), []
    ports = {"mlflow": ("--mlflow-port", r.s.mlflow_port), "prefect": ("--prefect-port", r.s.prefect_port)}
    for name in ("mlflow", "prefect"):
        left = processes(team_dir, name)
        if left and healthy(urls[name], r.ca):
            say(f"{LABELS[name]} already running on {urls[name]}")
            continue
        if left:  # alive but not answering: a broken server, or workers whose `mlflow server` died
            say(f"{LABELS[name]} not answering on {urls[name]}: restarting it")
            _stop(team_dir, name)
        need_port(r.s.host, ports[name][1], ports[name][0], f"the {LABELS[name]}")
        out.append(name)
    return out


def _start(x: Launch, names: list[str], timeout: float, say) -> dict[str, tuple[subprocess.Popen, Path]]:
    """Start the servers `names` at once (each runs its database migrations first) and wait until they answer;
    on failure stop those started and raise TeamError. Returns {name: (process, log)}."""
    urls, started = x.r.health_urls(), {}
    build = {"mlflow": _mlflow_cmd, "prefect": _prefect_cmd}
    try:
        for name in names:
            cmd, env = build[name](x)
            started[name] = _launch(x.team_dir, name, cmd, env)
            say(f"starting the {LABELS[name]} on {urls[name].removesuffix('/api')} (log {started[name][1]})")
        wait_healthy({LABELS[n]: (proc, log, urls[n]) for n, (proc, log) in started.items()}, timeout, cafile=x.r.ca)
    except BaseException as e:
        for name in started:
            _stop(x.team_dir, name)
        if isinstance(e, ServerStartError):
            raise TeamError(str(e)) from None
        raise
    return started


def _tls(team_dir: Path, r: Resolved, say) -> tls.Tls:
    s = r.s
    if bool(s.tls_cert) != bool(s.tls_key):
        raise TeamError("--tls-cert and --tls-key go together: give both, or neither for a self-signed CA")
    if s.tls_cert and s.tls_key:
        return tls.users_own(team_dir, s.tls_cert, s.tls_key, s.tls_ca)
    return tls.self_signed(team_dir, r.advertise, say)


def up(team_dir: str | Path, startup_timeout: float = 180.0, say=print, **asked) -> dict[str, str]:
    """Start whichever of PostgreSQL, the MLflow server and the Prefect server is not running; write and return
    the client settings (team.env). `asked`: settings of TeamSettings; one left None is the one the team last ran
    with, else the default."""
    team_dir = Path(team_dir).resolve()
    (team_dir / "logs").mkdir(parents=True, exist_ok=True)
    state = TeamState.read(team_dir)
    r = Resolved.of(team_dir, settings := _settings(team_dir, state, asked))
    if "://" not in r.artifacts_destination:
        Path(r.artifacts_destination).mkdir(parents=True, exist_ok=True)
    certs = _tls(team_dir, r, say)
    secrets = ServerSecrets.of(team_dir)
    members = member_password(team_dir)
    names = _to_start(team_dir, r, say)
    _, pg_record = postgres.start(team_dir, r, secrets.database_passwords(members), say)
    try:
        started = _start(Launch(team_dir, r, certs, secrets), names, startup_timeout, say)
    except BaseException:
        if pg_record:
            postgres.stop(team_dir)
        raise
    if (auth_db := team_dir / "mlflow-auth.db").is_file():
        auth_db.chmod(0o600)  # MLflow made it; it holds the users' password hashes
    env = r.client_env(members, secrets)
    servers = dict(state.servers) | ({"postgres": pg_record} if pg_record else {})
    advertised = {"mlflow": env["MLFLOW_TRACKING_URI"], "prefect": env["PREFECT_API_URL"]}
    for name, (proc, log) in started.items():
        servers[name] = record(proc.pid, advertised[name], log)
        say(f"{LABELS[name]} on {advertised[name].removesuffix('/api')} (log {log})")
    if not started and not pg_record:
        say(f"the team in {team_dir} is already up")
    TeamState(settings=settings, servers=servers).write(team_dir)
    # 0600: it carries the members' database password and Prefect's auth string.
    write_file(team_dir / "team.env", "".join(f"export {k}={v}\n" for k, v in env.items()), 0o600)
    return env


def down(team_dir: str | Path, say=print) -> list[str]:
    """Stop the team's servers (data kept: a later `up` finds it; delete TEAM_DIR to delete it); the names of
    those that were running."""
    team_dir = Path(team_dir).resolve()
    if not team_dir.is_dir():
        raise TeamError(f"{team_dir}: no such folder, so no team runs from it")
    stopped = []
    for name in ("prefect", "mlflow"):  # clients first, their database last
        if n := _stop(team_dir, name):
            stopped.append(name)
            say(f"stopped the {LABELS[name]} ({n} process{'es' if n > 1 else ''})")
    if postgres.stop(team_dir):
        stopped.append("postgres")
        say("stopped PostgreSQL")
    state = TeamState.read(team_dir)
    if state.servers:
        state.servers = {}
        state.write(team_dir)
    if not stopped:
        say(f"nothing was running from {team_dir}")
    return stopped


def status(team_dir: str | Path) -> dict[str, ServerState]:
    """PostgreSQL's, the MLflow server's and the Prefect server's URL and whether each answers."""
    team_dir = Path(team_dir).resolve()
    r = Resolved.of(team_dir, TeamState.read(team_dir).settings)
    urls = r.health_urls()
    try:
        pg_ok = postgres.healthy(r, password(team_dir))
    except TeamError:
        pg_ok = False
    return {
        "postgres": ServerState(f"postgresql://{MEMBER}@{r.advertise}:{r.s.pg_port}/{MEMBER_DATABASE}", pg_ok),
        "mlflow": ServerState(f"https://{r.advertise}:{r.s.mlflow_port}", healthy(urls["mlflow"], r.ca)),
        "prefect": ServerState(f"https://{r.advertise}:{r.s.prefect_port}/api", healthy(urls["prefect"], r.ca)),
    }
