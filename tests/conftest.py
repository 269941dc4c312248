"""What every test shares: the environment (no telemetry, a throwaway Prefect home), the test tiers, the real digits
data and small models trained on it, and `cli`, edgekd's command line called in this process."""

import os
import sys
import tempfile

import numpy as np
import pytest

from flows.infra.environment import TELEMETRY_OFF

os.environ.update(TELEMETRY_OFF)
# Prefect's results and home of the test session live in a throwaway folder, never in ~/.prefect.
_PREFECT_HOME = tempfile.mkdtemp(prefix="edgekd-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_LOCAL_STORAGE_PATH"] = os.path.join(_PREFECT_HOME, "results")
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"

# Every test is in one tier (pyproject.toml describes them); `tests/run --fast` runs the unit tier.
TIERS = ("team", "e2e", "integration", "unit")


def tier(item) -> str:
    """A test's tier: its own marker, else its module's (a unit test may live beside the e2e test it supports)."""
    names = [m.name for m in item.iter_markers() if m.name in TIERS]
    if not names:
        raise pytest.UsageError(f"{item.nodeid}: no tier marker; mark the test or its module with one of {TIERS}")
    return names[0]


def pytest_collection_modifyitems(config, items):
    """Refuse a test without a tier, then order the slow tiers first (team, then e2e): with `--dist loadfile` each
    worker takes the next file when it is free, so a long file taken last would finish alone while the other worker
    idles."""
    items.sort(key=lambda item: TIERS.index(tier(item)))


@pytest.fixture(autouse=True)
def _no_tracking_uri_left_behind():
    """A flow run in this process sets MLflow's process-wide tracking URI, which then wins over the next test's
    MLFLOW_TRACKING_URI: forget it after every test, so that no test depends on which ran before it in its
    process (pytest-xdist deals the test files to its workers)."""
    yield
    if "mlflow" in sys.modules:
        from mlflow.tracking._tracking_service import utils

        utils._tracking_uri = None


@pytest.fixture(scope="session")
def cli():
    """`edgekd --project-dir ROOT ARGS...` in this process; its exit code."""
    from flows.cli import main

    def run(root, *args: str) -> int:
        return main(["--project-dir", str(root), *args])

    return run


@pytest.fixture(scope="session")
def digits_prepared():
    """The real digits data, split and preprocessed exactly as the pipeline does: (splits, spec)."""
    from components.config import DIGITS, DataConfig
    from components.data import get_kind
    from components.data.base import prepare_splits

    kind = get_kind("image")
    splits, spec, _ = prepare_splits(
        kind, kind.load("sklearn:digits", kind.Options()), DataConfig(name="digits", **DIGITS)
    )
    return splits, spec


@pytest.fixture(scope="session")
def digits_splits(digits_prepared):
    return digits_prepared[0]


@pytest.fixture(scope="session")
def digits_spec(digits_prepared):
    return digits_prepared[1]


def _trained(splits, spec, role: str, width: int, epochs: int):
    import torch

    from components.models import build
    from components.train import fit

    model = build("image", role, spec, 10, width, seed=0)
    model, _ = fit(
        model,
        splits["train"],
        splits["val"],
        epochs=epochs,
        lr=5e-3,
        batch_size=64,
        patience=epochs,
        seed=0,
        device=torch.device("cpu"),
    )
    return model


@pytest.fixture(scope="session")
def small_student(digits_splits, digits_spec):
    """A student trained for a few epochs: good enough to make accuracy comparisons meaningful."""
    return _trained(digits_splits, digits_spec, "student", 8, 15)


@pytest.fixture(scope="session")
def small_teacher(digits_splits, digits_spec):
    """A teacher trained for a few epochs on the digits."""
    return _trained(digits_splits, digits_spec, "teacher", 8, 4)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _matmul_onnx(outputs: int, seed: int = 0) -> bytes:
    """An ONNX model `input` (batch, 64) @ W (64, outputs) -> `logits`: 256 * outputs bytes of weights, and work
    that grows with `outputs`."""
    from onnx import TensorProto, helper, numpy_helper

    from components.formats.base import INPUT_NAME, OUTPUT_NAME

    w = numpy_helper.from_array(np.random.default_rng(seed).standard_normal((64, outputs)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", [INPUT_NAME, "w"], [OUTPUT_NAME])],
        "matmul",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", outputs])],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


def _latency(p50_ms: float = 0.01, size_bytes: int = 1000):
    from components.benchmark import Latency

    return Latency(
        **{f"p{q}_{k}ms": p50_ms * f for q, f in ((50, 1), (95, 2), (99, 3)) for k in ("", "lo_", "hi_")},
        mean_ms=p50_ms,
        throughput_sps=1e3 / p50_ms,
        peak_mem_mb=1.0,
        size_bytes=size_bytes,
        energy_nj=1.0,
        energy_source="estimate",
        threads=1,
        batch_size=1,
        warmup_runs=1,
        timed_runs=10,
        rounds=1,
    )


@pytest.fixture(scope="session")
def latency():
    """latency(p50_ms=0.01, size_bytes=1000): a components.benchmark.Latency of point figures (p95 = 2 x p50,
    p99 = 3 x p50, no interval), for tests of what reads one."""
    return _latency


@pytest.fixture(scope="session")
def matmul_onnx():
    """matmul_onnx(outputs, seed=0): the bytes of a one-MatMul ONNX model (see _matmul_onnx)."""
    return _matmul_onnx


def require(ok: bool, reason: str) -> None:
    """Skip the calling test where a capability it needs is missing (`reason` names it and how to get it); under
    CI=true, which always has it, fail instead, so that a broken CI image cannot pass by skipping."""
    if ok:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true, yet {reason}", pytrace=False)
    pytest.skip(reason)
