"""The agent's install is small: `pip install ".[device]"` (pinned by the lock) in a clean venv brings no torch,
Prefect or MLflow, and the agent starts from it and measures."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_the_device_extra_installs_the_agent_without_the_pipeline(tmp_path, matmul_onnx):
    from flows.infra.device.client import Device, info, measure

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "pip"), "install", "-q", "-c", str(ROOT / "requirements.lock"), f"{ROOT}[device]"]
    subprocess.run(pip, check=True, cwd=tmp_path)
    heavy = "import importlib.util as u; print([m for m in ('torch', 'prefect', 'mlflow', 'onnx') if u.find_spec(m)])"
    found = subprocess.run([str(venv / "bin" / "python"), "-c", heavy], capture_output=True, text=True, cwd=tmp_path)
    assert found.stdout.strip() == "[]", found.stdout + found.stderr
    token = tmp_path / "token"
    token.write_text("t0ken")
    token.chmod(0o600)
    serve = [str(venv / "bin" / "edgekd"), "device", "serve", "--port", "0", "--token-file", str(token)]
    proc = subprocess.Popen(
        serve, cwd=tmp_path, stdout=subprocess.PIPE, text=True, env=dict(os.environ, TMPDIR=str(tmp_path))
    )
    try:
        line = proc.stdout.readline()
        assert "edgekd device agent at" in line, line
        device = Device("installed", line.split(" at ")[1].split()[0], "t0ken")
        assert info(device).onnxruntime
        model = tmp_path / "m.onnx"
        model.write_bytes(matmul_onnx(16))
        np.save(tmp_path / "batch.npy", np.ones((1, 64), np.float32))
        raw = measure(device, [str(model)], str(tmp_path / "batch.npy"), _settings(), str(model), timeout=60)
        assert raw.rounds[0][0].p50_ms > 0
    finally:
        proc.kill()
        proc.wait()


def _settings():
    from components.timing import Settings

    return Settings(threads=1, warmup_runs=2, timed_runs=20, rounds=1)


AARCH64 = [  # a 64-bit Raspberry Pi OS (Debian 12: glibc 2.36) or a Jetson (Ubuntu 22.04: glibc 2.35)
    *("--platform", "manylinux_2_28_aarch64", "--platform", "manylinux_2_27_aarch64"),
    *("--platform", "manylinux_2_17_aarch64", "--platform", "manylinux2014_aarch64"),
    *("--python-version", "3.11", "--only-binary=:all:"),
]
RUNTIMES = {"onnx": "onnxruntime", "tflite": "ai-edge-litert", "pte": "executorch"}


def _resolve_for_aarch64(requirement: str, tmp_path: Path) -> tuple[dict[str, str], str]:
    """What pip would install for a 64-bit ARM board from binary wheels alone (the lock's versions): name ->
    wheel file, and pip's error where it cannot."""
    report = tmp_path / f"report-{abs(hash(requirement))}.json"
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--dry-run", "--ignore-installed", "--target", str(tmp_path)]
    cmd += [*AARCH64, "-c", str(ROOT / "requirements.lock"), "--report", str(report), requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    if proc.returncode != 0:
        return {}, proc.stderr
    import json

    files = json.loads(report.read_text())["install"]
    return {f["metadata"]["name"].lower(): f["download_info"]["url"].rsplit("/", 1)[-1] for f in files}, ""


def test_the_device_extra_resolves_for_a_64_bit_arm_board_and_says_which_formats_it_times(tmp_path):
    wheel = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheel), str(ROOT)], check=True)
    (built,) = wheel.glob("edgekd-*.whl")
    agent, error = _resolve_for_aarch64(f"{built}[device]", tmp_path)
    assert agent, error
    for dist in ("onnxruntime", "ai-edge-litert", "numpy"):
        assert "aarch64" in agent[dist], (dist, agent[dist])
    assert not {"torch", "prefect", "mlflow"} & set(agent)
    # ExecuTorch's own wheel exists for aarch64, but it pins coremltools 9.0, which has none: pip would build it
    executorch, error = _resolve_for_aarch64("executorch==1.4.1", tmp_path)
    times = sorted(f for f, dist in RUNTIMES.items() if dist in agent or dist in executorch)
    print(f"an aarch64 agent from `edgekd[device]` times: {', '.join(times)}")
    assert times == ["onnx", "tflite"] and "coremltools" in error
