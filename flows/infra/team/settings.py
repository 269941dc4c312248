"""A team's settings (what `team up` was asked for, kept in TEAM_DIR/team.json), the values derived from them, its
password and the URLs clients and servers use."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

from components.formats.base import atomic_path

# PostgreSQL's roles. The superuser (made by initdb; its password in TEAM_DIR/password) only sets the cluster up:
# each server logs in as the owner of its own database, and members as MEMBER, which reaches only MEMBER_DATABASE
# (the promotion guard's advisory locks, Optuna's studies). None of them is a superuser (postgres.py grants them).
SUPERUSER = "edgekd"
MEMBER = "edgekd_member"
MEMBER_DATABASE = "edgekd"
SERVER_ROLES = {"mlflow": "mlflow_server", "prefect": "prefect_server"}  # database (and server) -> its owner
WILDCARDS = ("0.0.0.0", "::", "*")


class TeamError(RuntimeError):
    """A team server could not be started, found or stopped; the message says why and what to do."""


class TeamSettings(BaseModel):
    """What `team up` starts the servers with; a setting not given is the one the team last ran with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    advertise: str | None = None
    pg_port: int = 5432
    mlflow_port: int = 5000
    prefect_port: int = 4200
    artifacts_destination: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None


PORT_FLAGS = {
    "host": "--host",
    "advertise": "--advertise",
    "pg_port": "--pg-port",
    "mlflow_port": "--mlflow-port",
    "prefect_port": "--prefect-port",
    "artifacts_destination": "--artifacts-destination",
    "tls_cert": "--tls-cert",
    "tls_key": "--tls-key",
    "tls_ca": "--tls-ca",
}


class ServerRecord(BaseModel):
    """A server `team up` started: its process (pid and start time, to tell it from a later process of the same
    pid), the URL it was advertised at, its log and when it started."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pid: int
    create_time: float
    url: str
    log: str
    started_at: str


class TeamState(BaseModel):
    """TEAM_DIR/team.json: the settings the team last ran with and the servers running from it."""

    model_config = ConfigDict(extra="forbid")

    settings: TeamSettings = TeamSettings()
    servers: dict[str, ServerRecord] = {}

    @classmethod
    def read(cls, team_dir: Path) -> TeamState:
        path = team_dir / "team.json"
        return cls.model_validate(json.loads(path.read_text())) if path.is_file() else cls()

    def write(self, team_dir: Path) -> None:
        write_file(team_dir / "team.json", self.model_dump_json(indent=2) + "\n")


def write_file(path: Path, text: str, mode: int = 0o644) -> None:
    """Written atomically, so that a reader (status, another `up`) never sees half a file, with permissions `mode`
    before it appears (0600 for what holds the password)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
        os.chmod(tmp, mode)


@dataclass(frozen=True)
class Resolved:
    """Settings with their derived values: the advertised host, the artifacts destination, and `local`, the address
    this machine reaches the servers at."""

    s: TeamSettings
    advertise: str
    artifacts_destination: str
    local: str
    team_dir: Path

    @classmethod
    def of(cls, team_dir: Path, s: TeamSettings) -> Resolved:
        advertise = s.advertise or (socket.gethostname() if s.host in WILDCARDS else s.host)
        dest = s.artifacts_destination or str(team_dir / "artifacts")
        return cls(
            s,
            advertise,
            dest if "://" in dest else str(Path(dest).resolve()),
            "127.0.0.1" if s.host in WILDCARDS else s.host,
            team_dir,
        )

    @property
    def ca(self) -> Path:
        """What clients verify the servers' certificate with (tls.py puts the team's CA, or the user's, there)."""
        return self.team_dir / "tls" / "ca.pem"

    def client_env(self, member_password: str, secrets: ServerSecrets) -> dict[str, str]:
        """What team.env exports: every URL names the advertised host, so it works from other machines too; both
        clients verify the servers against the team's CA; the database is the members' role's, never the
        superuser's. A user's own name and password come from their file (`team user add`), not from here."""
        pw, adv, s = quote(member_password, safe=""), self.advertise, self.s
        return {
            "MLFLOW_TRACKING_URI": f"https://{adv}:{s.mlflow_port}",
            "MLFLOW_TRACKING_SERVER_CERT_PATH": str(self.ca),
            "PREFECT_API_URL": f"https://{adv}:{s.prefect_port}/api",
            "PREFECT_API_SSL_CERT_FILE": str(self.ca),
            "PREFECT_API_AUTH_STRING": secrets.prefect_auth_string,
            "EDGEKD_DATABASE_URL": f"postgresql://{MEMBER}:{pw}@{adv}:{s.pg_port}/{MEMBER_DATABASE}",
        }

    def health_urls(self) -> dict[str, str]:
        # Checked from here, through the local address: the advertised name need not resolve on this machine.
        return {
            "mlflow": f"https://{self.local}:{self.s.mlflow_port}",
            "prefect": f"https://{self.local}:{self.s.prefect_port}/api",
        }

    def db_url(self, role: str, password: str, db: str, driver: str = "postgresql") -> str:
        """A server's URL of its database on this machine (it holds the password: environment only)."""
        return f"{driver}://{role}:{quote(password, safe='')}@{self.local}:{self.s.pg_port}/{db}"


def _token() -> str:
    import secrets

    return secrets.token_urlsafe(24)


class ServerSecrets(BaseModel):
    """TEAM_DIR/secrets.json (0600), made once: the MLflow admin's password (`team user` acts as the admin), the key
    MLflow signs its CSRF tokens with, the string every Prefect client authenticates with, and the passwords the
    servers log in to their databases with. The servers get them through their environment, never their command
    line."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mlflow_admin_password: str
    flask_secret_key: str
    prefect_auth_string: str
    # (defaults: a secrets.json an earlier edgekd wrote gets them on the next `up`)
    mlflow_db_password: str = Field(default_factory=_token)
    prefect_db_password: str = Field(default_factory=_token)

    @classmethod
    def of(cls, team_dir: Path) -> ServerSecrets:
        import secrets

        path = team_dir / "secrets.json"
        if path.is_file():
            data = json.loads(path.read_text())
            made = cls.model_validate(data)
            if data.keys() == cls.model_fields.keys():
                return made
        else:
            made = cls(
                mlflow_admin_password=_token(),
                flask_secret_key=secrets.token_hex(32),
                prefect_auth_string=f"edgekd:{_token()}",
            )
        write_file(path, made.model_dump_json(indent=2) + "\n", 0o600)
        return made

    def database_passwords(self, member_password: str) -> dict[str, str]:
        """Every login role but the superuser, with its password."""
        servers = {"mlflow": self.mlflow_db_password, "prefect": self.prefect_db_password}
        return {SERVER_ROLES[name]: pw for name, pw in servers.items()} | {MEMBER: member_password}


def member_password(team_dir: Path) -> str:
    """The members' database password (TEAM_DIR/member-password, 0600), made when missing: deleting the file and
    running `team up` again gives members a new one (in a new team.env)."""
    path = team_dir / "member-password"
    if not path.is_file():
        write_file(path, _token() + "\n", 0o600)
    return path.read_text().strip()


def password(team_dir: Path) -> str:
    path = team_dir / "password"
    if not path.is_file():
        raise TeamError(
            f"{path} is missing; the PostgreSQL data in {team_dir / 'postgres'} can't be reached "
            f"without it. Delete {team_dir} to start afresh (this deletes the registry)"
        )
    return path.read_text().strip()


def record(pid: int, url: str, log: Path) -> ServerRecord:
    from datetime import datetime

    import psutil

    return ServerRecord(
        pid=pid,
        create_time=psutil.Process(pid).create_time(),
        url=url,
        log=str(log),
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def port_free(host: str, port: int) -> bool:
    # SO_REUSEADDR as the servers set it: a port in TIME_WAIT is free to them, only a listener blocks it.
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("" if host == "*" else host, port))
            return True
        except OSError:
            return False


def need_port(host: str, port: int, flag: str, what: str) -> None:
    if not port_free(host, port):
        raise TeamError(
            f"port {port} on {host} is in use by another process; {what} can't listen there. "
            f"Stop that process or pick another port with {flag}"
        )
