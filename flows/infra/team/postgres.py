"""The team's PostgreSQL: a cluster in TEAM_DIR/postgres created once (role `edgekd`, a generated password), run
with pg_ctl (as user 'postgres' when edgekd runs as root, since PostgreSQL refuses root), with the databases the
servers and the promotion guard use."""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import subprocess
from pathlib import Path

from flows.infra.database import connect
from flows.infra.processes import tail
from flows.infra.team.settings import USER, Resolved, ServerRecord, TeamError, need_port, password, record, write_file

DATABASES = ("mlflow", "prefect", "edgekd")


def pg_bindir() -> Path:
    """Where initdb and pg_ctl are: Debian keeps them off PATH, in /usr/lib/postgresql/VERSION/bin."""
    if shutil.which("pg_config"):
        res = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        if res.returncode == 0 and (Path(res.stdout.strip()) / "pg_ctl").is_file():
            return Path(res.stdout.strip())
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),  # the newest major version
        key=lambda p: int(v) if (v := Path(p).parts[-3]).isdigit() else 0,
    )
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
        raise TeamError(
            "running as root, PostgreSQL must run as user 'postgres', which does not exist: "
            "apt-get install postgresql creates it"
        ) from None
    if not shutil.which("runuser"):
        raise TeamError(
            "running as root, PostgreSQL must run as user 'postgres' through `runuser`, not found (package util-linux)"
        )
    return ["runuser", "-u", "postgres", "--"]


def _check_traversable(folder: Path) -> None:
    """As root: the user 'postgres' must be able to enter every folder above its data directory."""
    import pwd

    pw = pwd.getpwnam("postgres")
    groups = set(os.getgrouplist("postgres", pw.pw_gid))
    for d in [folder, *folder.parents]:
        st = d.stat()
        bit = 0o100 if st.st_uid == pw.pw_uid else 0o010 if st.st_gid in groups else 0o001
        if not st.st_mode & bit:
            raise TeamError(
                f"PostgreSQL runs as user 'postgres', which can't enter {d} (mode "
                f"{oct(st.st_mode & 0o777)}): `chmod o+x {d}`, or use a --dir under a folder it can "
                f"reach"
            )


def _pg(bindir: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    # cwd: the data directory, since `postgres` may not enter the caller's (root's home is 0700).
    return subprocess.run([*_as_postgres(), str(bindir / args[0]), *args[1:]], capture_output=True, text=True, **kw)


def running(team_dir: Path) -> bool:
    pgdir = team_dir / "postgres"
    return (pgdir / "PG_VERSION").is_file() and _pg(
        pg_bindir(), "pg_ctl", "-D", str(pgdir), "status", cwd=pgdir
    ).returncode == 0


def healthy(r: Resolved, pw: str) -> bool:
    import psycopg2

    try:
        connect(host=r.local, port=r.s.pg_port, user=USER, password=pw, dbname="postgres", timeout=3).close()
        return True
    except psycopg2.Error:
        return False


def _initdb(team_dir: Path, bindir: Path, pgdir: Path, say) -> str:
    """Create the cluster once, with the role `edgekd` and a password generated now; the password."""
    import secrets

    pwpath = team_dir / "password"
    if (pgdir / "PG_VERSION").is_file():
        return password(team_dir)
    if pgdir.exists() and any(pgdir.iterdir()):
        raise TeamError(f"{pgdir} is not empty but holds no PostgreSQL cluster (no PG_VERSION): move it away")
    if not pwpath.is_file():
        write_file(pwpath, secrets.token_urlsafe(24) + "\n", 0o600)
    pw = password(team_dir)
    pgdir.mkdir(mode=0o700, exist_ok=True)
    # initdb reads the password from a file it can open, outside the (still empty) data directory; as root that
    # is a copy owned by 'postgres', deleted right after.
    pwfile = team_dir / ".initdb-pwfile"
    write_file(pwfile, pw + "\n", 0o600)
    if os.geteuid() == 0:
        shutil.chown(pgdir, "postgres", "postgres")
        shutil.chown(pwfile, "postgres", "postgres")
    say(f"creating the PostgreSQL cluster in {pgdir} (role {USER}, password in {pwpath})")
    try:
        # --no-locale: the cluster does not depend on which locales this machine has generated.
        res = _pg(
            bindir,
            "initdb",
            "-D",
            str(pgdir),
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            "-E",
            "UTF8",
            "--no-locale",
            cwd=pgdir,
        )
    finally:
        pwfile.unlink(missing_ok=True)
    if res.returncode != 0:
        raise TeamError(f"initdb failed ({res.returncode}):\n{res.stdout}{res.stderr}")
    # initdb allows password logins from this machine only; other machines must reach it when bound to 0.0.0.0.
    with open(pgdir / "pg_hba.conf", "a") as f:
        f.write(
            "\n# edgekd team: password logins from anywhere (reachable only where --host binds)\n"
            "host all all all scram-sha-256\n"
        )
    return pw


def start(team_dir: Path, r: Resolved, say) -> tuple[str, ServerRecord | None]:
    """PostgreSQL running with the three databases: (password, record) with record None if it already ran."""
    bindir = pg_bindir()
    _as_postgres()  # a missing 'postgres' user or runuser fails before anything is created
    pgdir = team_dir / "postgres"
    if os.geteuid() == 0:
        _check_traversable(team_dir)
    pw = _initdb(team_dir, bindir, pgdir, say)
    rec = None
    if running(team_dir):
        if not healthy(r, pw):
            raise TeamError(
                f"PostgreSQL runs from {pgdir} but does not answer on {r.local}:{r.s.pg_port}; "
                f"`edgekd team down --dir {team_dir}`, then up again"
            )
        say(f"PostgreSQL already running on {r.s.host}:{r.s.pg_port}")
    else:
        rec = _launch(team_dir, bindir, pgdir, r, say)
    try:
        _create_databases(r, pw)
    except Exception:
        if rec:
            stop(team_dir)
        raise
    return pw, rec


def _launch(team_dir: Path, bindir: Path, pgdir: Path, r: Resolved, say) -> ServerRecord:
    socket_path = f"{pgdir}/.s.PGSQL.{r.s.pg_port}"
    if len(socket_path.encode()) > 107:
        raise TeamError(
            f"{team_dir} is too deep for PostgreSQL's Unix socket ({socket_path} is over 107 "
            f"bytes): use a shorter --dir"
        )
    need_port(r.s.host, r.s.pg_port, "--pg-port", "PostgreSQL")
    log = pgdir / "server.log"  # inside the data directory: the server, as 'postgres', writes it
    say(f"starting PostgreSQL on {r.s.host}:{r.s.pg_port} (log {log})")
    opts = f"-k {shlex.quote(str(pgdir))} -h {shlex.quote(r.s.host)} -p {r.s.pg_port}"
    res = _pg(
        bindir,
        "pg_ctl",
        "-D",
        str(pgdir),
        "-l",
        str(log),
        "-o",
        opts,
        "-w",
        "-t",
        "120",
        "start",
        cwd=pgdir,
        start_new_session=True,
    )
    if res.returncode != 0:
        raise TeamError(f"PostgreSQL did not start ({res.returncode}); the last lines of {log}:\n{tail(log)}")
    pid = int((pgdir / "postmaster.pid").read_text().split()[0])
    return record(pid, f"postgresql://{USER}@{r.advertise}:{r.s.pg_port}", log)


def _create_databases(r: Resolved, pw: str) -> None:
    from psycopg2 import sql

    conn = connect(host=r.local, port=r.s.pg_port, user=USER, password=pw, dbname="postgres")
    try:
        with conn.cursor() as cur:
            for db in DATABASES:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    finally:
        conn.close()


def stop(team_dir: Path) -> bool:
    """`pg_ctl stop -m fast` (open sessions rolled back, data kept); whether it was running."""
    pgdir = team_dir / "postgres"
    if not (pgdir / "PG_VERSION").is_file() or not running(team_dir):
        return False
    res = _pg(pg_bindir(), "pg_ctl", "-D", str(pgdir), "-m", "fast", "-w", "-t", "60", "stop", cwd=pgdir)
    if res.returncode != 0:
        raise TeamError(f"`pg_ctl stop` failed ({res.returncode}): {res.stdout}{res.stderr}")
    return True
