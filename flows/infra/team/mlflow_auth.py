"""The team MLflow server's authorization function (its auth config's `authorization_function`): MLflow's basic
auth, then edgekd's roles, enforced by the server whoever the client is.

MLflow's own permissions (READ / EDIT / MANAGE per experiment and registered model, and the roles `team user add`
grants them through) cannot tell one alias or tag from another, and whoever creates a registered model may MANAGE
it. So this function adds, for every authenticated request:

- a user without one of edgekd's roles may do nothing; a `viewer` may only read;
- only a `releaser` (or MLflow's admin) may set or delete the `production` alias, delete or rename a registered
  model, delete the version that holds `production`, or delete a tag the record rests on (KEPT_TAGS): a
  `developer` registers versions and moves `staging`;
- an audit record (who promoted, rolled back, registered) must name the authenticated user, not whoever the client
  claims to be; the history of `production` only grows, by one entry naming that user; an audit record and who
  registered a version are written once; a complete version's `sha256` (what `predict` and `promote` check the
  model file against) never changes.

A rule that needs the registry (who holds `production`, a tag's value now) refuses when the lookup fails: a store
that does not answer is no reason to let a write through. It runs inside `mlflow server` (imported by name), so it
imports nothing of edgekd but this module.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Protocol

ROLES = ("viewer", "developer", "releaser")
PROTECTED_ALIAS = "production"  # flows.tracking.registry.PRODUCTION
HISTORY_TAG = "edgekd.production_history"  # flows.tracking.promotion.HISTORY_TAG
SHA256 = "sha256"  # the model file's digest, recorded at registration (flows.phases.publish)
COMPLETE = "registration_complete"  # flows.tracking.registry.COMPLETE: the last tag of a registration
REGISTERED_BY = "edgekd.registered_by"  # flows.tracking.registry.REGISTERED_BY
# Tags that record who acted: (key or key prefix, the JSON field naming the actor). The registered model's history
# is a list: its last entry is the move being recorded.
ACTOR_TAGS = (
    (HISTORY_TAG, "who"),
    ("audit.", "who"),
    ("archived", "by"),
    (REGISTERED_BY, None),  # the value is the name itself
)
# Tags whose deletion would erase a record or what a version is checked against: only a releaser deletes them.
KEPT_TAGS = (HISTORY_TAG, "audit.", "archived", REGISTERED_BY, SHA256, COMPLETE)
# Tags a version keeps as first written.
WRITE_ONCE_TAGS = ("audit.", REGISTERED_BY)
READ_SUFFIXES = ("/search", "/graphql", "/get", "/list", "/current")


@dataclass(frozen=True)
class Entry:
    """A registered model or version as the rules need it: its tags and aliases."""

    tags: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()


class Registry(Protocol):
    """The registry as it is now. Each lookup answers None for a model or version that does not exist (MLflow then
    answers the request itself) and raises when the store cannot answer."""

    def model(self, name: str) -> Entry | None: ...

    def version(self, name: str, version: str) -> Entry | None: ...


def _endpoint(path: str) -> str:
    """`/api/2.0/mlflow/registered-models/alias` -> `registered-models/alias` (the UI's /ajax-api/ alike)."""
    return path.split("/mlflow/", 1)[1] if "/mlflow/" in path else path


def _reads(method: str, path: str) -> bool:
    return method in ("GET", "HEAD", "OPTIONS") or path.rstrip("/").endswith(READ_SUFFIXES)


def _matches(key: str, names: tuple[str, ...]) -> bool:
    return any(key == n or (n.endswith(".") and key.startswith(n)) for n in names)


def _actor_refusal(user: str, key: str, value: str) -> str | None:
    for prefix, field_name in ACTOR_TAGS:
        if _matches(key, (prefix,)):
            try:
                record = json.loads(value) if field_name else value
                if isinstance(record, list):
                    record = record[-1] if record else {}
                named = record.get(field_name) if field_name else record
            except (ValueError, AttributeError):
                named = None
            if named != user:
                return f"tag {key!r} must name the authenticated user {user!r}, not {named!r}"
    return None


def _append_refusal(key: str, before: str | None, after: str) -> str | None:
    """The history only grows: its new value is the old list plus one entry (whose actor _actor_refusal checks)."""
    try:
        old, new = json.loads(before) if before else [], json.loads(after)
    except ValueError:
        return f"tag {key!r} must be a JSON list"
    if not isinstance(new, list) or not isinstance(old, list) or new[:-1] != old or len(new) != len(old) + 1:
        return f"tag {key!r} is append-only: its new value must be the old one plus one entry"
    return None


def refusal(user: str, role: str | None, method: str, path: str, body: dict, registry: Registry) -> str | None:
    """Why edgekd's roles refuse this request, or None. `body`: its JSON and query arguments together; `registry`
    looks the registry up, and a lookup that fails refuses the request."""
    if role is None:
        return f"user {user!r} has no edgekd role (viewer, developer or releaser): ask the team's admin"
    if _reads(method, path):
        return None
    if role == "viewer":
        return f"user {user!r} is a viewer: reading only"
    try:
        return _write_refusal(user, role, _endpoint(path), body, registry)
    except Exception as e:  # whatever the store raised, the write is not let through
        logging.getLogger(__name__).warning("refused %s %s: the registry lookup failed", method, path, exc_info=True)
        return f"the registry could not be checked ({type(e).__name__}); nothing was changed, try again"


def _write_refusal(user: str, role: str, endpoint: str, body: dict, registry: Registry) -> str | None:
    name, version, key = str(body.get("name", "")), str(body.get("version", "")), str(body.get("key", ""))
    if role != "releaser":
        alias = endpoint == "registered-models/alias" and body.get("alias") == PROTECTED_ALIAS
        holder = endpoint == "model-versions/delete" and PROTECTED_ALIAS in _aliases(registry.version(name, version))
        if alias or holder or endpoint in ("registered-models/delete", "registered-models/rename"):
            return f"user {user!r} is a {role}: only a releaser moves or deletes {PROTECTED_ALIAS!r}"
        if endpoint.endswith("/delete-tag") and _matches(key, KEPT_TAGS):
            return f"user {user!r} is a {role}: only a releaser deletes the tag {key!r}"
    for tag, value in _tags(endpoint, body):
        if why := _actor_refusal(user, tag, value) or _history_refusal(endpoint, name, version, tag, value, registry):
            return why
    return None


def _aliases(entry: Entry | None) -> tuple[str, ...]:
    return entry.aliases if entry else ()


def _history_refusal(endpoint: str, name: str, version: str, key: str, value: str, registry: Registry) -> str | None:
    """What a write may not change: the history (append-only: a new model's starts with one entry), a record written
    once, a complete version's sha256."""
    if endpoint == "registered-models/create" and key == HISTORY_TAG:
        return _append_refusal(key, None, value)
    if endpoint == "registered-models/set-tag" and key == HISTORY_TAG:
        model = registry.model(name)
        return _append_refusal(key, (model.tags if model else {}).get(key), value)
    if endpoint == "model-versions/set-tag" and (_matches(key, WRITE_ONCE_TAGS) or key == SHA256):
        tags = (registry.version(name, version) or Entry()).tags
        if _matches(key, WRITE_ONCE_TAGS) and key in tags:
            return f"tag {key!r} of {name} version {version} is a record, written once: it is not rewritten"
        if key == SHA256 and COMPLETE in tags:
            return f"{name} version {version} is complete: its {SHA256!r} is what its model file is checked against"
    return None


def _tags(endpoint: str, body: dict) -> list[tuple[str, str]]:
    if endpoint in ("model-versions/set-tag", "registered-models/set-tag"):
        return [(str(body.get("key", "")), str(body.get("value", "")))]
    if endpoint in ("model-versions/create", "registered-models/create"):
        return [(str(t.get("key", "")), str(t.get("value", ""))) for t in body.get("tags") or [] if isinstance(t, dict)]
    return []


class ServerRegistry:
    """The registry through the MLflow server's own store."""

    @staticmethod
    def _get(fn, *args) -> Entry | None:
        from mlflow.exceptions import MlflowException

        try:
            found = fn(*args)
        except MlflowException as e:
            if e.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        return Entry(dict(found.tags or {}), tuple(getattr(found, "aliases", None) or ()))

    def model(self, name: str) -> Entry | None:
        from mlflow.server.handlers import _get_model_registry_store

        return self._get(_get_model_registry_store().get_registered_model, name)

    def version(self, name: str, version: str) -> Entry | None:
        from mlflow.server.handlers import _get_model_registry_store

        return self._get(_get_model_registry_store().get_model_version, name, version)


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
        g.edgekd_refusal = _request_refusal(auth.username, request.method, request.path, body)
    if g.edgekd_refusal:
        res = make_response(g.edgekd_refusal)
        res.status_code = 403
        return res
    return auth


def _request_refusal(username: str, method: str, path: str, body: dict) -> str | None:
    try:
        role, admin = _role(username)
    except Exception as e:  # no role known is no role granted
        return f"the role of {username!r} could not be looked up ({type(e).__name__}); nothing was changed, try again"
    return None if admin else refusal(username, role, method, path, body, ServerRegistry())


def _role(username: str) -> tuple[str | None, bool]:
    from mlflow.server.auth import store

    user = store.get_user(username)
    names = {r.name for r in store.list_user_roles(user.id)}
    return next((r for r in reversed(ROLES) if r in names), None), bool(user.is_admin)
