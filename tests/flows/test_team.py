"""Team mode end to end, with real servers: `edgekd team up` (PostgreSQL, an MLflow server on it with proxied
artifacts and basic auth, a Prefect server on it with an auth string, both behind TLS), a local S3-compatible server
(moto) as the team's DVC remote, and project clones that share nothing but those servers and git. Each clone acts
as a user `team user add` made: alice and rita are releasers, bob and carol developers, vic a viewer.

One module, run once (marker `team`): the servers start once for its tests, which run in order. The dataset is a
user's CSV added with `edgekd data add` in the origin project and pushed to the S3 remote; the clones have only its
.dvc file, so every run first pulls it."""

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from sklearn.datasets import load_breast_cancer

from tests.conftest import require

pytestmark = pytest.mark.team

NAME = "tumours"
BUCKET = "edgekd-team"
# the gate of a run of a few epochs: every run registers a version, every promotion passes
LENIENT = ["gate.max_accuracy_drop=0.5", "gate.plain_tolerance=1.0", "gate.regression_tolerance=1.0"]


def _pg_missing() -> bool:
    return not (shutil.which("pg_config") or shutil.which("initdb") or list(Path("/usr/lib/postgresql").glob("*/bin")))


@pytest.fixture(scope="module", autouse=True)
def _postgresql_installed():
    require(not _pg_missing(), "PostgreSQL binaries not found: apt-get install postgresql (.ci/run installs it)")


def clean_env(**extra: str) -> dict:
    """This environment without any MLflow or Prefect setting of the test process (or its harness)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "EDGEKD_"))}
    return env | extra


def edgekd(root: Path, *args: str, env: dict, timeout: float = 900, **popen) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", "--project-dir", str(root), *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen,
    )


def spawn(root: Path, *args: str, env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "--project-dir", str(root), *args],
        cwd=root,
        env=env,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


USERS = {"alice": "releaser", "rita": "releaser", "bob": "developer", "carol": "developer", "vic": "viewer"}
CLIENT = ("MLFLOW_TRACKING_SERVER_CERT_PATH", "PREFECT_API_SSL_CERT_FILE", "PREFECT_API_AUTH_STRING")
HISTORY = "edgekd.production_history"


def exports(path: Path) -> dict[str, str]:
    return dict(
        line.removeprefix("export ").split("=", 1)
        for line in path.read_text().splitlines()
        if line.startswith("export")
    )


@pytest.fixture(scope="module")
def team(repo, free_port):
    """`edgekd team up` in a folder PostgreSQL's own user can reach (it refuses to run as root), its users added;
    this process reads the registry as the viewer; `team down` after."""
    folder = Path(tempfile.mkdtemp(dir="/tmp", prefix="edgekd-team-"))
    folder.chmod(0o755)
    ports = {"--pg-port": free_port(), "--mlflow-port": free_port(), "--prefect-port": free_port()}
    up = [a for k, v in ports.items() for a in (k, str(v))]
    env = clean_env(PYTHONPATH=str(repo))
    before = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", CLIENT[0])}
    try:
        res = edgekd(repo, "team", "up", "--dir", str(folder), *up, env=env, timeout=400)
        assert res.returncode == 0, res.stdout + res.stderr
        settings = exports(folder / "team.env")
        for user, role in USERS.items():
            res = edgekd(repo, "team", "user", "add", user, "--role", role, "--dir", str(folder), env=env)
            assert res.returncode == 0 and "PASSWORD" not in res.stdout + res.stderr, res.stdout + res.stderr
        users = {u: exports(folder / "users" / f"{u}.env") for u in USERS}
        os.environ.update(users["vic"] | {CLIENT[0]: settings[CLIENT[0]]})
        yield {"dir": folder, "up": up, "env": env, "users": users, **settings}
    finally:
        for k, v in before.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        edgekd(repo, "team", "down", "--dir", str(folder), env=env, timeout=300)
        shutil.rmtree(folder, ignore_errors=True)


def prefect(team: dict, route: str, ca: str | None = None, auth: bool = True):
    """POST {} to a route of the team's Prefect API, as its clients do (auth string, the team's CA)."""
    import httpx

    headers = {"Authorization": "Basic " + base64.b64encode(team["PREFECT_API_AUTH_STRING"].encode()).decode()}
    return httpx.post(
        f"{team['PREFECT_API_URL']}/{route}",
        json={},
        headers=headers if auth else {},
        verify=ca or team["PREFECT_API_SSL_CERT_FILE"],
        timeout=30,
    )


@pytest.fixture(scope="module")
def s3(s3_server):
    with s3_server() as endpoint:
        import boto3

        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint


@pytest.fixture(scope="module")
def origin(tmp_path_factory, team, s3, repo, small_params):
    """A git project whose params.yaml points at the team's MLflow and Prefect servers, with the S3 remote set by
    `edgekd data remote` and a CSV dataset added (and so pushed) by `edgekd data add`, all committed."""
    root = tmp_path_factory.mktemp("origin")
    for d in ("components", "flows"):
        shutil.copytree(repo / d, root / d, ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("dvc.yaml", "prefect.yaml", ".gitignore"):
        shutil.copy(repo / f, root)
    params = small_params()
    params["team"] = {"mlflow_tracking_uri": team["MLFLOW_TRACKING_URI"], "prefect_api_url": team["PREFECT_API_URL"]}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "data" / "external").mkdir(parents=True)
    (root / "mlruns").mkdir()
    (root / "mlruns" / ".gitkeep").touch()
    bc = load_breast_cancer(as_frame=True)
    frame = bc.data.iloc[:, :10].assign(diagnosis=[("malignant", "benign")[t] for t in bc.target])
    frame.to_csv(root / "data" / "external" / f"{NAME}.csv", index=False)
    git = lambda *a: subprocess.run(["git", *a], cwd=root, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    git("config", "user.email", "ci@example.com")
    git("config", "user.name", "ci")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True)
    env = member_env(root, team, s3, "carol")
    res = edgekd(root, "data", "remote", f"s3://{BUCKET}/dvc", "--endpoint-url", s3, env=env, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    res = edgekd(
        root,
        "data",
        "add",
        NAME,
        "--kind",
        "tabular",
        "--source",
        f"{NAME}.csv",
        *[a for s in LENIENT for a in ("--set", s)],
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    git("add", "-A")
    git("commit", "-qm", "tumours on the team remote")
    return root


def member_env(root: Path, team: dict, s3: str, user: str) -> dict:
    """A team member's environment in `root`: their MLflow credentials, the team's CA and Prefect auth string, the
    members' database URL (it holds their role's password) and S3 credentials from the environment; the MLflow and
    Prefect servers from params.yaml's `team` section; Prefect's home in the clone."""
    return clean_env(
        PYTHONPATH=str(root),
        PREFECT_HOME=str(root / ".prefect"),
        EDGEKD_DATABASE_URL=team["EDGEKD_DATABASE_URL"],
        **{k: team[k] for k in CLIENT},
        **team["users"][user],
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )


def clone(origin: Path, dest: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(origin), str(dest)], check=True)
    return dest


@pytest.fixture(scope="module")
def clones(origin, team, s3, tmp_path_factory):
    base = tmp_path_factory.mktemp("clones")
    a, b = clone(origin, base / "alice"), clone(origin, base / "bob")
    return {
        "a": (a, member_env(a, team, s3, "alice")),  # a releaser
        "b": (b, member_env(b, team, s3, "bob")),  # a developer
        "r": (b, member_env(b, team, s3, "rita")),  # a releaser on bob's machine
    }


def registry(team: dict):
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(team["MLFLOW_TRACKING_URI"])
    return MlflowClient(team["MLFLOW_TRACKING_URI"])


def versions(team: dict) -> dict[str, dict]:
    return {str(mv.version): mv.tags for mv in registry(team).search_model_versions(f"name='{NAME}'")}


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def _listener(port: int) -> int:
    import psutil

    return next(c.pid for c in psutil.net_connections("tcp") if c.laddr.port == port and c.status == "LISTEN" and c.pid)


def test_a_run_whose_mlflow_server_is_killed_while_it_registers_stops_within_its_retries(clones, origin, team, repo):
    """Killed at the most delicate moment: the run has pulled the data, trained, and uploaded its model through the
    server, and is about to register it. It must stop within its bounded retries with a clear error, and leave no
    complete version."""
    (a, env_a) = clones["a"]
    assert not (a / "data" / "external" / f"{NAME}.csv").exists()  # only its .dvc file is in git
    port = int(team["MLFLOW_TRACKING_URI"].rsplit(":", 1)[1])
    uploaded = set((team["dir"] / "artifacts").rglob("model.onnx"))
    log = a / "killed.log"
    # 2 retries (about 6 s) instead of the default 4 (about 30 s): the same path, less waiting
    proc = spawn(a, "run", "--dataset", NAME, env=env_a | {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2"}, log=log)
    deadline = time.monotonic() + 600
    while not set((team["dir"] / "artifacts").rglob("model.onnx")) - uploaded:
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)
    os.killpg(os.getpgid(_listener(port)), signal.SIGKILL)
    killed_at = time.monotonic()
    code = proc.wait(timeout=400)
    out = log.read_text()
    assert code == 6 and "stopped answering (each request was retried 2 times)" in out, out[-4000:]
    assert time.monotonic() - killed_at < 60  # bounded: one request's retries, not MLflow's minutes
    assert "pulled from the DVC remote" in out
    assert (a / "data" / "external" / f"{NAME}.csv").read_bytes() == (
        origin / "data" / "external" / f"{NAME}.csv"
    ).read_bytes()

    res = edgekd(repo, "team", "up", "--dir", str(team["dir"]), *team["up"], env=team["env"], timeout=400)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Prefect server already running" in res.stdout and "PostgreSQL already running" in res.stdout
    assert not [v for v, t in versions(team).items() if t.get("registration_complete") == "true"]


def test_two_clones_run_at_once_one_resuming_the_killed_run_and_share_one_registry(clones, origin, team):
    """Clone a runs the killed command again while clone b, which has only the .dvc file, pulls the data and runs
    its own: both finish, each registers a complete version of its own, and the killed run's MLflow runs are
    closed and any version it had begun is gone."""
    (a, env_a), (b, env_b) = clones["a"], clones["b"]
    procs = [
        spawn(a, "run", "--dataset", NAME, "--json", str(a / "run.json"), env=env_a, log=a / "run.log"),
        spawn(
            b,
            "run",
            "--dataset",
            NAME,
            "--set",
            "train.seed=1",
            "--json",
            str(b / "run.json"),
            env=env_b,
            log=b / "run.log",
        ),
    ]
    for p, root in zip(procs, (a, b)):
        assert p.wait(timeout=900) == 0, (root / "run.log").read_text()[-4000:]

    assert (b / "data" / "external" / f"{NAME}.csv").read_bytes() == (
        origin / "data" / "external" / f"{NAME}.csv"
    ).read_bytes()
    va, vb = read_json(a / "run.json")["registered"]["version"], read_json(b / "run.json")["registered"]["version"]
    held = versions(team)
    assert sorted(held) == sorted([va, vb]) and va != vb  # a version the killed run had begun is gone
    assert all(t.get("registration_complete") == "true" for t in held.values())
    assert len({t["sha256"] for t in held.values()}) == 2
    logs = (a / "run.log").read_text() + (b / "run.log").read_text()
    assert "MLflow run(s) left RUNNING by a killed process marked FAILED" in logs
    c = registry(team)
    assert not c.search_runs([c.get_experiment_by_name(NAME).experiment_id], "attributes.status = 'RUNNING'")
    # the resumed run trained nothing again: its stages came from the killed run's cache
    assert "student_plain: reused from cache" in (a / "run.log").read_text()
    # both flow runs on the team's Prefect server; each version names the developer who registered it
    flow_runs = prefect(team, "flow_runs/filter").json()
    assert {held[va]["edgekd.registered_by"], held[vb]["edgekd.registered_by"]} == {"alice", "bob"}
    assert sum(r["state_type"] == "COMPLETED" and r["name"].startswith(NAME) for r in flow_runs) >= 2


def test_only_releasers_move_production_and_the_history_names_who_the_server_authenticated(clones, team):
    """The developer's promotion and rollback are refused by the MLflow server itself (nothing moves); releasers on
    two machines promote (one at a time: of two at once, one is refused) and roll back; the viewer only reads."""
    (a, env_a), (b, env_b), (_, env_r) = clones["a"], clones["b"], clones["r"]
    va, vb = read_json(a / "run.json")["registered"]["version"], read_json(b / "run.json")["registered"]["version"]
    c = registry(team)  # as vic, the viewer
    res = edgekd(b, "promote", va, "--dataset", NAME, env=env_b)
    assert res.returncode == 4 and "bob' is a developer: only a releaser" in res.stderr, res.stderr
    assert "production" not in c.get_registered_model(NAME).aliases
    res = edgekd(a, "promote", va, "--dataset", NAME, env=env_a)
    assert res.returncode == 0, res.stderr

    # both releasers promote vb at the same moment: one moves production, the other is refused
    both = [
        subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "--project-dir", str(r), "promote", vb, "--dataset", NAME],
            cwd=r,
            env=e,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r, e in ((a, env_a), (b, env_r))
    ]
    outcomes = [(p.wait(timeout=300), p.communicate()) for p in both]
    assert sorted(code for code, _ in outcomes) == [0, 4], outcomes

    res = edgekd(b, "rollback", "--dataset", NAME, env=env_b)
    assert res.returncode == 4 and "only a releaser" in res.stderr, res.stderr
    assert str(c.get_model_version_by_alias(NAME, "production").version) == vb
    res = edgekd(b, "rollback", "--dataset", NAME, env=env_r)
    assert res.returncode == 0, res.stderr

    assert str(c.get_model_version_by_alias(NAME, "production").version) == va
    assert [v for v in versions(team) if "production" in c.get_model_version(NAME, v).aliases] == [va]
    history = json.loads(c.get_registered_model(NAME).tags["edgekd.production_history"])
    moves = [(h["action"], h["from"], h["to"], h["who"]) for h in history if "refused" not in h]
    promoter = "alice" if outcomes[0][0] == 0 else "rita"
    assert moves == [("promote", None, va, "alice"), ("promote", va, vb, promoter), ("rollback", vb, va, "rita")]
    res = edgekd(a, "history", "--dataset", NAME, env=env_a)
    assert res.returncode == 0 and res.stdout.count("done") == 3 and f"production = version {va}" in res.stdout
    from mlflow.exceptions import MlflowException

    for write in (
        lambda: c.set_registered_model_alias(NAME, "staging", va),
        lambda: c.create_experiment("vic-was-here"),
        lambda: c.set_model_version_tag(NAME, va, "note", "x"),
    ):
        with pytest.raises(MlflowException, match="viewer: reading only"):
            write()


def test_a_developer_can_neither_rewrite_nor_delete_the_history_or_a_versions_sha256(clones, team):
    """The records `promote`, `rollback` and `predict` trust are the server's to keep: a developer who may write tags
    (they register versions, record refused attempts) still cannot change an earlier move of `production`, delete
    the history or an audit record, or change the sha256 a complete version's model file is checked against."""
    import httpx

    (a, _), (b, _) = clones["a"], clones["b"]
    va, vb = read_json(a / "run.json")["registered"]["version"], read_json(b / "run.json")["registered"]["version"]
    c = registry(team)  # as vic, the viewer
    history, tags = c.get_registered_model(NAME).tags[HISTORY], c.get_model_version(NAME, va).tags
    audit = next(k for k in tags if k.startswith("audit."))
    bob = team["users"]["bob"]

    def as_bob(method: str, endpoint: str, **body) -> httpx.Response:
        return httpx.request(
            method,
            f"{team['MLFLOW_TRACKING_URI']}/api/2.0/mlflow/{endpoint}",
            json={"name": NAME} | body,
            auth=(bob["MLFLOW_TRACKING_USERNAME"], bob["MLFLOW_TRACKING_PASSWORD"]),
            verify=team[CLIENT[0]],
            timeout=30,
        )

    moves = json.loads(history)
    mine = {"action": "promote", "who": "bob", "when": "2026-12-06T10:00:00+00:00", "from": va, "to": vb}
    rewritten = [moves[0] | {"who": "bob"}, *moves[1:], mine | {"refused": "fails the gate"}]  # the last one bob's
    refused = {
        "an earlier move rewritten": as_bob(
            "POST", "registered-models/set-tag", key=HISTORY, value=json.dumps(rewritten)
        ),
        "the history deleted": as_bob("DELETE", "registered-models/delete-tag", key=HISTORY),
        "an audit record deleted": as_bob("DELETE", "model-versions/delete-tag", version=va, key=audit),
        "sha256 replaced": as_bob("POST", "model-versions/set-tag", version=va, key="sha256", value="0" * 64),
        "sha256 deleted": as_bob("DELETE", "model-versions/delete-tag", version=va, key="sha256"),
    }
    got = {what: (r.status_code, r.text[:200]) for what, r in refused.items()}
    assert all(
        code == 403 and ("append-only" in why or "releaser" in why or "complete" in why) for code, why in got.values()
    ), got
    assert c.get_registered_model(NAME).tags[HISTORY] == history
    assert c.get_model_version(NAME, va).tags == tags


def test_a_members_database_login_reaches_only_the_members_database_and_is_no_superuser(team):
    """What team.env gives every member is a login to the `edgekd` database (the promotion guard's locks, Optuna's
    studies) that is no superuser: psql with it is refused by the `mlflow` and `prefect` databases (an UPDATE there
    would move `production` or rewrite the audit history past the MLflow server's rules) and cannot run a program on
    the server; neither can the servers' own logins. Passwords reach psql through PGPASSWORD, never its argv."""
    from urllib.parse import unquote, urlsplit

    from flows.infra.team.postgres import pg_bindir
    from flows.infra.team.settings import ServerSecrets, password

    url = urlsplit(team["EDGEKD_DATABASE_URL"])

    def psql(user: str, secret: str, db: str, statement: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(pg_bindir() / "psql"), "-X", "-w", "-At", "-v", "ON_ERROR_STOP=1", "-h", url.hostname]
            + ["-p", str(url.port), "-U", user, "-d", db, "-c", statement],
            env=clean_env(PGPASSWORD=secret, PGCONNECT_TIMEOUT="10"),
            capture_output=True,
            text=True,
            timeout=60,
        )

    member = (unquote(url.username), unquote(url.password))
    for db, statement in (
        ("mlflow", "UPDATE registered_model_aliases SET version = version"),
        ("mlflow", "UPDATE registered_model_tags SET value = value"),
        ("prefect", "UPDATE deployment SET name = name"),
        ("postgres", "SELECT 1"),
    ):
        res = psql(*member, db, statement)
        assert res.returncode == 2 and "no pg_hba.conf entry" in res.stderr and f'database "{db}"' in res.stderr, (
            db,
            res.returncode,
            res.stdout + res.stderr,
        )
    assert password(team["dir"]) not in (team["dir"] / "team.env").read_text()
    assert url.path == "/edgekd" and psql(*member, "edgekd", "SELECT pg_try_advisory_lock(1)").stdout.strip() == "t"
    res = psql(*member, "edgekd", "SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    assert res.returncode == 0 and res.stdout.strip() == "f", res.stdout + res.stderr
    server, witness = ServerSecrets.of(team["dir"]), Path(f"/tmp/edgekd-owned-{os.getpid()}")
    for user, secret, db in (
        (*member, "edgekd"),
        ("mlflow_server", server.mlflow_db_password, "mlflow"),
        ("prefect_server", server.prefect_db_password, "prefect"),
    ):
        res = psql(user, secret, db, f"COPY (SELECT 1) TO PROGRAM 'touch {witness}'")
        assert res.returncode == 1 and "must be superuser" in res.stderr, (user, res.returncode, res.stderr)
    assert not witness.exists()


def test_the_servers_refuse_no_credentials_plain_http_a_wrong_ca_and_a_replaced_password(team, tmp_path, repo):
    import httpx

    from flows.infra.team import tls

    mlflow_url = team["MLFLOW_TRACKING_URI"]
    anonymous = [
        ("GET", "/api/2.0/mlflow/experiments/search?max_results=1"),
        ("GET", "/api/2.0/mlflow/registered-models/alias?name=tumours&alias=production"),
        ("POST", "/ajax-api/3.0/jobs/search"),  # MLflow's job endpoints (CVE-2026-0545)
        ("POST", "/ajax-api/3.0/jobs/"),
        ("GET", "/ajax-api/3.0/jobs/1"),
        ("POST", "/graphql"),  # (CVE-2025-14297)
    ]
    for method, route in anonymous:
        r = httpx.request(method, mlflow_url + route, json={}, verify=team[CLIENT[0]], timeout=30)
        assert r.status_code == 401, (route, r.status_code, r.text[:200])
    assert prefect(team, "flow_runs/filter", auth=False).status_code == 401
    assert prefect(team, "flow_runs/filter").status_code == 200

    wrong = tls.self_signed(tmp_path, "localhost", say=lambda _: None).ca  # another team's CA
    env = {
        **os.environ,
        CLIENT[0]: str(wrong),
        "MLFLOW_TRACKING_URI": mlflow_url,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    }
    probe = "import mlflow; mlflow.MlflowClient().search_experiments()"
    res = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in res.stderr, res.stderr[-2000:]
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        prefect(team, "flow_runs/filter", ca=str(wrong))
    for url in (mlflow_url, team["PREFECT_API_URL"]):
        plain = url.replace("https://", "http://")
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{plain}/health", timeout=30)

    # a new password for carol: the old one is refused at once, the new one works
    def as_carol(creds: dict) -> int:
        auth = (creds["MLFLOW_TRACKING_USERNAME"], creds["MLFLOW_TRACKING_PASSWORD"])
        url = f"{mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1"
        return httpx.get(url, auth=auth, verify=team[CLIENT[0]], timeout=30).status_code

    old = team["users"]["carol"]
    res = edgekd(repo, "team", "user", "passwd", "carol", "--dir", str(team["dir"]), env=team["env"])
    assert res.returncode == 0 and old["MLFLOW_TRACKING_PASSWORD"] not in res.stdout + res.stderr
    new = exports(team["dir"] / "users" / "carol.env")
    assert (as_carol(old), as_carol(new)) == (401, 200)
    team["users"]["carol"] = new


def test_a_promotion_waits_for_the_database_lock_another_machine_holds(clones, team):
    """The guard is PostgreSQL's, not a file: a lock held by this process, which shares only the database with the
    clone, stops the clone's promotion."""
    import psycopg2

    from flows.tracking.locks import lock_key

    (b, env_b) = clones["b"]
    vb = read_json(b / "run.json")["registered"]["version"]
    before = registry(team).get_model_version_by_alias(NAME, "production").version
    conn = psycopg2.connect(team["EDGEKD_DATABASE_URL"])
    conn.autocommit = True
    try:
        conn.cursor().execute("SELECT pg_advisory_lock(%s)", (lock_key(NAME),))
        res = edgekd(b, "promote", vb, "--dataset", NAME, env=env_b | {"EDGEKD_LOCK_TIMEOUT": "3"})
    finally:
        conn.close()
    assert res.returncode == 4 and "PostgreSQL advisory lock" in res.stderr, res.stderr
    assert registry(team).get_model_version_by_alias(NAME, "production").version == before


def test_predict_downloads_the_production_model_through_the_server_and_checks_its_sha256(clones, team, origin):
    (b, env_b) = clones["b"]
    row = pd.read_csv(origin / "data" / "external" / f"{NAME}.csv").iloc[0, :10]
    res = edgekd(b, "predict", NAME, ",".join(str(v) for v in row), "--ref", "production", env=env_b)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split("\t")[0] in ("benign", "malignant")


def test_deploy_registers_on_the_team_prefect_server_for_workers_elsewhere(clones, team):
    (a, env_a) = clones["a"]
    res = edgekd(a, "deploy", "--no-worker", env=env_a, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "prefect worker start --pool edgekd" in res.stdout
    assert "edgekd-pool" in [d["name"] for d in prefect(team, "deployments/filter").json()]


def test_no_password_or_token_in_logs_the_mlflow_store_prefect_or_the_process_table(team, clones, origin):
    """Every secret (the database superuser's, the servers' and the members' database passwords, MLflow's admin
    password and CSRF key, Prefect's auth string, each user's password) is only in the 0600 files that hold it: not
    in a log, a run's params or tags, a registered model's or version's tags, Prefect's logs and deployments, nor any
    process's command line."""
    import psutil

    from flows.infra.team.settings import ServerSecrets, member_password, password

    server = ServerSecrets.of(team["dir"])
    secrets = [password(team["dir"]), server.mlflow_admin_password, server.flask_secret_key]
    secrets += [server.mlflow_db_password, server.prefect_db_password, member_password(team["dir"])]
    secrets += [server.prefect_auth_string.split(":", 1)[1]] + [
        u["MLFLOW_TRACKING_PASSWORD"] for u in team["users"].values()
    ]
    roots = [team["dir"], origin, clones["a"][0], clones["b"][0]]
    texts = {str(p): p.read_text(errors="replace") for r in roots for p in Path(r).rglob("*.log") if p.is_file()}
    c = registry(team)
    for exp in c.search_experiments():
        for run in c.search_runs([exp.experiment_id], max_results=1000):
            texts[f"run {run.info.run_id}"] = json.dumps([run.data.params, run.data.tags])
    for rm in c.search_registered_models():
        texts[f"model {rm.name}"] = json.dumps(rm.tags)
        for mv in c.search_model_versions(f"name='{rm.name}'"):
            texts[f"version {mv.version}"] = json.dumps([mv.tags, mv.description])
    texts["prefect logs"] = prefect(team, "logs/filter").text
    texts["prefect deployments"] = prefect(team, "deployments/filter").text
    texts["prefect flow runs"] = prefect(team, "flow_runs/filter").text
    for proc in psutil.process_iter(["pid", "cmdline"]):
        texts[f"pid {proc.info['pid']}"] = " ".join(proc.info["cmdline"] or [])
    assert len(texts) > 20 and any("team" in k for k in texts)
    leaks = [(where, n) for n, secret in enumerate(secrets) for where, text in texts.items() if secret in text]
    assert not leaks


def test_team_down_stops_every_server_and_leaves_nothing_running(team, repo):
    from flows.infra import team as servers
    from flows.infra.team.servers import processes

    res = edgekd(repo, "team", "down", "--dir", str(team["dir"]), env=team["env"], timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert not any(s.healthy for s in servers.status(team["dir"]).values())
    assert not processes(team["dir"], "mlflow") and not processes(team["dir"], "prefect")
    for port in team["up"][1::2]:
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", int(port))) != 0
