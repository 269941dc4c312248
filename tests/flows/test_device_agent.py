"""The device agent as a real process on 127.0.0.1, started the way the edge box starts it, with torch, Prefect,
MLflow and onnx made unimportable (its install has none of them; tests/flows/conftest.py): what it measures, what
it refuses, that it keeps nothing on disk, and that clients that hold connections, drip or send no token cost the
others nothing. Durations are sized from `pace`, a measurement on this machine now; tests wait on the agent's state
(its queue, its folders, its connections), never a fixed time."""

import base64
import hashlib
import json
import math
import os
import pickle
import re
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from components.timing import Settings
from tests.conftest import require

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-token"
SMALL = Settings(1, 2, 20, 1)  # a small measurement: most of its time is its two children starting


@pytest.fixture
def agent(tmp_path, device_agent):
    a = device_agent(tmp_path, "--queue", "1", "--max-mb", "1", "--timeout", "600")
    yield a
    a.stop()


@pytest.fixture
def _matmul(matmul_onnx):
    return matmul_onnx


def _npy(a: np.ndarray) -> str:
    import io

    buf = io.BytesIO()
    np.save(buf, a)
    return base64.b64encode(buf.getvalue()).decode()


def _request(models: list[bytes], fmt: str = "onnx", sha=None, timed_runs: int = 50, rounds: int = 2) -> dict:
    return {
        "models": [
            {
                "name": str(i),
                "format": fmt,
                "sha256": sha or hashlib.sha256(m).hexdigest(),
                "data": base64.b64encode(m).decode(),
            }
            for i, m in enumerate(models)
        ],
        "start": "0",
        "batch": _npy(np.ones((1, 64), np.float32)),
        "settings": {"threads": 1, "warmup_runs": 5, "timed_runs": timed_runs, "rounds": rounds},
    }


def _post(url: str, body, token: str | None = TOKEN, headers=None) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url + "/v1/measure", data=data, method="POST", headers=headers or {})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def files(tmp_path_factory, matmul_onnx) -> Path:
    """A folder with m64.onnx and m2048.onnx (_matmul models) and batch.npy, one row of 64 ones."""
    folder = tmp_path_factory.mktemp("files")
    for outputs in (64, 2048):
        (folder / f"m{outputs}.onnx").write_bytes(matmul_onnx(outputs))
    np.save(folder / "batch.npy", np.ones((1, 64), np.float32))
    return folder


def _small(device, files: Path, timeout: float = 120.0):
    from flows.infra.device.client import measure

    model = str(files / "m64.onnx")
    return measure(device, [model], str(files / "batch.npy"), SMALL, model, timeout=timeout)


def _seconds(fn) -> float:
    start = time.monotonic()
    fn()
    return time.monotonic() - start


@dataclass(frozen=True)
class Pace:
    """How fast an agent on this machine answers now: `measure_s`, the wall time of a small measurement (the slower
    of two); `call_ms`, one call of the 2048-output model at batch 1; `rtt_s`, a GET over a fresh connection."""

    measure_s: float
    call_ms: float
    rtt_s: float

    @property
    def bound(self) -> float:
        """What a small measurement may take while hostile clients are connected: generous, from this machine."""
        return 3 * self.measure_s + 2

    @property
    def quick(self) -> float:
        """What an answer that needs no work (a refusal) may take."""
        return max(1.0, 50 * self.rtt_s)

    def runs(self, seconds: float) -> int:
        """Timed runs of the 2048-output model that last at least about `seconds`."""
        return max(1000, math.ceil(seconds * 1e3 / self.call_ms))


@pytest.fixture(scope="module")
def pace(tmp_path_factory, device_agent, files) -> Pace:
    from flows.infra.device.client import Device, info, measure

    a = device_agent(tmp_path_factory.mktemp("pace"))
    try:
        device = Device("pace", a.url, TOKEN)
        rtt = float(np.median([_seconds(lambda: info(device)) for _ in range(5)]))
        measure_s = max(_seconds(lambda: _small(device, files)) for _ in range(2))
        model = str(files / "m2048.onnx")
        raw = measure(device, [model], str(files / "batch.npy"), Settings(1, 5, 500, 3), model, timeout=120)
        call_ms = float(np.median([r.mean_ms for r in raw.rounds[0]]))  # the mean: with what preemption costs
    finally:
        a.stop()
    return Pace(measure_s, call_ms, rtt)


def _get(url: str, path: str, ca: Path | None = None) -> dict:
    req = urllib.request.Request(url + path, headers={"Authorization": f"Bearer {TOKEN}"})
    ctx = ssl.create_default_context(cafile=str(ca)) if ca else None
    with urllib.request.urlopen(req, timeout=60, context=ctx) as r:
        return json.loads(r.read())


def _until(what: str, check, within: float) -> None:
    """Wait until `check()` holds, polling the agent's state, for at most `within` seconds."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"not within {within:.1f} s: {what}"
        threading.Event().wait(0.02)


def _measuring(agent) -> bool:
    """Whether a measurement has begun on `agent`: its request's temporary folder is there."""
    return any(p.name.startswith("edgekd-agent-") for p in agent.work.iterdir())


def test_the_agent_measures_what_it_is_sent_and_keeps_nothing(agent, tmp_path, _matmul):
    from flows.infra.device.client import Device, info, measure

    device = Device("board", agent.url, "s3cret-token")
    facts = info(device)
    assert facts.formats == ["onnx", "pte", "tflite"]  # ExecuTorch and LiteRT are installed beside it here
    assert facts.cores == os.cpu_count() and facts.onnxruntime
    paths = []
    for i, outputs in enumerate((64, 2048)):
        paths.append(str(tmp_path / f"m{i}.onnx"))
        Path(paths[-1]).write_bytes(_matmul(outputs))
    np.save(tmp_path / "batch.npy", np.ones((1, 64), np.float32))
    raw = measure(device, paths, str(tmp_path / "batch.npy"), Settings(1, 5, 50, 3), paths[0], timeout=60)
    assert [len(r) for r in raw.rounds] == [3, 3]
    assert all(0 < r.p50_ms <= r.p95_ms for rs in raw.rounds for r in rs)
    # 2048 outputs do 32x the work of 64 outputs: the agent times the models it was sent, not something else
    assert np.median([r.p50_ms for r in raw.rounds[1]]) > np.median([r.p50_ms for r in raw.rounds[0]])
    assert raw.device.cpu and raw.device.emulation == "none" and raw.peak_mem_mb[1] > raw.peak_mem_mb[0]
    assert list(agent.work.iterdir()) == []


def test_an_agent_with_executorch_times_a_pte_program_and_one_without_refuses_it(
    agent, tmp_path, device_agent, _matmul
):
    import torch

    from components.formats.pte import export_pte
    from flows.infra.device.client import Device, DeviceFailed, measure

    program = tmp_path / "m.pte"
    export_pte(torch.nn.Linear(64, 256), np.ones((1, 64), np.float32), program)
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(_matmul(256))
    np.save(tmp_path / "batch.npy", np.ones((1, 64), np.float32))
    paths, s = [str(onnx), str(program)], Settings(1, 5, 50, 2)
    raw = measure(Device("board", agent.url, "s3cret-token"), paths, str(tmp_path / "batch.npy"), s, paths[0], 120)
    assert [len(r) for r in raw.rounds] == [2, 2] and all(r.p50_ms > 0 for r in raw.rounds[1])
    assert list(agent.work.iterdir()) == []
    bare = device_agent(tmp_path / "bare", without=("executorch",))
    try:
        with pytest.raises(DeviceFailed, match="format 'pte' cannot run here .this agent runs onnx"):
            measure(Device("bare", bare.url, "s3cret-token"), paths, str(tmp_path / "batch.npy"), s, paths[0], 120)
    finally:
        bare.stop()
    assert list(bare.work.iterdir()) == []


@pytest.mark.parametrize(
    "case, status, message",
    [
        ("no token", 401, "missing or wrong token"),
        ("wrong token", 401, "missing or wrong token"),
        ("wrong hash", 422, "does not match"),
        ("oversize", 413, "over the agent's limit of 1048576 bytes"),
        ("unknown format", 415, "format 'mlmodel' cannot run here"),
        ("a pickle", 415, "is pickled: refused, never loaded"),
        ("a pickled batch", 415, "the batch is not a plain .npy array"),
        ("not a model", 422, "cannot run the model"),
    ],
)
def test_the_agent_refuses_and_leaves_nothing_on_disk(agent, case, status, message, _matmul):
    model = _matmul(8)
    body, token = _request([model]), "s3cret-token"
    if case == "no token":
        token = None
    elif case == "wrong token":
        token = "s3cret-tokem"
    elif case == "wrong hash":
        body = _request([model], sha="0" * 64)
    elif case == "oversize":
        body = _request([model + b"\0" * (1 << 20)])
    elif case == "unknown format":
        body = _request([model], fmt="mlmodel")
    elif case == "a pickle":
        body = _request([pickle.dumps({"weights": [1, 2, 3]})])
    elif case == "a pickled batch":
        body["batch"] = _npy(np.array([{"x": 1}], dtype=object))
    elif case == "not a model":
        body = _request([b"this is not an ONNX model"])
    got, answer = _post(agent.url, body, token)
    assert got == status and message in answer["error"], answer
    assert list(agent.work.iterdir()) == []


def test_past_its_queue_the_agent_answers_busy(agent, _matmul, pace):
    # long enough to outlast a few polls of the queue by far, on this machine now
    long = _request([_matmul(2048)], timed_runs=pace.runs(pace.bound), rounds=1)
    answers = []

    def send(body):
        answers.append(_post(agent.url, body)[0])

    running = threading.Thread(target=send, args=(long,))
    running.start()
    _until("the first measurement runs", lambda: _get(agent.url, "/v1/queue")["running"] == 1, pace.bound)
    waiting = threading.Thread(target=send, args=(_request([_matmul(8)]),))  # --queue 1: this one waits its turn
    waiting.start()
    _until("the second request waits", lambda: _get(agent.url, "/v1/queue")["waiting"] == 1, pace.bound)
    status, answer = _post(agent.url, _request([_matmul(8)]))
    assert status == 503 and answer["error"].startswith("busy: one measurement is running and 1 wait")
    assert _get(agent.url, "/v1/queue")["running"] == 1  # the long one was still running when the third came
    running.join()
    waiting.join()
    assert answers == [200, 200]
    assert list(agent.work.iterdir()) == []


def test_device_check_says_what_answers_and_names_a_refusal(agent, tmp_path):
    cmd = [sys.executable, "-m", "flows.cli", "device", "check", agent.url, "--token-file", str(agent.token_file)]
    ok = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0 and f"{agent.url} answers:" in ok.stdout and "emulation none" in ok.stdout
    (tmp_path / "bad").write_text("nope")
    (tmp_path / "bad").chmod(0o600)
    bad = subprocess.run(cmd[:-1] + [str(tmp_path / "bad")], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 7 and "refused (401): missing or wrong token" in bad.stderr
    assert "nope" not in bad.stderr + bad.stdout  # the token is never echoed


def test_an_agent_killed_mid_measurement_is_named_after_bounded_retries(agent, tmp_path, _matmul, device_agent, pace):
    from flows.infra.device.client import Device, DeviceFailed, measure

    path = tmp_path / "m.onnx"
    path.write_bytes(_matmul(2048))
    np.save(tmp_path / "batch.npy", np.ones((1, 64), np.float32))

    def kill_once_measuring():
        _until("a measurement begins", lambda: _measuring(agent), pace.bound)
        agent.stop()

    killer = threading.Thread(target=kill_once_measuring, daemon=True)
    killer.start()
    with pytest.raises(DeviceFailed, match=r"target 'board' .*stopped answering after 4 tries") as e:
        measure(
            Device("board", agent.url, TOKEN),
            [str(path)],
            str(tmp_path / "batch.npy"),
            Settings(1, 5, pace.runs(pace.bound), 1),  # still measuring when it is killed
            str(path),
            timeout=60,
        )
    killer.join()
    assert not e.value.refused
    assert [p.name.startswith("edgekd-agent-") for p in agent.work.iterdir()] == [True]  # SIGKILL: no clean-up
    again = device_agent(tmp_path)  # the next agent on the box removes what the killed one left
    try:
        assert list(agent.work.iterdir()) == []
    finally:
        again.stop()


def _slice_ms(emulation: str) -> float:
    """The CPU time a quota lets run per period (emulate.py's sentence: v1 `cpu.cfs_quota_us US per ...`, v2
    `cpu.max US PERIOD`), in ms."""
    found = re.search(r"(?:cpu\.cfs_quota_us|cpu\.max) (\d+)", emulation)
    assert found, emulation
    return int(found.group(1)) / 1e3


def test_an_emulated_slow_device_is_a_separate_process_with_a_cpu_quota(tmp_path, device_agent, _matmul):
    from flows.infra.device.client import Device, info, measure

    # A tenth of a CPU: 10x slower than the fast agent
    slow = device_agent(tmp_path / "slow", "--cpus", "0", "--cpu-quota", "0.1", expect_failure=True)
    ok = slow.proc.returncode is None  # else it started, said why it cannot limit itself, and exited 1
    require(ok, f"no writable cgroup cpu controller here (run as root): {'' if ok else slow.stderr.strip()}")
    fast = device_agent(tmp_path / "fast", "--cpus", "0")
    try:
        # The fast agent is 2x faster than the slow one only while its share of CPU 0 stays over twice the quota:
        # a heavy CPU weight keeps other load on the machine from deciding that
        fast.favour()
        path, batch = tmp_path / "m.onnx", tmp_path / "batch.npy"
        path.write_bytes(_matmul(16384))
        devices = {name: Device(name, a.url, TOKEN) for name, a in (("fast", fast), ("slow", slow))}

        def p50(name: str, rows: int, s: Settings) -> float:
            np.save(batch, np.ones((rows, 64), np.float32))
            raw = measure(devices[name], [str(path)], str(batch), s, str(path), 300)
            assert raw.device.cpus == [0]
            return float(np.median([r.p50_ms for r in raw.rounds[0]]))

        # A quota is a share of time, not a slower clock (emulate.py): a call shorter than the slice it may run
        # per period mostly runs at full speed. Size the call from this machine so that one call at full speed
        # takes 20 slices: then every call is throttled, wherever this runs.
        emulation = info(devices["slow"]).emulation
        assert emulation.startswith("cgroup v") and "0.1 of one CPU" in emulation
        slice_ms = _slice_ms(emulation)
        rows = 128 * math.ceil(20 * slice_ms / p50("fast", 128, Settings(1, 2, 10, 1)))
        got = {name: p50(name, rows, Settings(1, 2, 10, 3)) for name in ("fast", "slow")}
        assert got["fast"] >= 3 * slice_ms, (rows, got)  # the sizing held, with room for the load to change
        assert got["slow"] >= 2 * got["fast"], (rows, got)
    finally:
        fast.stop()
        slow.stop()


def _tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate for 127.0.0.1 it signed (cryptography, from the lock): (ca.pem, cert.pem, key.pem)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def cert(subject, issuer, key, signer, ca: bool):
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        return b.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = cert("edgekd test CA", "edgekd test CA", ca_key, ca_key, ca=True)
    leaf = cert("127.0.0.1", "edgekd test CA", key, ca_key, ca=False)
    files = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    files[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    files[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return files


def test_over_tls_the_host_verifies_the_agent_with_its_ca(tmp_path, device_agent):
    from flows.infra.device.client import Device, DeviceFailed, info

    ca, cert, key = _tls_files(tmp_path)
    agent = device_agent(tmp_path, "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        assert agent.url.startswith("https://127.0.0.1:")
        assert info(Device("tls", agent.url, agent.TOKEN, str(ca))).formats[0] == "onnx"
        with pytest.raises(DeviceFailed, match="certificate is not trusted.*CERTIFICATE_VERIFY_FAILED") as e:
            info(Device("tls", agent.url, agent.TOKEN))  # not without the CA, and not retried
        assert e.value.refused
    finally:
        agent.stop()


# --- clients that cost the others nothing: each over plain HTTP and over TLS ------------------------------------


def _hostile_agent(device_agent, tmp: Path, scheme: str, *args: str):
    """An agent served over `scheme`, and the CA that verifies it (None over plain HTTP)."""
    if scheme == "http":
        return device_agent(tmp, *args), None
    ca, cert, key = _tls_files(tmp)
    return device_agent(tmp, "--tls-cert", str(cert), "--tls-key", str(key), *args), ca


def _connect(agent, ca: Path | None = None) -> socket.socket:
    """A TCP connection to `agent`; with `ca`, TLS negotiated on it too."""
    url = urllib.parse.urlsplit(agent.url)
    sock = socket.create_connection((url.hostname, url.port), timeout=60)
    if ca is None:
        return sock
    return ssl.create_default_context(cafile=str(ca)).wrap_socket(sock, server_hostname=url.hostname)


def _closed(sock: socket.socket, within: float) -> float | None:
    """Seconds until the agent closed `sock` (end of stream or a reset), reading what it sends meanwhile; None when
    it is still open after `within` seconds (0: now)."""
    start = time.monotonic()
    while True:
        left = within - (time.monotonic() - start)
        sock.settimeout(left if left > 0 else 0.0)
        try:
            if not sock.recv(1 << 16):
                return time.monotonic() - start
        except (TimeoutError, BlockingIOError, ssl.SSLWantReadError):
            return None
        except OSError:  # reset, or TLS cut short
            return time.monotonic() - start


def _measures_within(agent, ca: Path | None, files: Path, bound: float) -> float:
    """Seconds a small measurement from a well-behaved client took; it must succeed within `bound`."""
    from flows.infra.device.client import Device

    got = {}

    def run():
        try:
            got["raw"] = _small(Device("legit", agent.url, TOKEN, str(ca) if ca else None), files, timeout=bound)
        except Exception as e:  # noqa: BLE001 - reported below
            got["error"] = e

    start = time.monotonic()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(bound)
    assert not t.is_alive(), f"a measurement from another client took over {bound:.1f} s"
    assert "raw" in got, got
    return time.monotonic() - start


class _SlowLoris(threading.Thread):
    """A request line, then one header line every `every` s, never the blank line that ends them: each read of the
    agent gets a byte in time. Stops when the agent closes the connection (`closed_after`, s) or after `give_up` s."""

    def __init__(self, sock: socket.socket, every: float, give_up: float):
        super().__init__(daemon=True)
        self.sock, self.every, self.give_up, self.closed_after = sock, every, give_up, None

    def run(self):
        start = time.monotonic()
        try:
            self.sock.sendall(b"POST /v1/measure HTTP/1.1\r\nHost: board\r\n")
            while time.monotonic() - start < self.give_up:
                if select.select([self.sock], [], [], self.every)[0] and not self.sock.recv(1 << 16):
                    break  # the agent closed it
                self.sock.sendall(b"X-Slow: 1\r\n")
            else:
                return  # still open when it gave up
        except OSError:  # the agent closed (reset) it
            pass
        self.closed_after = time.monotonic() - start


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_connection_that_sends_nothing_stalls_no_one_and_is_closed(scheme, tmp_path, device_agent, pace, files):
    read_timeout = pace.bound + 2  # it outlives a measurement: that one ran while it was connected
    agent, ca = _hostile_agent(device_agent, tmp_path, scheme, "--read-timeout", f"{read_timeout:.1f}")
    try:
        silent = _connect(agent)  # no TLS handshake, no request: nothing at all
        _measures_within(agent, ca, files, pace.bound)
        assert _closed(silent, 0) is None  # it was connected the whole time
        closed = _closed(silent, read_timeout + pace.bound)
        assert closed is not None, f"the agent kept a silent connection open past its --read-timeout {read_timeout}"
    finally:
        agent.stop()


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_slow_loris_is_closed_at_the_header_deadline(scheme, tmp_path, device_agent, pace, files):
    read_timeout = pace.bound + 2
    agent, ca = _hostile_agent(device_agent, tmp_path, scheme, "--read-timeout", f"{read_timeout:.1f}")
    try:
        loris = _SlowLoris(_connect(agent, ca), every=read_timeout / 4, give_up=read_timeout + 2 * pace.bound)
        loris.start()
        _measures_within(agent, ca, files, pace.bound)
        assert loris.is_alive() and loris.closed_after is None  # it was dripping the whole time
        loris.join()
        # every drip came within the read time-out: only a deadline for the whole header closes it
        assert loris.closed_after is not None, "the agent kept reading headers that never end"
        assert loris.closed_after <= read_timeout + pace.bound, loris.closed_after
    finally:
        agent.stop()


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_past_the_connection_cap_a_connection_is_closed_at_once(scheme, tmp_path, device_agent, pace, files):
    from flows.infra.device.client import RETRY_DELAYS

    cap, read_timeout = 3, 3.0  # the held ones end within the client's retries (1, 2, 4 s), so it gets through
    assert read_timeout < sum(RETRY_DELAYS)
    agent, ca = _hostile_agent(
        device_agent, tmp_path, scheme, "--max-connections", str(cap), "--read-timeout", str(read_timeout)
    )
    try:
        held = [_connect(agent) for _ in range(cap)]  # accepted in order: these take every slot
        extra = [_connect(agent) for _ in range(3)]
        refused = [_closed(s, pace.quick) for s in extra]
        assert None not in refused, f"connections past --max-connections {cap} were kept waiting: {refused}"
        assert [_closed(s, 0) for s in held] == [None] * cap
        _measures_within(agent, ca, files, read_timeout + sum(RETRY_DELAYS) + pace.bound)
        assert None not in [_closed(s, read_timeout + pace.bound) for s in held]
    finally:
        agent.stop()


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_without_the_token_a_big_request_is_answered_401_and_its_body_never_read(
    scheme, tmp_path, device_agent, pace, files
):
    agent, ca = _hostile_agent(device_agent, tmp_path, scheme)
    try:
        sock = _connect(agent, ca)
        declared = 16 << 20
        sock.sendall(f"POST /v1/measure HTTP/1.1\r\nHost: board\r\nContent-Length: {declared}\r\n\r\n".encode())
        sock.settimeout(pace.quick)
        start, answer = time.monotonic(), b""
        try:
            while chunk := sock.recv(1 << 16):  # the answer, then the end of the stream
                answer += chunk
        except TimeoutError:
            pass
        took = time.monotonic() - start
        assert answer.startswith(b"HTTP/1.1 401") and b"missing or wrong token" in answer, (answer, took)
        assert _closed(sock, 0) is not None and took < pace.quick
        # Nothing of the body was sent before the answer: the agent answered without reading it, and now that the
        # connection is closed, no more than the socket buffers take gets through.
        sent = 0
        sock.settimeout(pace.bound)
        try:
            while sent < declared:
                sent += sock.send(b"\0" * (1 << 16))
        except OSError:
            pass
        assert sent < declared, "the agent went on reading the body of a request without the token"
        _measures_within(agent, ca, files, pace.bound)
    finally:
        agent.stop()


def test_the_time_limit_covers_the_whole_request_not_each_child(tmp_path, device_agent, pace, _matmul):
    # 8 models: a timing child and 8 peak-memory children, each about half a small measurement. --timeout fits
    # each child 3 times over but the 9 of them a third of the way: a limit per child lets it through.
    limit = 1.5 * pace.measure_s
    agent = device_agent(tmp_path, "--timeout", f"{limit:.2f}")
    try:
        start = time.monotonic()
        status, answer = _post(agent.url, _request([_matmul(8, seed=i) for i in range(8)], timed_runs=20, rounds=1))
        took = time.monotonic() - start
        assert status == 504 and "time limit" in answer["error"], (status, answer)
        assert took <= limit + pace.bound, took
        assert list(agent.work.iterdir()) == []
    finally:
        agent.stop()


def _logged(agent, text: str, timeout: float = 30.0) -> None:
    """Wait until the agent's request log holds a line with `text` (at most `timeout` s: then the assert names it)."""
    deadline = time.monotonic() + timeout
    while not any(text in line for line in agent.log) and time.monotonic() < deadline:
        time.sleep(0.05)


def test_after_a_read_timeout_the_client_asks_by_id_and_never_sends_twice(
    tmp_path, device_agent, pace, files, monkeypatch
):
    from flows.infra.device import client

    agent = device_agent(tmp_path)
    try:
        device = client.Device("board", agent.url, TOKEN)
        # the client stops waiting long before the measurement ends, then asks over a span sized to outlast it
        patience = 3 * pace.measure_s + 2
        monkeypatch.setattr(client, "RETRY_DELAYS", (patience / 7, 2 * patience / 7, 4 * patience / 7))
        raw = _small(device, files, timeout=pace.measure_s / 10)
        assert raw.rounds[0][0].p50_ms > 0
        # the agent's request log is read off its output by a thread: its line for the answered GET may come after
        # the answer itself
        _logged(agent, "GET /v1/requests/")
        posts = [line for line in agent.log if "POST /v1/measure" in line]
        asked = [line for line in agent.log if "GET /v1/requests/" in line]
        assert len(posts) == 1 and asked, agent.log
        # an answer that does not come in time is named, and still not sent again
        model = str(files / "m2048.onnx")
        long = Settings(1, 5, pace.runs(3 * patience), 1)
        monkeypatch.setattr(client, "RETRY_DELAYS", (0.1, 0.1, 0.1))
        with pytest.raises(
            client.DeviceFailed, match=r"target 'board' .*no answer within .* request \w+ (receiving|waiting|running)"
        ):
            client.measure(device, [model], str(files / "batch.npy"), long, model, timeout=pace.measure_s / 10)
        assert len([line for line in agent.log if "POST /v1/measure" in line]) == 1
        _until("the one copy runs", lambda: _get(agent.url, "/v1/queue")["running"] == 1, pace.bound)
    finally:
        agent.stop()


def test_a_request_asked_about_before_it_arrives_is_never_run():
    from flows.infra.device.agent import Agent, Answer, Refused

    agent = Agent("t0ken")
    assert agent.record("abc").state == "unknown"
    with pytest.raises(Refused, match="request abc is already known here .unknown.") as e:
        agent.admit("abc")  # the client, told "unknown", sent it again under a new id: this copy never runs
    assert e.value.status == 409
    agent.admit("def")
    agent.finish("def", Answer(200, {"rounds": []}))
    assert agent.record("def").as_json() == {"id": "def", "state": "done", "status": 200, "answer": {"rounds": []}}
    with pytest.raises(Refused, match="X-Request-Id must be"):
        agent.admit("../etc")
