import os

import numpy as np
import pytest

from components.benchmark import benchmark
from components.export import export_onnx

pytestmark = pytest.mark.unit


def test_benchmark_reports_ordered_percentiles_size_and_profile(small_student, digits_splits, tmp_path):
    path = tmp_path / "m.onnx"
    export_onnx(small_student, digits_splits["test"].x, path)
    r = benchmark(path, digits_splits["test"].x, threads=1, batch_size=4, warmup_runs=5, timed_runs=50)
    assert 0 < r.p50_ms <= r.p95_ms <= r.p99_ms
    assert r.size_bytes == os.path.getsize(path)
    assert r.throughput_sps == pytest.approx(4 * 1000 / r.mean_ms)
    assert (r.threads, r.batch_size, r.timed_runs) == (1, 4, 50)
    assert r.peak_mem_mb > 0


def test_benchmark_of_a_broken_file_names_it(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(RuntimeError, match="broken.onnx"):
        benchmark(bad, np.zeros((1, 1, 8, 8), np.float32), threads=1, batch_size=1, warmup_runs=0, timed_runs=10)


def _matmul_onnx(path, outputs: int) -> None:
    """x (batch, 64) @ W (64, outputs): a model whose weights are 256 * outputs bytes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from components.export import INPUT_NAME, OUTPUT_NAME

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((64, outputs)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", [INPUT_NAME, "w"], [OUTPUT_NAME])],
        "matmul",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", outputs])],
        [w],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def test_peak_memory_is_the_models_own(tmp_path):
    small, big = tmp_path / "small.onnx", tmp_path / "big.onnx"
    _matmul_onnx(small, 400)  # 0.1 MB of weights
    _matmul_onnx(big, 80_000)  # 20.5 MB = 19.5 MiB
    x = np.ones((1, 64), np.float32)
    peak = {
        p.stem: benchmark(p, x, threads=1, batch_size=1, warmup_runs=1, timed_runs=5).peak_mem_mb for p in (small, big)
    }
    # ORT's own start-up (about 9 MiB) is charged to neither; the big weights are resident at least once
    assert 0 < peak["small"] < 5
    assert peak["big"] > peak["small"] + 19.5
