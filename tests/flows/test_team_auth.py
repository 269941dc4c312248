"""The team MLflow server's role rules and the team's certificates, without servers (test_team.py checks them
against real ones)."""

import json
import stat
from types import SimpleNamespace

import pytest

from flows.infra.team import tls
from flows.infra.team.mlflow_auth import PROTECTED_ALIAS, refusal
from flows.infra.team.settings import TeamError
from flows.tracking.promotion import ARCHIVED, HISTORY_TAG
from flows.tracking.registry import COMPLETE, PRODUCTION, REGISTERED_BY

pytestmark = pytest.mark.unit

ALIAS = "/api/2.0/mlflow/registered-models/alias"
API = "/api/2.0/mlflow/"


class Registry:
    """The registry as the rules look it up: one model `m`, its version 1 with `tags` (holding production if
    `holds`), its tags `model_tags`; `broken`: every lookup fails as a store that does not answer."""

    def __init__(self, holds=False, tags=None, model_tags=None, broken=False):
        self.holds, self.tags, self.model_tags, self.broken = holds, tags or {}, model_tags or {}, broken

    def _check(self):
        if self.broken:
            raise ConnectionError("could not connect to server: Connection refused")

    def model(self, name):
        self._check()
        return SimpleNamespace(tags=dict(self.model_tags), aliases=()) if name == "m" else None

    def version(self, name, version):
        self._check()
        if name != "m" or str(version) != "1":
            return None
        return SimpleNamespace(tags=dict(self.tags), aliases=(PRODUCTION,) if self.holds else ())


def ask(role, method, path, body=None, user="u", holds=False, registry=None):
    return refusal(user, role, method, path, body or {}, registry or Registry(holds=holds))


def test_the_server_side_names_are_the_registry_s():
    from flows.cli.team import ROLES as CLI_ROLES
    from flows.infra.team import mlflow_auth
    from flows.infra.team.mlflow_auth import ACTOR_TAGS, ROLES

    assert CLI_ROLES == ROLES
    assert (mlflow_auth.HISTORY_TAG, mlflow_auth.COMPLETE, mlflow_auth.REGISTERED_BY) == (
        HISTORY_TAG,
        COMPLETE,
        REGISTERED_BY,
    )
    assert PROTECTED_ALIAS == PRODUCTION
    assert {HISTORY_TAG, ARCHIVED, REGISTERED_BY, "audit."} == {k for k, _ in ACTOR_TAGS}


def test_roles_decide_who_moves_production_and_who_writes_at_all():
    promote = {"name": "m", "alias": "production", "version": "3"}
    stage = {"name": "m", "alias": "staging", "version": "3"}
    assert "only a releaser" in ask("developer", "POST", ALIAS, promote)
    assert "only a releaser" in ask("developer", "DELETE", ALIAS, {"name": "m", "alias": "production"})
    assert ask("developer", "POST", ALIAS, stage) is None
    assert ask("releaser", "POST", ALIAS, promote) is None
    assert "reading only" in ask("viewer", "POST", ALIAS, stage)
    assert "reading only" in ask("viewer", "POST", "/api/2.0/mlflow/experiments/create")
    assert ask("viewer", "POST", "/api/2.0/mlflow/runs/search") is None
    assert ask("viewer", "GET", "/ajax-api/2.0/mlflow/registered-models/get") is None
    assert "no edgekd role" in ask(None, "GET", "/api/2.0/mlflow/experiments/search")
    delete = "/api/2.0/mlflow/model-versions/delete"
    assert "only a releaser" in ask("developer", "DELETE", delete, {"name": "m", "version": "1"}, holds=True)
    assert ask("developer", "DELETE", delete, {"name": "m", "version": "1"}, holds=False) is None
    assert ask("developer", "DELETE", delete, {"name": "m", "version": "2"}) is None  # none: MLflow's 404


def test_an_audit_record_must_name_the_authenticated_user():
    set_tag = "/api/2.0/mlflow/model-versions/set-tag"
    own = {"key": "audit.20261203T101010.000000Z.promote", "value": json.dumps({"who": "alice"})}
    assert ask("releaser", "POST", set_tag, own, user="alice") is None
    assert "must name the authenticated user 'mallory'" in ask("releaser", "POST", set_tag, own, user="mallory")
    history = [{"who": "bob"}, {"who": "alice"}]  # earlier moves by others, the last one is this user's
    body = {"name": "m", "key": HISTORY_TAG, "value": json.dumps(history)}
    before = Registry(model_tags={HISTORY_TAG: json.dumps(history[:1])})
    assert ask("releaser", "POST", API + "registered-models/set-tag", body, user="alice", registry=before) is None
    assert ask("releaser", "POST", API + "registered-models/set-tag", body, user="bob", registry=before) is not None
    create = {"name": "m", "tags": [{"key": REGISTERED_BY, "value": "carol"}, {"key": "sha256", "value": "x"}]}
    assert ask("developer", "POST", "/api/2.0/mlflow/model-versions/create", create, user="carol") is None
    assert "not 'carol'" in ask("developer", "POST", "/api/2.0/mlflow/model-versions/create", create, user="dave")
    broken = {"key": ARCHIVED, "value": "not json"}
    assert ask("releaser", "POST", set_tag, broken, user="alice") is not None


MV_TAG, RM_TAG = API + "model-versions/set-tag", API + "registered-models/set-tag"


def move(who, to="2", action="promote"):
    return {"action": action, "who": who, "when": f"2026-12-0{to}T10:00:00+00:00", "from": None, "to": to}


def test_the_history_of_production_only_grows_by_one_entry_naming_the_user():
    before = [move("alice", "1"), move("rita", "2")]
    registry = Registry(model_tags={HISTORY_TAG: json.dumps(before)})

    def set_history(user, role, value):
        body = {"name": "m", "key": HISTORY_TAG, "value": json.dumps(value)}
        return ask(role, "POST", RM_TAG, body, user=user, registry=registry)

    attempt = move("bob", "3") | {"refused": "fails the gate"}
    assert set_history("bob", "developer", [*before, attempt]) is None  # a refused attempt, recorded by its author
    rewritten = [move("alice", "3"), move("rita", "2"), attempt]  # an earlier move changed, the last entry bob's
    assert "append-only" in set_history("bob", "developer", rewritten)
    assert "append-only" in set_history("alice", "releaser", [move("alice", "3"), move("rita", "2"), move("alice")])
    assert "append-only" in set_history("bob", "developer", [before[0], attempt])  # one dropped
    assert "append-only" in set_history("bob", "developer", [*before, attempt, attempt])  # two at once
    assert "must name the authenticated user 'bob'" in set_history("bob", "developer", [*before, move("alice", "3")])
    assert ask("developer", "POST", RM_TAG, {"name": "m", "key": HISTORY_TAG, "value": "{"}, "bob") is not None
    created = {"name": "n", "tags": [{"key": HISTORY_TAG, "value": json.dumps([move("alice")])}]}
    assert ask("releaser", "POST", API + "registered-models/create", created, user="alice") is None
    made_up = {"name": "n", "tags": [{"key": HISTORY_TAG, "value": json.dumps([move("rita"), move("alice")])}]}
    assert "append-only" in ask("releaser", "POST", API + "registered-models/create", made_up, user="alice")


def test_only_a_releaser_deletes_the_tags_the_record_rests_on():
    kept = [("registered-models/delete-tag", HISTORY_TAG)] + [
        ("model-versions/delete-tag", key)
        for key in ("audit.20261203T101010.000000Z.promote", ARCHIVED, REGISTERED_BY, "sha256", COMPLETE)
    ]
    for endpoint, key in kept:
        body = {"name": "m", "version": "1", "key": key}
        assert "only a releaser deletes the tag" in ask("developer", "DELETE", API + endpoint, body), key
        assert ask("releaser", "DELETE", API + endpoint, body) is None, key
    note = {"name": "m", "version": "1", "key": "note"}
    assert ask("developer", "DELETE", API + "model-versions/delete-tag", note) is None
    rename = {"name": "m", "new_name": "m-old"}
    assert "only a releaser" in ask("developer", "POST", API + "registered-models/rename", rename)


def test_a_complete_versions_sha256_and_its_records_are_written_once():
    audit = "audit.20261203T101010.000000Z.promote"
    complete = Registry(
        tags={"sha256": "aa", COMPLETE: "true", audit: json.dumps({"who": "alice"}), REGISTERED_BY: "x"}
    )
    partial = Registry(tags={"sha256": "aa"})  # its registration has not finished
    sha = {"name": "m", "version": "1", "key": "sha256", "value": "bb"}
    for role in ("developer", "releaser"):
        assert "is complete" in ask(role, "POST", MV_TAG, sha, registry=complete)
    assert ask("developer", "POST", MV_TAG, sha, registry=partial) is None
    again = {"name": "m", "version": "1", "key": audit, "value": json.dumps({"who": "alice"})}
    assert "written once" in ask("releaser", "POST", MV_TAG, again, user="alice", registry=complete)
    fresh = again | {"key": "audit.20261204T101010.000000Z.rollback"}
    assert ask("releaser", "POST", MV_TAG, fresh, user="alice", registry=complete) is None
    claim = {"name": "m", "version": "1", "key": REGISTERED_BY, "value": "bob"}
    assert "written once" in ask("developer", "POST", MV_TAG, claim, user="bob", registry=complete)


def test_every_rule_refuses_when_the_registry_cannot_be_looked_up(monkeypatch):
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, RESOURCE_DOES_NOT_EXIST

    import flows.infra.team.mlflow_auth as auth

    broken = Registry(broken=True)
    sha = {"name": "m", "version": "1", "key": "sha256", "value": "bb"}
    assert "could not be checked" in ask("developer", "POST", MV_TAG, sha, registry=broken)
    history = {"name": "m", "key": HISTORY_TAG, "value": json.dumps([move("u")])}
    assert "could not be checked" in ask("releaser", "POST", RM_TAG, history, registry=broken)
    delete = {"name": "m", "version": "1"}
    assert "could not be checked" in ask("developer", "DELETE", API + "model-versions/delete", delete, registry=broken)

    # the server's own lookups: a store error refuses, a version that does not exist is left to MLflow (its 404)
    class Store:
        error = INTERNAL_ERROR

        def get_model_version(self, name, version):
            raise MlflowException("(psycopg2.OperationalError) connection refused", error_code=self.error)

    store = Store()
    monkeypatch.setattr("mlflow.server.handlers._get_model_registry_store", lambda: store)
    assert "could not be checked" in refusal(
        "bob", "developer", "DELETE", API + "model-versions/delete", delete, auth.ServerRegistry()
    )
    store.error = RESOURCE_DOES_NOT_EXIST
    assert refusal("bob", "developer", "DELETE", API + "model-versions/delete", delete, auth.ServerRegistry()) is None

    def no_role(username):
        raise MlflowException("database is locked")

    monkeypatch.setattr(auth, "_role", no_role)
    assert "could not be looked up" in auth._request_refusal("bob", "GET", API + "registered-models/get", {})


def test_the_team_ca_signs_a_server_certificate_for_every_name_and_keeps_its_keys_private(tmp_path):
    import socket
    import ssl

    made = tls.self_signed(tmp_path, "gpu-box.lan", say=lambda _: None)
    for key in (made.key, tmp_path / "tls" / "ca-key.pem"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert tls._covers(made.cert, made.ca, ["gpu-box.lan", "localhost", "127.0.0.1", socket.gethostname()])
    assert not tls._covers(made.cert, made.ca, ["elsewhere.lan"])
    ctx = ssl.create_default_context(cafile=str(made.ca))  # a client trusting the CA accepts the server's chain
    ctx.load_cert_chain(made.cert, made.key)
    before = made.cert.read_bytes()
    assert tls.self_signed(tmp_path, "gpu-box.lan", say=lambda _: None).cert.read_bytes() == before  # kept
    assert tls.self_signed(tmp_path, "other.lan", say=lambda _: None).cert.read_bytes() != before  # a new name


def test_a_users_certificate_must_come_with_its_own_key(tmp_path):
    for d in ("a", "b", "team"):
        (tmp_path / d).mkdir()
    a, b = (tls.self_signed(tmp_path / d, f"{d}.lan", say=lambda _: None) for d in ("a", "b"))
    team = tmp_path / "team"
    with pytest.raises(TeamError, match="is not the key of --tls-cert"):
        tls.users_own(team, str(a.cert), str(b.key), None)
    with pytest.raises(TeamError, match="--tls-key .*: no such file"):
        tls.users_own(team, str(a.cert), str(tmp_path / "missing.pem"), None)
    with pytest.raises(TeamError, match="not an unencrypted PEM"):
        tls.users_own(team, str(a.cert), str(a.cert), None)
    own = tls.users_own(team, str(a.cert), str(a.key), str(a.ca))
    assert own.ca.read_bytes() == a.ca.read_bytes() and own.cert == a.cert.resolve()
