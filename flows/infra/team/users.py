"""`edgekd team user add|remove|list|passwd`: the team MLflow server's users, each with one of edgekd's roles.

Run on the machine `team up` runs on: it acts as MLflow's admin (TEAM_DIR/secrets.json). A user's password is made
here and written to TEAM_DIR/users/NAME.env (0600), which the user sources: it never goes to the terminal, argv or
a log. The roles are MLflow roles (its RBAC), so the server holds them: mlflow_auth.py reads them on every request.

| role | MLflow permission on every experiment / registered model | edgekd's rule on top |
|---|---|---|
| viewer | READ / READ | reads only |
| developer | EDIT / EDIT | may not move or delete `production` |
| releaser | EDIT / MANAGE | none |
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from flows.infra.team.mlflow_auth import ROLES
from flows.infra.team.settings import Resolved, ServerSecrets, TeamError, TeamState, write_file

WORKSPACE = "default"  # MLflow's workspace when workspaces are off, as here
GRANTS = {
    "viewer": {"experiment": "READ", "registered_model": "READ"},
    "developer": {"experiment": "EDIT", "registered_model": "EDIT"},
    "releaser": {"experiment": "EDIT", "registered_model": "MANAGE"},
}
NAME = re.compile(r"^[a-z][a-z0-9._-]{0,31}$")


@dataclass(frozen=True)
class User:
    name: str
    role: str | None


def _client(team_dir: Path):
    """MLflow's auth client acting as the admin, over TLS verified against the team's CA."""
    import warnings

    with warnings.catch_warnings():  # its import loads MLflow's FastAPI app, which warns about Starlette's WSGI
        warnings.simplefilter("ignore")
        from mlflow.server.auth.client import AuthServiceClient
    from mlflow.utils.rest_utils import MlflowHostCreds, http_request, verify_rest_response

    r = Resolved.of(team_dir, TeamState.read(team_dir).settings)
    if not (team_dir / "secrets.json").is_file():
        raise TeamError(f"{team_dir} has no team (no secrets.json): `edgekd team up --dir {team_dir}` first")
    creds = MlflowHostCreds(
        r.health_urls()["mlflow"],
        username="admin",
        password=ServerSecrets.of(team_dir).mlflow_admin_password,
        server_cert_path=str(r.ca),
    )

    class Admin(AuthServiceClient):
        def _request(self, endpoint, method, *, expected_status: int = 200, **kwargs):
            resp = verify_rest_response(http_request(creds, endpoint, method, **kwargs), endpoint, expected_status)
            return resp.json() if resp.status_code != 204 and resp.content else {}

    return Admin(creds.host)


def _call(team_dir: Path, what: str, fn):
    from mlflow.exceptions import MlflowException

    try:
        return fn(_client(team_dir))
    except MlflowException as e:
        raise TeamError(f"{what}: the MLflow server refused: {e.message}") from None
    except OSError as e:
        raise TeamError(f"{what}: the team's MLflow server does not answer ({e}); is the team up?") from None


def _role_id(c, role: str) -> int:
    """The MLflow role `role`, made with its grants the first time."""
    for r in c.list_roles(WORKSPACE):
        if r.name == role:
            return r.id
    made = c.create_role(WORKSPACE, role, f"edgekd {role}")
    for resource, permission in GRANTS[role].items():
        c.add_role_permission(made.id, resource, "*", permission)
    return made.id


def user_file(team_dir: Path, name: str) -> Path:
    return team_dir / "users" / f"{name}.env"


def _write_credentials(team_dir: Path, name: str, password: str) -> Path:
    path = user_file(team_dir, name)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    write_file(path, f"export MLFLOW_TRACKING_USERNAME={name}\nexport MLFLOW_TRACKING_PASSWORD={password}\n", 0o600)
    return path


def add(team_dir: Path, name: str, role: str) -> Path:
    """Create user `name` with `role`; the path of the file with their credentials."""
    if not NAME.match(name) or name == "admin":
        raise TeamError(f"user name {name!r}: lower-case letters, digits, '.', '_' or '-', at most 32, not 'admin'")
    if role not in ROLES:
        raise TeamError(f"role {role!r}: expected one of {list(ROLES)}")
    password = secrets.token_urlsafe(18)

    def create(c) -> None:
        role_id = _role_id(c, role)
        c.create_user(name, password)
        c.assign_role(name, role_id)

    _call(team_dir, f"adding {name}", create)
    return _write_credentials(team_dir, name, password)


def passwd(team_dir: Path, name: str) -> Path:
    """A new password for `name` (the old one stops working at once); the path of their credentials file."""
    password = secrets.token_urlsafe(18)
    _call(team_dir, f"changing the password of {name}", lambda c: c.update_user_password(name, password))
    return _write_credentials(team_dir, name, password)


def remove(team_dir: Path, name: str) -> None:
    _call(team_dir, f"removing {name}", lambda c: c.delete_user(name))
    user_file(team_dir, name).unlink(missing_ok=True)


def list_users(team_dir: Path) -> list[User]:
    from mlflow.server.auth.routes import LIST_USERS

    users = _call(team_dir, "listing users", lambda c: c._request(LIST_USERS, "GET"))["users"]
    out = []
    for u in users:
        names = {r["name"] for r in u.get("roles", [])}
        out.append(User(u["username"], "admin" if u["is_admin"] else next((r for r in ROLES if r in names), None)))
    return sorted(out, key=lambda u: u.name)
