"""The team MLflow server's authorization function (its auth config's `authorization_function`): MLflow's basic
auth, then edgekd's roles, enforced by the server whoever the client is.

MLflow's own permissions (READ / EDIT / MANAGE per experiment and registered model, and the roles `team user add`
grants them through) cannot tell one alias from another, and whoever creates a registered model may MANAGE it. So
this function adds, for every authenticated request:

- a user without one of edgekd's roles may do nothing; a `viewer` may only read;
- only a `releaser` (or MLflow's admin) may set or delete the `production` alias, or delete the version that holds
  it: a `developer` registers versions and moves `staging`;
- an audit record (who promoted, rolled back, registered) must name the authenticated user, not whoever the client
  claims to be.

It runs inside `mlflow server` (imported by name), so it imports nothing of edgekd but this module.
"""

from __future__ import annotations

import json
from collections.abc import Callable

ROLES = ("viewer", "developer", "releaser")
PROTECTED_ALIAS = "production"  # flows.tracking.registry.PRODUCTION
# Tags that record who acted: (key or key prefix, the JSON field naming the actor). The registered model's history
# is a list: its last entry is the move being recorded.
ACTOR_TAGS = (
    ("edgekd.production_history", "who"),
    ("audit.", "who"),
    ("archived", "by"),
    ("edgekd.registered_by", None),  # the value is the name itself
)
READ_SUFFIXES = ("/search", "/graphql", "/get", "/list", "/current")


def _endpoint(path: str) -> str:
    """`/api/2.0/mlflow/registered-models/alias` -> `registered-models/alias` (the UI's /ajax-api/ alike)."""
    return path.split("/mlflow/", 1)[1] if "/mlflow/" in path else path


def _reads(method: str, path: str) -> bool:
    return method in ("GET", "HEAD", "OPTIONS") or path.rstrip("/").endswith(READ_SUFFIXES)


def _actor_refusal(user: str, key: str, value: str) -> str | None:
    for prefix, field in ACTOR_TAGS:
        if key == prefix or (prefix.endswith(".") and key.startswith(prefix)):
            try:
                record = json.loads(value) if field else value
                if isinstance(record, list):
                    record = record[-1] if record else {}
                named = record.get(field) if field else record
            except (ValueError, AttributeError):
                named = None
            if named != user:
                return f"tag {key!r} must name the authenticated user {user!r}, not {named!r}"
    return None


def refusal(
    user: str, role: str | None, method: str, path: str, body: dict, holds_production: Callable[[str, str], bool]
) -> str | None:
    """Why edgekd's roles refuse this request, or None. `body`: its JSON and query arguments together;
    `holds_production(name, version)` looks the registry up."""
    endpoint = _endpoint(path)
    if role is None:
        return f"user {user!r} has no edgekd role (viewer, developer or releaser): ask the team's admin"
    if _reads(method, path):
        return None
    if role == "viewer":
        return f"user {user!r} is a viewer: reading only"
    if role != "releaser":
        alias = endpoint == "registered-models/alias" and body.get("alias") == PROTECTED_ALIAS
        deletes = endpoint == "model-versions/delete" and holds_production(body.get("name", ""), body.get("version"))
        if alias or deletes or endpoint == "registered-models/delete":
            return f"user {user!r} is a {role}: only a releaser moves or deletes {PROTECTED_ALIAS!r}"
    for key, value in _tags(endpoint, body):
        if why := _actor_refusal(user, key, value):
            return why
    return None


def _tags(endpoint: str, body: dict) -> list[tuple[str, str]]:
    if endpoint in ("model-versions/set-tag", "registered-models/set-tag"):
        return [(str(body.get("key", "")), str(body.get("value", "")))]
    if endpoint in ("model-versions/create", "registered-models/create"):
        return [(str(t.get("key", "")), str(t.get("value", ""))) for t in body.get("tags") or [] if isinstance(t, dict)]
    return []


def authenticate():
    """MLflow's basic authentication, then `refusal` (403 with its reason)."""
    from flask import g, make_response, request
    from mlflow.server.auth import authenticate_request_basic_auth

    auth = authenticate_request_basic_auth()
    if getattr(auth, "username", None) is None:
        return auth  # MLflow's 401
    if not hasattr(g, "edgekd_refusal"):
        data = request.get_json(silent=True)
        body = dict(request.args) | (data if isinstance(data, dict) else {})
        role, admin = _role(auth.username)
        g.edgekd_refusal = None if admin else refusal(auth.username, role, request.method, request.path, body, _holds)
    if g.edgekd_refusal:
        res = make_response(g.edgekd_refusal)
        res.status_code = 403
        return res
    return auth


def _role(username: str) -> tuple[str | None, bool]:
    from mlflow.server.auth import store

    user = store.get_user(username)
    names = {r.name for r in store.list_user_roles(user.id)}
    return next((r for r in reversed(ROLES) if r in names), None), bool(user.is_admin)


def _holds(name: str, version: str) -> bool:
    from mlflow.server.handlers import _get_model_registry_store

    try:
        return PROTECTED_ALIAS in _get_model_registry_store().get_model_version(name, version).aliases
    except Exception:  # no such version: MLflow answers that itself
        return False
