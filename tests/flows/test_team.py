"""Team mode end to end, with real servers: `edgekd team up` (PostgreSQL, an MLflow server on it with proxied
artifacts, a Prefect server on it), a local S3-compatible server (moto) as the team's DVC remote, and project clones
that share nothing but those servers and git.

One module, run once (marker `team`): the servers start once for its tests, which run in order. The dataset is a
user's CSV added with `edgekd data add` in the origin project and pushed to the S3 remote; the clones have only its
.dvc file, so every run first pulls it."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import yaml
from sklearn.datasets import load_breast_cancer

pytestmark = pytest.mark.team

NAME = "tumours"
BUCKET = "edgekd-team"
# the gate of a run of a few epochs: every run registers a version, every promotion passes
LENIENT = ["gate.max_accuracy_drop=0.5", "gate.plain_tolerance=1.0", "gate.regression_tolerance=1.0"]


def _pg_missing() -> bool:
    return not (shutil.which("pg_config") or shutil.which("initdb") or list(Path("/usr/lib/postgresql").glob("*/bin")))


if _pg_missing():
    pytest.skip(
        "PostgreSQL binaries not found: apt-get install postgresql (.ci/run installs it)", allow_module_level=True
    )


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


@pytest.fixture(scope="module")
def team(repo, free_port):
    """`edgekd team up` in a folder PostgreSQL's own user can reach (it refuses to run as root), `team down` after."""
    folder = Path(tempfile.mkdtemp(dir="/tmp", prefix="edgekd-team-"))
    folder.chmod(0o755)
    ports = {"--pg-port": free_port(), "--mlflow-port": free_port(), "--prefect-port": free_port()}
    up = [a for k, v in ports.items() for a in (k, str(v))]
    env = clean_env(PYTHONPATH=str(repo))
    try:
        res = edgekd(repo, "team", "up", "--dir", str(folder), *up, env=env, timeout=400)
        assert res.returncode == 0, res.stdout + res.stderr
        settings = dict(
            line.removeprefix("export ").split("=", 1)
            for line in (folder / "team.env").read_text().splitlines()
            if line.startswith("export ")
        )
        yield {"dir": folder, "up": up, "env": env, **settings}
    finally:
        edgekd(repo, "team", "down", "--dir", str(folder), env=env, timeout=300)
        shutil.rmtree(folder, ignore_errors=True)


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
    """A team member's environment in `root`: the database URL (it holds the password) and S3 credentials from the
    environment; the MLflow and Prefect servers from params.yaml's `team` section; Prefect's home in the clone."""
    return clean_env(
        PYTHONPATH=str(root),
        PREFECT_HOME=str(root / ".prefect"),
        EDGEKD_USER=user,
        EDGEKD_DATABASE_URL=team["EDGEKD_DATABASE_URL"],
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
    return {"a": (a, member_env(a, team, s3, "alice")), "b": (b, member_env(b, team, s3, "bob"))}


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
    # both flow runs on the team's Prefect server
    req = urllib.request.Request(
        f"{team['PREFECT_API_URL']}/flow_runs/filter",
        data=b"{}",
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    flow_runs = json.loads(urllib.request.urlopen(req, timeout=30).read())
    assert sum(r["state_type"] == "COMPLETED" and r["name"].startswith(NAME) for r in flow_runs) >= 2


def test_promote_from_one_clone_roll_back_from_the_other_one_production_and_both_moves_in_history(clones, team):
    (a, env_a), (b, env_b) = clones["a"], clones["b"]
    va, vb = read_json(a / "run.json")["registered"]["version"], read_json(b / "run.json")["registered"]["version"]
    res = edgekd(a, "promote", va, "--dataset", NAME, env=env_a)
    assert res.returncode == 0, res.stderr

    # both machines promote vb at the same moment: one moves production, the other is refused
    both = [
        subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "--project-dir", str(r), "promote", vb, "--dataset", NAME],
            cwd=r,
            env=e,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r, e in ((a, env_a), (b, env_b))
    ]
    outcomes = [(p.wait(timeout=300), p.communicate()) for p in both]
    assert sorted(code for code, _ in outcomes) == [0, 4], outcomes

    res = edgekd(b, "rollback", "--dataset", NAME, env=env_b)
    assert res.returncode == 0, res.stderr

    c = registry(team)
    assert str(c.get_model_version_by_alias(NAME, "production").version) == va
    assert [v for v in versions(team) if "production" in c.get_model_version(NAME, v).aliases] == [va]
    history = json.loads(c.get_registered_model(NAME).tags["edgekd.production_history"])
    moves = [(h["action"], h["from"], h["to"], h["who"]) for h in history if "refused" not in h]
    promoter = "alice" if outcomes[0][0] == 0 else "bob"
    assert moves == [("promote", None, va, "alice"), ("promote", va, vb, promoter), ("rollback", vb, va, "bob")]
    res = edgekd(a, "history", "--dataset", NAME, env=env_a)
    assert res.returncode == 0 and res.stdout.count("done") == 3 and f"production = version {va}" in res.stdout


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
    req = urllib.request.Request(
        f"{team['PREFECT_API_URL']}/deployments/filter",
        data=b"{}",
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    assert "edgekd-pool" in [d["name"] for d in json.loads(urllib.request.urlopen(req, timeout=30).read())]


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
