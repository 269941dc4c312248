"""Throwaway projects for the flows' tests: the pipeline's code and dvc.yaml, their own DVC repo, MLflow store
(SQLite) and Prefect test server, so a test runs the real flow without touching this checkout; and the helpers
that run and stop `edgekd` in a subprocess, a local S3 server and free ports. Each is a fixture returning the
helper (a function or a context manager)."""

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
import yaml

from tests.conftest import require

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "datasets"

# Shrinks the shipped params.yaml for tests: few epochs, a short benchmark, a lenient gate.
SMALL = {
    "teacher": {"epochs": 4, "patience": 4},
    "student": {"epochs": 4},
    "prune": {"finetune_epochs": 2},
    "quantize": {"calibration_samples": 64, "qat_threshold": 1.0, "qat_epochs": 1},  # QAT only where a test asks
    # rounds added while a comparison is undecided: one look of at most a few seconds (the code path, not its budget)
    "benchmark": {"warmup_runs": 5, "timed_runs": 50, "max_extra_looks": 1, "max_extra_seconds": 5},
    "gate": {"min_accuracy": 0.5, "max_accuracy_drop": 0.5, "max_p95_ms": 50.0, "max_size_kb": 200.0},
}


def _shipped() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def _small(**sections) -> dict:
    """The shipped params.yaml shrunk by SMALL, with `sections` merged on top of each stage section."""
    params = _shipped()
    for name, values in SMALL.items():
        params[name] = params.get(name, {}) | values
    for name, values in sections.items():
        params[name] = params.get(name, {}) | values
    return params


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared() -> Path:
    """../shared/datasets, which CI always has; a test that needs it is skipped where it is absent."""
    require(SHARED.is_dir(), f"{SHARED} is absent (the shared datasets; CI has them)")
    return SHARED


@pytest.fixture(scope="session")
def shipped_params():
    """The shipped params.yaml, a fresh dict each call."""
    return _shipped


@pytest.fixture(scope="session")
def small_params():
    """small_params(**sections): the shipped params.yaml shrunk for tests, `sections` merged on top."""
    return _small


@pytest.fixture(scope="session")
def small():
    """What the small params change in each stage section."""
    return SMALL


def _scaffold(root: Path, params: dict) -> None:
    """The pipeline's code, dvc.yaml and prefect.yaml in `root`, `params` as its params.yaml, an empty
    data/external and mlruns/, and its own DVC repo."""
    for d in ("components", "flows"):
        shutil.copytree(REPO / d, root / d, ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("dvc.yaml", "prefect.yaml"):
        shutil.copy(REPO / f, root)
    (root / "data" / "external").mkdir(parents=True)
    (root / "mlruns").mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, check=True)


@contextmanager
def _pipeline_project(root: Path, params: dict, **environ: str):
    _scaffold(root, params)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
        for k, v in environ.items():
            mp.setenv(k, v)
        yield root


@pytest.fixture(scope="session")
def prefect_harness():
    """Prefect's test server (a temporary database), started once for the worker's session: each start costs
    seconds to tens of seconds of migrations on a busy machine, and a project's flow runs are told apart by their
    ids, never by an empty database."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def pipeline_project(prefect_harness):
    """pipeline_project(root, params, **environ): a context manager making `root` a project with `params` as its
    params.yaml and an empty data/external and its own MLflow store, its flows run on the session's Prefect test
    server (`prefect_harness`); `environ` is set too."""
    return _pipeline_project


def _served_project(root: Path, params: dict) -> dict[str, str]:
    _scaffold(root, params)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    return environ | {
        "PREFECT_HOME": str(root / ".prefect"),
        "PREFECT_LOCAL_STORAGE_PATH": str(root / ".prefect" / "results"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlruns' / 'mlflow.db'}",
        # `python -m flows.cli` in `root` must import the project's copy, not this checkout's.
        "PYTHONPATH": str(root),
    }


@pytest.fixture(scope="session")
def served_project():
    """served_project(root, params): `root` as a project (code, dvc.yaml, prefect.yaml, `params`, its own DVC repo)
    for a *real* Prefect server run by subprocesses (`edgekd serve`, `edgekd deploy`): no test harness. Returns the
    environment to give them: this one without any PREFECT_* or MLFLOW_* setting, so they use no server, profile or
    store of this checkout, with the project's MLflow store and Prefect home inside `root`."""
    return _served_project


@pytest.fixture(scope="module")
def served(tmp_path_factory, served_project):
    """A served project of the small params for a module's subprocess tests: (root, environment)."""
    root = tmp_path_factory.mktemp("served")
    return root, served_project(root, _small())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def free_port():
    """free_port(): a TCP port nothing listens on now."""
    return _free_port


@pytest.fixture(scope="session")
def data_state():
    """data_state(root): every file under data/ (the user's own files under data/external aside) and dvc.lock, by
    content."""

    def state(root: Path) -> dict[str, bytes]:
        files = [p for p in (root / "data").rglob("*") if p.is_file() and "external" not in p.relative_to(root).parts]
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(files + [root / "dvc.lock"])}

    return state


@contextmanager
def _s3_server():
    import urllib.error
    import urllib.request

    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=2).close()
                break
            except urllib.error.HTTPError:  # any HTTP answer: it is up
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"moto server exited {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
                if time.monotonic() > deadline:
                    pytest.fail(f"moto server on {endpoint} did not answer within 60 s")
                time.sleep(0.2)
        with pytest.MonkeyPatch.context() as mp:
            for k, v in {
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1",
            }.items():
                mp.setenv(k, v)
            yield endpoint
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the server and nothing else
        proc.wait()
        proc.stderr.close()


@pytest.fixture(scope="session")
def s3_server():
    """s3_server(): a context manager running a local S3-compatible server (moto's) on a free port, with dummy
    credentials in the environment; it yields its endpoint URL."""
    return _s3_server


@contextmanager
def _edgekd(root: Path, environ: dict, log: Path, *args: str):
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "--project-dir", str(root), *args],
            cwd=root,
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            left = psutil.Process(proc.pid).children(recursive=True)
            proc.kill()
            proc.wait()
            for p in left:
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass


@pytest.fixture(scope="session")
def edgekd():
    """edgekd(root, environ, log, *args): `edgekd --project-dir ROOT ARGS...` in a subprocess, output in `log`;
    killed with all it started if the test leaves the block with it still running (a test stops it itself with a
    signal)."""
    return _edgekd


def _wait_for(what: str, check, proc: subprocess.Popen, log: Path, timeout: float, every: float = 2.0):
    deadline = time.monotonic() + timeout
    while True:
        if value := check():
            return value
        if proc.poll() is not None:
            pytest.fail(f"edgekd exited with {proc.returncode} while waiting for {what}:\n{log.read_text()[-6000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {timeout:.0f} s:\n{log.read_text()[-6000:]}")
        time.sleep(every)


@pytest.fixture(scope="session")
def wait_for():
    """wait_for(what, check, proc, log, timeout, every=2.0): poll `check()` until it returns something truthy;
    fail with the log if `proc` exits or time runs out."""
    return _wait_for


def _kill_and_check(proc: subprocess.Popen, url: str | None = None) -> list[str]:
    from flows.infra.environment import REAPER_TOKEN
    from flows.infra.processes import healthy, marked

    # /proc/PID/environ shows a process's environment as it was at exec: the token is read off a child.
    token = psutil.Process(proc.pid).children()[0].environ()[REAPER_TOKEN.name]
    started = marked(REAPER_TOKEN.name, token)
    commands = [" ".join(p.cmdline()) for p in started]
    assert len(started) >= 2, "expected the watchdog and at least one process the command started"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.monotonic() + 40
    while (left := [p for p in marked(REAPER_TOKEN.name, token) if p.is_running()]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"left running after SIGKILL: {[' '.join(p.cmdline()) for p in left]}"
    if url:
        assert not healthy(url)
    return commands


def _stop_and_check(proc: subprocess.Popen, sig: int = signal.SIGTERM, group: bool = True) -> float:
    """Send `sig` as a supervisor does (to the process group, as `timeout` and systemd do, or to the process) and
    check the promise of flows/infra/signals.py: the command exits within 10 s with 128 + sig (or 0 for `serve`),
    and every process it started is gone soon after. Returns the seconds it took to exit."""
    from flows.infra.environment import REAPER_TOKEN
    from flows.infra.processes import marked

    token = psutil.Process(proc.pid).children()[0].environ()[REAPER_TOKEN.name]
    t0 = time.monotonic()
    if group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    try:
        code = proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running 10 s after {signal.Signals(sig).name}")
    took = time.monotonic() - t0
    assert code in (0, 128 + sig), code
    deadline = time.monotonic() + 15
    while (left := [p for p in marked(REAPER_TOKEN.name, token) if p.is_running()]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"left running after {signal.Signals(sig).name}: {[' '.join(p.cmdline()) for p in left]}"
    return took


@pytest.fixture(scope="session")
def stop_and_check():
    """stop_and_check(proc, sig=SIGTERM, group=True): signal an `edgekd` subprocess, check it exits within 10 s
    and leaves nothing running; returns how long it took."""
    return _stop_and_check


def _flow_run_states(prefect_home: Path) -> list[str]:
    with sqlite3.connect(Path(prefect_home) / "prefect.db") as db:
        return [s for (s,) in db.execute("SELECT state_type FROM flow_run ORDER BY expected_start_time")]


@pytest.fixture(scope="session")
def flow_run_states():
    """flow_run_states(prefect_home): the state types of the flow runs in the database of the Prefect server that
    ran with that home (read once the server is gone), by expected start."""
    return _flow_run_states


@pytest.fixture(scope="session")
def kill_and_check():
    """kill_and_check(proc, url=None): SIGKILL an `edgekd` subprocess and check that its watchdog ended every
    process the command started (and, with `url`, that the server there no longer answers); returns the command
    lines of the processes it saw started and then ended."""
    return _kill_and_check


# A device agent as the edge box starts it, with the packages its install lacks made unimportable: an import of any of
# them fails at once, so a test of the agent is also a test that its import path needs none of them.
CPU_CGROUP = Path("/sys/fs/cgroup/cpu")  # cgroup v1's cpu controller (these machines mount v1)
AGENT_BLOCKED = ("torch", "prefect", "mlflow", "onnx", "dvc", "great_expectations", "pandas", "yaml")


def agent_script(blocked: tuple[str, ...] = AGENT_BLOCKED) -> str:
    return f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"{{name}} is not installed on the device")
sys.meta_path.insert(0, Block())
from flows.cli import main
sys.exit(main(sys.argv[1:]))
"""


class DeviceAgent:
    """`edgekd device serve ARGS` in a subprocess with the token `s3cret-token`, its TMPDIR `tmp/work` (where its
    temporary files would stay); `url` once it listens, `log` its request log. With `expect_failure`, an agent that
    exits at once keeps its stderr instead of failing the test. `without` names more packages its box lacks (e.g.
    executorch)."""

    TOKEN = "s3cret-token"

    def __init__(self, tmp: Path, *args: str, expect_failure: bool = False, port: int = 0, without: tuple = ()):
        self.work = tmp / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        self.token_file = tmp / "token"
        self.token_file.write_text(self.TOKEN + "\n")
        self.token_file.chmod(0o600)
        cmd = [
            sys.executable,
            "-c",
            agent_script(AGENT_BLOCKED + tuple(without)),
            "device",
            "serve",
            "--port",
            str(port),
            "--token-file",
            str(self.token_file),
        ]
        self.proc = subprocess.Popen(
            [*cmd, *args],
            cwd=REPO,
            env=dict(os.environ, TMPDIR=str(self.work)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()
        if expect_failure and not line:
            self.stderr = self.proc.stderr.read()
            self.proc.wait()
            return
        if "edgekd device agent at" not in line:  # its stderr says why, once it has exited
            self.proc.kill()
            raise AssertionError(line + self.proc.stderr.read())
        self.url = line.split(" at ")[1].split()[0]
        self.log: list[str] = []  # its request log (one line a request), as it comes
        threading.Thread(target=self._keep_log, daemon=True).start()
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()

    def _keep_log(self) -> None:
        for line in self.proc.stdout:
            self.log.append(line)

    def favour(self, weight: int = 10 * 1024) -> None:
        """Give this agent, and every child it starts from now on, `weight` / 1024 times the CPU weight of any other
        process group (a cgroup v1 group of its own with that `cpu.shares`), so that what else runs on the machine
        does not decide how fast it measures. Needs a writable cgroup cpu controller, as `--cpu-quota` does."""
        self.group = CPU_CGROUP / f"edgekd-favoured-{self.proc.pid}"
        self.group.mkdir(exist_ok=True)
        (self.group / "cpu.shares").write_text(str(weight))
        (self.group / "cgroup.procs").write_text(str(self.proc.pid))

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        if getattr(self, "group", None):
            try:
                self.group.rmdir()  # empty once the agent and its children are gone
            except OSError:
                pass


@pytest.fixture(scope="session")
def device_agent():
    """device_agent(tmp, *args, expect_failure=False, port=0, without=()): a DeviceAgent; stop() it when done."""
    return DeviceAgent
