import os

import numpy as np

import pytest

from components.benchmark import benchmark
from components.export import export_onnx


def test_benchmark_reports_ordered_percentiles_size_and_profile(small_student, digits_splits, tmp_path):
    path = tmp_path / "m.onnx"
    export_onnx(small_student, digits_splits["test"].x, path)
    r = benchmark(path, digits_splits["test"].x, threads=1, batch_size=4, warmup_runs=5, timed_runs=50)
    assert 0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"]
    assert r["size_bytes"] == os.path.getsize(path)
    assert r["throughput_sps"] == pytest.approx(4 * 1000 / r["mean_ms"])
    assert (r["threads"], r["batch_size"], r["timed_runs"]) == (1, 4, 50)
    assert r["peak_mem_mb"] >= 0


def test_benchmark_of_a_broken_file_names_it(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(RuntimeError, match="broken.onnx"):
        benchmark(bad, np.zeros((1, 1, 8, 8), np.float32), threads=1, batch_size=1, warmup_runs=0, timed_runs=10)
