"""The team's PostgreSQL: a cluster in TEAM_DIR/postgres created once (its superuser `edgekd`, a generated
password), run with pg_ctl (as user 'postgres' when edgekd runs as root, since PostgreSQL refuses root), with the
databases the servers and the members use and a login role for each, none of them a superuser:

| role | may log in to (pg_hba.conf) | may |
|---|---|---|
| `mlflow_server` | `mlflow`, from this machine | own `mlflow` (MLflow's tables, its migrations) |
| `prefect_server` | `prefect`, from this machine | own `prefect` (Prefect's tables, its migrations) |
| `edgekd_member` | `edgekd`, from anywhere `--host` reaches | advisory locks, its own tables in `edgekd` (Optuna) |
| `edgekd` (superuser) | every database, from this machine | set the cluster up; its password stays in TEAM_DIR |

Every `up` writes pg_hba.conf and grants all of this again, so a team made by an earlier edgekd (servers and
members logging in as the superuser) is brought to it, its tables handed to their server's role."""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import subprocess
from pathlib import Path

from flows.infra.database import connect
from flows.infra.processes import tail
from flows.infra.team.settings import (
    MEMBER,
    MEMBER_DATABASE,
    SERVER_ROLES,
    SUPERUSER,
    Resolved,
    ServerRecord,
    TeamError,
    need_port,
    password,
    record,
    write_file,
)

DATABASES = ("mlflow", "prefect", MEMBER_DATABASE)
# Who owns what is in each database (the members' database itself stays the superuser's: members get only what
# GRANTS gives them there).
OWNERS = SERVER_ROLES | {MEMBER_DATABASE: MEMBER}
# Written on every `up`: a connection no line admits is refused ("no pg_hba.conf entry"). `samehost`: any address of
# this machine, whichever --host the servers bind to.
HBA = f"""# Written by `edgekd team up` on every start (edits are lost): who may log in to which database, from where.
# TYPE  DATABASE       USER             ADDRESS    METHOD
local   all            all                         scram-sha-256
host    all            {SUPERUSER:<16} samehost   scram-sha-256
host    mlflow         {SERVER_ROLES["mlflow"]:<16} samehost   scram-sha-256
host    prefect        {SERVER_ROLES["prefect"]:<16} samehost   scram-sha-256
host    {MEMBER_DATABASE:<14} {MEMBER:<16} all        scram-sha-256
"""
ROLE_ATTRIBUTES = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"


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
        connect(host=r.local, port=r.s.pg_port, user=SUPERUSER, password=pw, dbname="postgres", timeout=3).close()
        return True
    except psycopg2.Error:
        return False


def _initdb(team_dir: Path, bindir: Path, pgdir: Path, say) -> str:
    """Create the cluster once, with the superuser and a password generated now; the password."""
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
    say(f"creating the PostgreSQL cluster in {pgdir} (superuser {SUPERUSER}, password in {pwpath})")
    try:
        # --no-locale: the cluster does not depend on which locales this machine has generated.
        res = _pg(
            bindir,
            "initdb",
            "-D",
            str(pgdir),
            "-U",
            SUPERUSER,
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
    return pw


def _write_hba(pgdir: Path) -> bool:
    """pg_hba.conf as HBA says; whether it changed."""
    path = pgdir / "pg_hba.conf"
    if path.is_file() and path.read_text() == HBA:
        return False
    write_file(path, HBA, 0o600)
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")
    return True


def start(team_dir: Path, r: Resolved, roles: dict[str, str], say) -> tuple[str, ServerRecord | None]:
    """PostgreSQL running with the three databases and `roles` (login role -> password): (the superuser's password,
    record) with record None if it already ran."""
    bindir = pg_bindir()
    _as_postgres()  # a missing 'postgres' user or runuser fails before anything is created
    pgdir = team_dir / "postgres"
    if os.geteuid() == 0:
        _check_traversable(team_dir)
    pw = _initdb(team_dir, bindir, pgdir, say)
    hba_changed = _write_hba(pgdir)
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
        _provision(r, pw, roles, reload=hba_changed and rec is None)
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
    return record(pid, f"postgresql://{MEMBER}@{r.advertise}:{r.s.pg_port}/{MEMBER_DATABASE}", log)


def _provision(r: Resolved, pw: str, roles: dict[str, str], reload: bool) -> None:
    """The roles with their passwords, the databases with their owners, and no more than that for anyone: what a
    database's owner made stays its own; PUBLIC may connect nowhere; members reach their database's schema only."""
    from psycopg2 import sql
    from psycopg2.extensions import encrypt_password

    conn = connect(host=r.local, port=r.s.pg_port, user=SUPERUSER, password=pw, dbname="postgres")
    try:
        with conn.cursor() as cur:
            if reload:
                cur.execute("SELECT pg_reload_conf()")  # pg_hba.conf changed under a running server
            for role, secret in roles.items():
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
                verb = "ALTER" if cur.fetchone() else "CREATE"
                # A SCRAM verifier, not the password, goes to the server: no log or statistics view can hold it.
                verifier = encrypt_password(secret, role, conn, "scram-sha-256")
                statement = sql.SQL(f"{verb} ROLE {{}} WITH {ROLE_ATTRIBUTES} PASSWORD %s")
                cur.execute(statement.format(sql.Identifier(role)), (verifier,))
            for db in DATABASES:
                owner = sql.Identifier(SERVER_ROLES.get(db, SUPERUSER))
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
                verb = "ALTER DATABASE {} OWNER TO {}" if cur.fetchone() else "CREATE DATABASE {} OWNER {}"
                cur.execute(sql.SQL(verb).format(sql.Identifier(db), owner))
                cur.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(db)))
            cur.execute(
                sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(
                    sql.Identifier(MEMBER_DATABASE), sql.Identifier(MEMBER)
                )
            )
    finally:
        conn.close()
    for db in DATABASES:
        conn = connect(host=r.local, port=r.s.pg_port, user=SUPERUSER, password=pw, dbname=db)
        try:
            with conn.cursor() as cur:
                _hand_over(cur, OWNERS[db])
                if db == MEMBER_DATABASE:  # Optuna makes its tables there
                    cur.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(sql.Identifier(MEMBER)))
        finally:
            conn.close()


# What the superuser owns in this database, outside PostgreSQL's own schemas and extensions: relations (a sequence
# of a column, or of an identity, moves with its table), types, routines.
_OWNED = """
SELECT CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE'
       WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, format('%%I.%%I', n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relowner = %(owner)s::regrole AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND {user_schema}
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                  AND d.deptype IN ('a', 'i', 'e'))
UNION ALL
SELECT 'TYPE', format('%%I.%%I', n.nspname, t.typname)
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE t.typowner = %(owner)s::regrole AND t.typtype IN ('e', 'd') AND {user_schema}
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid AND d.deptype = 'e')
UNION ALL
SELECT 'ROUTINE', p.oid::regprocedure::text
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE p.proowner = %(owner)s::regrole AND {user_schema}
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
""".format(user_schema="n.nspname NOT IN ('information_schema') AND n.nspname !~ '^pg_'")


def _hand_over(cur, role: str) -> None:
    """Give `role` what the superuser made in this database: a team set up by an earlier edgekd, whose servers
    logged in as the superuser, keeps its registry and flow runs in tables the superuser owns."""
    from psycopg2 import sql

    cur.execute(_OWNED, {"owner": SUPERUSER})
    for kind, name in cur.fetchall():
        # `name` is quoted by PostgreSQL itself (format %I, regprocedure)
        cur.execute(sql.SQL(f"ALTER {kind} {name} OWNER TO {{}}").format(sql.Identifier(role)))


def stop(team_dir: Path) -> bool:
    """`pg_ctl stop -m fast` (open sessions rolled back, data kept); whether it was running."""
    pgdir = team_dir / "postgres"
    if not (pgdir / "PG_VERSION").is_file() or not running(team_dir):
        return False
    res = _pg(pg_bindir(), "pg_ctl", "-D", str(pgdir), "-m", "fast", "-w", "-t", "60", "stop", cwd=pgdir)
    if res.returncode != 0:
        raise TeamError(f"`pg_ctl stop` failed ({res.returncode}): {res.stdout}{res.stderr}")
    return True
