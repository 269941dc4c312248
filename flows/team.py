"""`edgekd team up|down|status`: the shared servers a small team (or a test) needs, on one machine.

Alone, each user has a SQLite MLflow store and a temporary Prefect server: nobody sees anyone else's runs, two
people can hold 'production' at once, and SQLite locks up under concurrent writers. A team needs one MLflow
registry, one Prefect API and one database for the promotion guard's advisory locks. `team up` starts:

- PostgreSQL (Debian's package) with the databases `mlflow`, `prefect` and `edgekd`, one role `edgekd` whose
  random password is generated once and kept in TEAM_DIR/password;
- `mlflow server` on the `mlflow` database, proxying artifacts to TEAM_DIR/artifacts (or a shared bucket);
- `prefect server start` on the `prefect` database;

and writes TEAM_DIR/team.env, the three settings clients source. `team down` stops them and keeps the data: a
later `up` finds the same registry and flow runs. Deleting TEAM_DIR deletes all of it.

Every server runs in its own session, so neither a Ctrl-C in the terminal nor the end of `up` stops it. Each
carries EDGEKD_TEAM_SERVER in its environment, which every process it starts inherits: `down` finds them by it,
including the workers `mlflow server` starts, which outlive it when it dies first.
"""
from __future__ import annotations

import glob
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

from flows.server import healthy, reap

MARKER = "EDGEKD_TEAM_SERVER"
DEFAULTS = {"host": "127.0.0.1", "advertise": None, "pg_port": 5432, "mlflow_port": 5000, "prefect_port": 4200,
            "artifacts_destination": None}
PORT_FLAGS = {"host": "--host", "advertise": "--advertise", "pg_port": "--pg-port", "mlflow_port": "--mlflow-port",
              "prefect_port": "--prefect-port", "artifacts_destination": "--artifacts-destination"}
DATABASES = ("mlflow", "prefect", "edgekd")
USER = "edgekd"
WILDCARDS = ("0.0.0.0", "::", "*")
# MLflow's own default Host allow-list (localhost and private networks), which --allowed-hosts replaces.
MLFLOW_DEFAULT_HOSTS = ["localhost", "localhost:*", "127.0.0.1", "127.0.0.1:*", "10.*", "192.168.*",
                        *(f"172.{i}.*" for i in range(16, 32))]


class TeamError(RuntimeError):
    """A team server could not be started, found or stopped; the message says why and what to do."""


# --- settings -------------------------------------------------------------------------------------------------

def _state(team_dir: Path) -> dict:
    path = team_dir / "team.json"
    return json.loads(path.read_text()) if path.is_file() else {"settings": {}, "servers": {}}


def _write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    # A reader (status, another `up`) never sees half a file.
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _local(host: str) -> str:
    """The address this machine reaches a server bound to `host` at."""
    return "127.0.0.1" if host in WILDCARDS else host


def _resolved(team_dir: Path, s: dict) -> dict:
    """Settings with their derived values: the advertised host, the artifacts destination, the URLs."""
    r = dict(s)
    r["advertise"] = s["advertise"] or (socket.gethostname() if s["host"] in WILDCARDS else s["host"])
    dest = s["artifacts_destination"] or str(team_dir / "artifacts")
    r["artifacts_destination"] = dest if "://" in dest else str(Path(dest).resolve())
    r["local"] = _local(s["host"])
    return r


def _password(team_dir: Path) -> str:
    path = team_dir / "password"
    if not path.is_file():
        raise TeamError(f"{path} is missing; the PostgreSQL data in {team_dir / 'postgres'} can't be reached "
                        f"without it. Delete {team_dir} to start afresh (this deletes the registry)")
    return path.read_text().strip()


def _urls(r: dict, password: str) -> dict:
    """What team.env exports: every URL names the advertised host, so it works from other machines too."""
    pw, adv = quote(password, safe=""), r["advertise"]
    return {"MLFLOW_TRACKING_URI": f"http://{adv}:{r['mlflow_port']}",
            "PREFECT_API_URL": f"http://{adv}:{r['prefect_port']}/api",
            "EDGEKD_DATABASE_URL": f"postgresql://{USER}:{pw}@{adv}:{r['pg_port']}/edgekd"}


def _health_urls(r: dict) -> dict:
    # Checked from here, through the local address: the advertised name need not resolve on this machine.
    return {"mlflow": f"http://{r['local']}:{r['mlflow_port']}",
            "prefect": f"http://{r['local']}:{r['prefect_port']}/api"}


def _db_url(r: dict, password: str, db: str, driver: str = "postgresql") -> str:
    return f"{driver}://{USER}:{quote(password, safe='')}@{r['local']}:{r['pg_port']}/{db}"


# --- processes ------------------------------------------------------------------------------------------------

def _marked(team_dir: Path, name: str) -> list:
    """The processes of team server `name` (psutil.Process): all that carry its marker, whoever their parent."""
    import psutil

    tag, found = f"{team_dir}#{name}", []
    for p in psutil.process_iter():
        try:
            if p.environ().get(MARKER) == tag and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (psutil.Error, OSError):  # gone meanwhile, or another user's
            continue
    return found


def _stop(team_dir: Path, name: str) -> int:
    """Terminate (after 10 s kill) every process of server `name`; how many there were."""
    total = 0
    for _ in range(3):  # a server being stopped may still start a worker: look again
        procs = _marked(team_dir, name)
        if not procs:
            break
        total += len(procs)
        reap(procs)
    return total


def _port_free(host: str, port: int) -> bool:
    # SO_REUSEADDR as the servers set it: a port in TIME_WAIT is free to them, only a listener blocks it.
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("" if host == "*" else host, port))
            return True
        except OSError:
            return False


def _need_port(host: str, port: int, flag: str, what: str) -> None:
    if not _port_free(host, port):
        raise TeamError(f"port {port} on {host} is in use by another process; {what} can't listen there. "
                        f"Stop that process or pick another port with {flag}")


def _tail(path: Path, n: int = 20) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()[-n:]
    except OSError as e:
        return f"({path} unreadable: {e})"
    return "\n".join("  " + line for line in lines) or "  (empty)"


def _child_env(team_dir: Path, name: str, **extra: str) -> dict:
    env = dict(os.environ, **extra)
    env[MARKER] = f"{team_dir}#{name}"
    # Not the caller's: a client setting would point a server at itself, and a command's reaper token would have
    # the servers ended with the command that started them.
    for var in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "EDGEKD_REAPER_TOKEN"):
        env.pop(var, None)
    return env


def _record(pid: int, url: str, log: Path) -> dict:
    import psutil

    return {"pid": pid, "create_time": psutil.Process(pid).create_time(), "url": url, "log": str(log),
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


# --- PostgreSQL -----------------------------------------------------------------------------------------------

def pg_bindir() -> Path:
    """Where initdb and pg_ctl are: Debian keeps them off PATH, in /usr/lib/postgresql/VERSION/bin."""
    if shutil.which("pg_config"):
        res = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        if res.returncode == 0 and (Path(res.stdout.strip()) / "pg_ctl").is_file():
            return Path(res.stdout.strip())
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),  # the newest major version
                   key=lambda p: int(v) if (v := Path(p).parts[-3]).isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    if initdb := shutil.which("initdb"):
        return Path(os.path.realpath(initdb)).parent
    raise TeamError("PostgreSQL binaries (initdb, pg_ctl) not found: apt-get install postgresql")


def _as_postgres() -> list[str]:
    """The command prefix that runs a PostgreSQL program: PostgreSQL refuses to run as root."""
    if os.geteuid() != 0:
        return []
    import pwd

    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise TeamError("running as root, PostgreSQL must run as user 'postgres', which does not exist: "
                        "apt-get install postgresql creates it") from None
    if not shutil.which("runuser"):
        raise TeamError("running as root, PostgreSQL must run as user 'postgres' through `runuser`, not found "
                        "(package util-linux)")
    return ["runuser", "-u", "postgres", "--"]


def _check_traversable(folder: Path) -> None:
    """As root: the user 'postgres' must be able to enter every folder above its data directory."""
    import pwd

    pw = pwd.getpwnam("postgres")
    groups = set(os.getgrouplist("postgres", pw.pw_gid))
    for d in [folder, *folder.parents]:
        st = d.stat()
        if st.st_uid == pw.pw_uid:
            ok = st.st_mode & 0o100
        elif st.st_gid in groups:
            ok = st.st_mode & 0o010
        else:
            ok = st.st_mode & 0o001
        if not ok:
            raise TeamError(f"PostgreSQL runs as user 'postgres', which can't enter {d} (mode "
                            f"{oct(st.st_mode & 0o777)}): `chmod o+x {d}`, or use a --dir under a folder it can "
                            f"reach")


def _pg(bindir: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    # cwd: the data directory, since `postgres` may not enter the caller's (root's home is 0700).
    return subprocess.run([*_as_postgres(), str(bindir / args[0]), *args[1:]], capture_output=True, text=True,
                          **kw)


def _pg_running(bindir: Path, pgdir: Path) -> bool:
    return (pgdir / "PG_VERSION").is_file() and _pg(bindir, "pg_ctl", "-D", str(pgdir), "status",
                                                      cwd=pgdir).returncode == 0


def _pg_healthy(r: dict, password: str) -> bool:
    import psycopg2

    try:
        psycopg2.connect(host=r["local"], port=r["pg_port"], user=USER, password=password, dbname="postgres",
                         connect_timeout=3).close()
        return True
    except psycopg2.Error:
        return False


def _initdb(team_dir: Path, bindir: Path, pgdir: Path, say) -> str:
    """Create the cluster once, with the role `edgekd` and a password generated now; the password."""
    import secrets

    pwpath = team_dir / "password"
    if (pgdir / "PG_VERSION").is_file():
        return _password(team_dir)
    if pgdir.exists() and any(pgdir.iterdir()):
        raise TeamError(f"{pgdir} is not empty but holds no PostgreSQL cluster (no PG_VERSION): move it away")
    if not pwpath.is_file():
        _write_atomic(pwpath, secrets.token_urlsafe(24) + "\n", 0o600)
    password = _password(team_dir)
    pgdir.mkdir(mode=0o700, exist_ok=True)
    # initdb reads the password from a file it can open, outside the (still empty) data directory; as root that
    # is a copy owned by 'postgres', deleted right after.
    pwfile = team_dir / ".initdb-pwfile"
    _write_atomic(pwfile, password + "\n", 0o600)
    if os.geteuid() == 0:
        shutil.chown(pgdir, "postgres", "postgres")
        shutil.chown(pwfile, "postgres", "postgres")
    say(f"creating the PostgreSQL cluster in {pgdir} (role {USER}, password in {pwpath})")
    try:
        # --no-locale: the cluster does not depend on which locales this machine has generated.
        res = _pg(bindir, "initdb", "-D", str(pgdir), "-U", USER, f"--pwfile={pwfile}",
                  "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-locale", cwd=pgdir)
    finally:
        pwfile.unlink(missing_ok=True)
    if res.returncode != 0:
        raise TeamError(f"initdb failed ({res.returncode}):\n{res.stdout}{res.stderr}")
    # initdb allows password logins from this machine only; other machines must reach it when bound to 0.0.0.0.
    with open(pgdir / "pg_hba.conf", "a") as f:
        f.write("\n# edgekd team: password logins from anywhere (reachable only where --host binds)\n"
                "host all all all scram-sha-256\n")
    return password


def _start_postgres(team_dir: Path, r: dict, say) -> tuple[str, dict | None]:
    """PostgreSQL running with the three databases: (password, record) with record None if it already ran."""
    bindir = pg_bindir()
    _as_postgres()  # a missing 'postgres' user or runuser fails before anything is created
    pgdir = team_dir / "postgres"
    if os.geteuid() == 0:
        _check_traversable(team_dir)
    password = _initdb(team_dir, bindir, pgdir, say)
    record = None
    if _pg_running(bindir, pgdir):
        if not _pg_healthy(r, password):
            raise TeamError(f"PostgreSQL runs from {pgdir} but does not answer on {r['local']}:{r['pg_port']}; "
                            f"`edgekd team down --dir {team_dir}`, then up again")
        say(f"PostgreSQL already running on {r['host']}:{r['pg_port']}")
    else:
        socket_path = f"{pgdir}/.s.PGSQL.{r['pg_port']}"
        if len(socket_path.encode()) > 107:
            raise TeamError(f"{team_dir} is too deep for PostgreSQL's Unix socket ({socket_path} is over 107 "
                            f"bytes): use a shorter --dir")
        _need_port(r["host"], r["pg_port"], "--pg-port", "PostgreSQL")
        log = pgdir / "server.log"  # inside the data directory: the server, as 'postgres', writes it
        say(f"starting PostgreSQL on {r['host']}:{r['pg_port']} (log {log})")
        opts = f"-k {shlex.quote(str(pgdir))} -h {shlex.quote(r['host'])} -p {r['pg_port']}"
        res = _pg(bindir, "pg_ctl", "-D", str(pgdir), "-l", str(log), "-o", opts, "-w", "-t", "120", "start",
                  cwd=pgdir, start_new_session=True)
        if res.returncode != 0:
            raise TeamError(f"PostgreSQL did not start ({res.returncode}); the last lines of {log}:\n{_tail(log)}")
        pid = int((pgdir / "postmaster.pid").read_text().split()[0])
        record = _record(pid, f"postgresql://{USER}@{r['advertise']}:{r['pg_port']}", log)
    try:
        _create_databases(r, password)
    except Exception:
        if record:
            _stop_postgres(team_dir)
        raise
    return password, record


def _create_databases(r: dict, password: str) -> None:
    import psycopg2
    from psycopg2 import sql

    conn = psycopg2.connect(host=r["local"], port=r["pg_port"], user=USER, password=password, dbname="postgres",
                            connect_timeout=10)
    try:
        conn.autocommit = True  # CREATE DATABASE can't run in a transaction
        with conn.cursor() as cur:
            for db in DATABASES:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    finally:
        conn.close()


def _stop_postgres(team_dir: Path) -> bool:
    """`pg_ctl stop -m fast` (open sessions rolled back, data kept); whether it was running."""
    pgdir = team_dir / "postgres"
    if not (pgdir / "PG_VERSION").is_file():
        return False
    bindir = pg_bindir()
    if not _pg_running(bindir, pgdir):
        return False
    res = _pg(bindir, "pg_ctl", "-D", str(pgdir), "-m", "fast", "-w", "-t", "60", "stop", cwd=pgdir)
    if res.returncode != 0:
        raise TeamError(f"`pg_ctl stop` failed ({res.returncode}): {res.stdout}{res.stderr}")
    return True


# --- MLflow and Prefect ---------------------------------------------------------------------------------------

def _launch(team_dir: Path, name: str, cmd: list[str], env: dict) -> tuple[subprocess.Popen, Path]:
    log = team_dir / "logs" / f"{name}.log"
    with open(log, "ab") as f:
        proc = subprocess.Popen([sys.executable, "-m", *cmd], stdin=subprocess.DEVNULL, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True, env=env, cwd=team_dir)
    return proc, log


def _mlflow_cmd(team_dir: Path, r: dict, password: str) -> tuple[list[str], dict]:
    cmd = ["mlflow", "server", "--artifacts-destination", r["artifacts_destination"], "--host", r["host"],
           "--port", str(r["mlflow_port"]), "--workers", "2"]
    if r["host"] in WILDCARDS:
        # MLflow 3 answers only Host headers it knows; the list replaces its default (localhost, private networks).
        cmd += ["--allowed-hosts", ",".join([r["advertise"], f"{r['advertise']}:*", *MLFLOW_DEFAULT_HOSTS])]
    # The store URI through the environment (--backend-store-uri's own variable): on the command line the password
    # would show in everyone's `ps`.
    # No job runner: its 7 huey consumers serve MLflow's GenAI jobs (trace scoring), which edgekd does not use.
    return cmd, _child_env(team_dir, "mlflow", MLFLOW_BACKEND_STORE_URI=_db_url(r, password, "mlflow"),
                           MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")


def _prefect_cmd(team_dir: Path, r: dict, password: str) -> tuple[list[str], dict]:
    home = team_dir / "prefect-home"
    home.mkdir(exist_ok=True)
    cmd = ["prefect", "server", "start", "--host", r["host"], "--port", str(r["prefect_port"])]
    return cmd, _child_env(
        team_dir, "prefect",
        PREFECT_API_DATABASE_CONNECTION_URL=_db_url(r, password, "prefect", "postgresql+asyncpg"),
        PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
        # The UI in a browser elsewhere asks this URL for its API.
        PREFECT_UI_API_URL=f"http://{r['advertise']}:{r['prefect_port']}/api")


LABELS = {"postgres": "PostgreSQL", "mlflow": "MLflow server", "prefect": "Prefect server"}


def _wait_healthy(started: dict, urls: dict, timeout: float) -> None:
    """Wait until every started server answers its health URL; raise naming the log of one that exits or stays
    silent past `timeout` seconds."""
    deadline = time.monotonic() + timeout
    pending = dict(started)
    while pending:
        for name, (proc, log) in list(pending.items()):
            if healthy(urls[name]):
                del pending[name]
            elif proc.poll() is not None:
                raise TeamError(f"the {LABELS[name]} exited with {proc.returncode}; the last lines of {log}:\n"
                                f"{_tail(log)}")
        if pending and time.monotonic() > deadline:
            name, (_, log) = next(iter(pending.items()))
            raise TeamError(f"the {LABELS[name]} did not answer {urls[name]}/health within {timeout:.0f} s; the "
                            f"last lines of {log}:\n{_tail(log)}")
        if pending:
            time.sleep(0.5)


# --- public API -----------------------------------------------------------------------------------------------

def up(team_dir: str | Path, host: str | None = None, advertise: str | None = None, pg_port: int | None = None,
       mlflow_port: int | None = None, prefect_port: int | None = None, artifacts_destination: str | None = None,
       startup_timeout: float = 180.0, say=print) -> dict:
    """Start whichever of PostgreSQL, the MLflow server and the Prefect server is not running; write and return
    the client settings (team.env). A setting left None is the one the team last ran with, else the default."""
    team_dir = Path(team_dir).resolve()
    (team_dir / "logs").mkdir(parents=True, exist_ok=True)
    state = _state(team_dir)
    asked = {"host": host, "advertise": advertise, "pg_port": pg_port, "mlflow_port": mlflow_port,
             "prefect_port": prefect_port, "artifacts_destination": artifacts_destination}
    recorded = {k: state["settings"].get(k, DEFAULTS[k]) for k in DEFAULTS}
    running = [n for n in ("mlflow", "prefect") if _marked(team_dir, n)]
    if (team_dir / "postgres" / "PG_VERSION").is_file() and _pg_running(pg_bindir(), team_dir / "postgres"):
        running.append("postgres")
    changed = [k for k, v in asked.items() if v is not None and v != recorded[k]]
    if running and changed:
        raise TeamError(f"the team in {team_dir} runs ({', '.join(running)}) with "
                        + ", ".join(f"{PORT_FLAGS[k]} {recorded[k]}" for k in changed)
                        + f"; `edgekd team down --dir {team_dir}` first to change that")
    settings = {k: recorded[k] if v is None else v for k, v in asked.items()}
    r = _resolved(team_dir, settings)
    if "://" not in r["artifacts_destination"]:
        Path(r["artifacts_destination"]).mkdir(parents=True, exist_ok=True)

    urls = _health_urls(r)
    flags = {"mlflow": ("--mlflow-port", r["mlflow_port"]), "prefect": ("--prefect-port", r["prefect_port"])}
    to_start = []
    for name in ("mlflow", "prefect"):
        left = _marked(team_dir, name)
        if left and healthy(urls[name]):
            say(f"{LABELS[name]} already running on {urls[name]}")
            continue
        if left:  # alive but not answering: a broken server, or workers whose `mlflow server` died
            say(f"{LABELS[name]} not answering on {urls[name]}: restarting it")
            _stop(team_dir, name)
        # Before anything starts: a busy port then leaves nothing half up.
        _need_port(r["host"], flags[name][1], flags[name][0], f"the {LABELS[name]}")
        to_start.append(name)

    servers = dict(state.get("servers") or {})
    password, pg_record = _start_postgres(team_dir, r, say)
    if pg_record:
        servers["postgres"] = pg_record
    started: dict = {}
    build = {"mlflow": _mlflow_cmd, "prefect": _prefect_cmd}
    try:
        for name in to_start:
            cmd, env = build[name](team_dir, r, password)
            started[name] = _launch(team_dir, name, cmd, env)
            say(f"starting the {LABELS[name]} on {urls[name].removesuffix('/api')} (log {started[name][1]})")
        # Both start at once: each runs its database migrations first (~10-15 s).
        _wait_healthy(started, urls, startup_timeout)
    except BaseException:
        for name in started:
            _stop(team_dir, name)
        if pg_record:
            _stop_postgres(team_dir)
        raise
    env = _urls(r, password)
    advertised = {"mlflow": env["MLFLOW_TRACKING_URI"], "prefect": env["PREFECT_API_URL"]}
    for name, (proc, log) in started.items():
        servers[name] = _record(proc.pid, advertised[name], log)
        say(f"{LABELS[name]} on {advertised[name].removesuffix('/api')} (log {log})")
    if not started and not pg_record:
        say(f"the team in {team_dir} is already up")

    _write_atomic(team_dir / "team.json", json.dumps({"settings": settings, "servers": servers}, indent=2) + "\n")
    # 0600: it carries the database password.
    _write_atomic(team_dir / "team.env", "".join(f"export {k}={v}\n" for k, v in env.items()), 0o600)
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
    if _stop_postgres(team_dir):
        stopped.append("postgres")
        say("stopped PostgreSQL")
    state = _state(team_dir)
    if state["servers"]:
        state["servers"] = {}
        _write_atomic(team_dir / "team.json", json.dumps(state, indent=2) + "\n")
    if not stopped:
        say(f"nothing was running from {team_dir}")
    return stopped


def status(team_dir: str | Path) -> dict:
    """{server: {"url", "healthy"}} for PostgreSQL, the MLflow server and the Prefect server."""
    team_dir = Path(team_dir).resolve()
    state = _state(team_dir)
    r = _resolved(team_dir, {k: state["settings"].get(k, DEFAULTS[k]) for k in DEFAULTS})
    urls = _health_urls(r)
    try:
        pg_ok = _pg_healthy(r, _password(team_dir))
    except TeamError:
        pg_ok = False
    return {"postgres": {"url": f"postgresql://{USER}@{r['advertise']}:{r['pg_port']}", "healthy": pg_ok},
            "mlflow": {"url": f"http://{r['advertise']}:{r['mlflow_port']}", "healthy": healthy(urls["mlflow"])},
            "prefect": {"url": f"http://{r['advertise']}:{r['prefect_port']}/api",
                        "healthy": healthy(urls["prefect"])}}


# --- CLI ------------------------------------------------------------------------------------------------------

def _dir(args) -> Path:
    return (Path(args.project_dir) / args.dir).resolve()


def cmd_team_up(args) -> int:
    team_dir = _dir(args)
    try:
        env = up(team_dir, host=args.host, advertise=args.advertise, pg_port=args.pg_port,
                 mlflow_port=args.mlflow_port, prefect_port=args.prefect_port,
                 artifacts_destination=args.artifacts_destination)
    except (TeamError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("clients use:")
    for k, v in env.items():
        print(f"export {k}={v}")
    print(f"source {team_dir / 'team.env'}")
    return 0


def cmd_team_down(args) -> int:
    try:
        down(_dir(args))
    except (TeamError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_team_status(args) -> int:
    team_dir = _dir(args)
    if not (team_dir / "team.json").is_file():
        print(f"error: {team_dir / 'team.json'} not found: no team was started there (`edgekd team up`)",
              file=sys.stderr)
        return 1
    for name, s in status(team_dir).items():
        print(f"{LABELS[name]:<15} {s['url']:<40} {'healthy' if s['healthy'] else 'down'}")
    return 0


def add_parser(sub) -> None:
    """`edgekd team up|down|status` on the subcommands `sub` of the edgekd parser."""
    team = sub.add_parser("team", help="start, stop or check the shared servers of a team on this machine: "
                                       "PostgreSQL, an MLflow server and a Prefect server")
    tsub = team.add_subparsers(dest="team_command", required=True)
    dir_help = "the team's folder (data, logs, password, team.env), relative to --project-dir (default .edgekd/team)"
    tu = tsub.add_parser("up", help="start the servers not running; print and write the settings clients source "
                                    "(idempotent; a setting not given is the one the team last ran with)")
    tu.add_argument("--dir", default=".edgekd/team", help=dir_help)
    tu.add_argument("--host", default=None, help="address the servers bind to (default 127.0.0.1: this machine "
                                                 "only; 0.0.0.0: every machine that can reach this one)")
    tu.add_argument("--advertise", default=None, help="the host name clients use in the URLs (default: --host, or "
                                                      "this machine's name when --host is 0.0.0.0)")
    tu.add_argument("--pg-port", type=int, default=None, help="PostgreSQL's port (default 5432)")
    tu.add_argument("--mlflow-port", type=int, default=None, help="the MLflow server's port (default 5000)")
    tu.add_argument("--prefect-port", type=int, default=None, help="the Prefect server's port (default 4200)")
    tu.add_argument("--artifacts-destination", default=None,
                    help="where the MLflow server stores artifacts it proxies (default TEAM_DIR/artifacts; e.g. "
                         "s3://bucket/path for a shared bucket, with AWS credentials in this environment)")
    tu.set_defaults(fn=cmd_team_up)
    td = tsub.add_parser("down", help="stop the servers; their data stays in --dir (delete it to delete the data)")
    td.add_argument("--dir", default=".edgekd/team", help=dir_help)
    td.set_defaults(fn=cmd_team_down)
    ts = tsub.add_parser("status", help="each server's URL and whether it answers")
    ts.add_argument("--dir", default=".edgekd/team", help=dir_help)
    ts.set_defaults(fn=cmd_team_status)
