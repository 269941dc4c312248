"""The team MLflow server's role rules and the team's certificates, without servers (test_team.py checks them
against real ones)."""

import json
import stat

import pytest

from flows.infra.team import tls
from flows.infra.team.mlflow_auth import PROTECTED_ALIAS, refusal
from flows.infra.team.settings import TeamError
from flows.tracking.promotion import ARCHIVED, HISTORY_TAG
from flows.tracking.registry import PRODUCTION, REGISTERED_BY

pytestmark = pytest.mark.unit

ALIAS = "/api/2.0/mlflow/registered-models/alias"


def ask(role, method, path, body=None, user="u", holds=False):
    return refusal(user, role, method, path, body or {}, lambda name, version: holds)


def test_the_server_side_names_are_the_registry_s():
    from flows.cli.team import ROLES as CLI_ROLES
    from flows.infra.team.mlflow_auth import ACTOR_TAGS, ROLES

    assert CLI_ROLES == ROLES
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
    assert ask("developer", "DELETE", delete, {"name": "m", "version": "2"}, holds=False) is None


def test_an_audit_record_must_name_the_authenticated_user():
    set_tag = "/api/2.0/mlflow/model-versions/set-tag"
    own = {"key": "audit.20261203T101010.000000Z.promote", "value": json.dumps({"who": "alice"})}
    assert ask("releaser", "POST", set_tag, own, user="alice") is None
    assert "must name the authenticated user 'mallory'" in ask("releaser", "POST", set_tag, own, user="mallory")
    history = [{"who": "bob"}, {"who": "alice"}]  # earlier moves by others, the last one is this user's
    body = {"key": HISTORY_TAG, "value": json.dumps(history)}
    assert ask("releaser", "POST", "/api/2.0/mlflow/registered-models/set-tag", body, user="alice") is None
    assert ask("releaser", "POST", "/api/2.0/mlflow/registered-models/set-tag", body, user="bob") is not None
    create = {"name": "m", "tags": [{"key": REGISTERED_BY, "value": "carol"}, {"key": "sha256", "value": "x"}]}
    assert ask("developer", "POST", "/api/2.0/mlflow/model-versions/create", create, user="carol") is None
    assert "not 'carol'" in ask("developer", "POST", "/api/2.0/mlflow/model-versions/create", create, user="dave")
    broken = {"key": ARCHIVED, "value": "not json"}
    assert ask("releaser", "POST", set_tag, broken, user="alice") is not None


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
