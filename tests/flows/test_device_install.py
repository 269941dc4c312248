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
