"""The device agent as a real process on 127.0.0.1, started the way the edge box starts it, with torch, Prefect,
MLflow and onnx made unimportable (its install has none of them; tests/flows/conftest.py): what it measures, what
it refuses, and that it keeps nothing on disk."""

import base64
import hashlib
import json
import os
import pickle
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from components.timing import Settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def agent(tmp_path, device_agent):
    a = device_agent(tmp_path, "--queue", "1", "--max-mb", "1", "--timeout", "60")
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


def _post(url: str, body, token: str | None = "s3cret-token", headers=None) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url + "/v1/measure", data=data, method="POST", headers=headers or {})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_the_agent_measures_what_it_is_sent_and_keeps_nothing(agent, tmp_path, _matmul):
    from flows.infra.device.client import Device, info, measure

    device = Device("board", agent.url, "s3cret-token")
    facts = info(device)
    assert facts.formats == ["onnx", "pte"]  # ExecuTorch is installed beside it here
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

    from components.pte import export_pte
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
        ("unknown format", 415, "format 'tflite' cannot run here"),
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
        body = _request([model], fmt="tflite")
    elif case == "a pickle":
        body = _request([pickle.dumps({"weights": [1, 2, 3]})])
    elif case == "a pickled batch":
        body["batch"] = _npy(np.array([{"x": 1}], dtype=object))
    elif case == "not a model":
        body = _request([b"this is not an ONNX model"])
    got, answer = _post(agent.url, body, token)
    assert got == status and message in answer["error"], answer
    assert list(agent.work.iterdir()) == []


def test_past_its_queue_the_agent_answers_busy(agent, _matmul):
    long = _request([_matmul(2048)], timed_runs=100_000, rounds=1)  # a few seconds of timing
    answers = []

    def send():
        answers.append(_post(agent.url, long)[0])

    running = threading.Thread(target=send)
    running.start()
    time.sleep(1.0)
    waiting = threading.Thread(target=send)  # --queue 1: this one waits its turn
    waiting.start()
    time.sleep(0.5)
    status, answer = _post(agent.url, _request([_matmul(8)]))
    assert status == 503 and answer["error"].startswith("busy: one measurement is running and 1 wait")
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


def test_an_agent_killed_mid_measurement_is_named_after_bounded_retries(agent, tmp_path, _matmul, device_agent):
    from flows.infra.device.client import Device, DeviceFailed, measure

    path = tmp_path / "m.onnx"
    path.write_bytes(_matmul(2048))
    np.save(tmp_path / "batch.npy", np.ones((1, 64), np.float32))
    threading.Timer(1.5, agent.stop).start()
    with pytest.raises(DeviceFailed, match=r"target 'board' .*stopped answering after 4 tries") as e:
        measure(
            Device("board", agent.url, "s3cret-token"),
            [str(path)],
            str(tmp_path / "batch.npy"),
            Settings(1, 5, 200_000, 1),  # several seconds
            str(path),
            timeout=60,
        )
    assert not e.value.refused
    assert [p.name.startswith("edgekd-agent-") for p in agent.work.iterdir()] == [True]  # SIGKILL: no clean-up
    again = device_agent(tmp_path)  # the next agent on the box removes what the killed one left
    try:
        assert list(agent.work.iterdir()) == []
    finally:
        again.stop()


def test_an_emulated_slow_device_is_a_separate_process_with_a_cpu_quota(tmp_path, device_agent, _matmul):
    from flows.infra.device.client import Device, measure

    # A tenth of a CPU: 10x slower alone, still over 2x when another process shares CPU 0 with the fast agent (with
    # a quarter, a busy CI core once gave 1.96x)
    slow = device_agent(tmp_path / "slow", "--cpus", "0", "--cpu-quota", "0.1", expect_failure=True)
    if slow.proc.returncode is not None:  # started, said why it cannot limit itself, exited 1
        pytest.skip(f"no writable cgroup cpu controller here: {slow.stderr.strip()}")
    fast = device_agent(tmp_path / "fast", "--cpus", "0")
    try:
        path = tmp_path / "m.onnx"
        # A few ms a call: longer than the quota's 1 ms, so every call is slowed, not one in a few (a quota is a
        # share of time, not a slower clock: flows/infra/device/emulate.py)
        path.write_bytes(_matmul(16384))
        np.save(tmp_path / "batch.npy", np.ones((128, 64), np.float32))
        p50 = {}
        for name, a in (("fast", fast), ("slow", slow)):
            device = Device(name, a.url, "s3cret-token")
            raw = measure(device, [str(path)], str(tmp_path / "batch.npy"), Settings(1, 5, 100, 3), str(path), 120)
            p50[name] = float(np.median([r.p50_ms for r in raw.rounds[0]]))
            assert raw.device.cpus == [0]
            if name == "slow":
                assert raw.device.emulation.startswith("cgroup v") and "0.1 of one CPU" in raw.device.emulation
        assert p50["slow"] >= 2 * p50["fast"], p50
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
