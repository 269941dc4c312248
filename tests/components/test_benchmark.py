import os

import numpy as np
import pytest

from components.benchmark import measure, pinned_cpus
from components.config import BenchmarkConfig
from components.formats.onnx_rt import export_onnx, graph_signature

pytestmark = pytest.mark.unit

SHORT = BenchmarkConfig(warmup_runs=5, timed_runs=50, rounds=6)  # 6: the fewest rounds with a 95% interval


def test_measure_reports_percentiles_with_intervals_the_floor_and_the_same_graph_spread(
    small_student, digits_splits, tmp_path, matmul_onnx
):
    x = digits_splits["test"].x
    export_onnx(small_student, x, tmp_path / "a.onnx")
    (tmp_path / "m1.onnx").write_bytes(matmul_onnx(400, seed=1))
    (tmp_path / "m2.onnx").write_bytes(matmul_onnx(400, seed=2))  # same graph as m1, other weights
    models = {"student": tmp_path / "a.onnx"}
    b = SHORT.model_copy(update={"batch_size": 4})
    r = measure(models, x, b)
    lat = r.latency["student"]
    for p in ("p50", "p95"):
        i = lat.interval(p)
        assert 0 < i.lo <= i.value <= i.hi and i.coverage == pytest.approx(1 - 2 / 64)  # 6 rounds: [min, max]
    assert lat.p95_lo_ms == min(lat.p95_series.values) and lat.p95_hi_ms == max(lat.p95_series.values)
    assert lat.p50_ms <= lat.p95_ms <= lat.p99_ms
    assert lat.size_bytes == os.path.getsize(tmp_path / "a.onnx")
    assert lat.throughput_sps == pytest.approx(4 * 1000 / lat.mean_ms)
    assert (lat.threads, lat.batch_size, lat.timed_runs, lat.rounds) == (1, 4, 50, 6)
    assert lat.peak_mem_mb > 0
    # an Identity call is the floor: cheaper than the model; one model alone shares no graph
    assert 0 < r.resolution.floor_p50.value < lat.p50_ms
    assert r.resolution.same_graph == [] and r.resolution.spread is None
    assert r.resolution.cpus == [sorted(os.sched_getaffinity(0))[-1]]
    flat = measure({"m1": tmp_path / "m1.onnx", "m2": tmp_path / "m2.onnx"}, np.ones((4, 64), np.float32), SHORT)
    assert flat.resolution.same_graph == [["m1", "m2"]] and flat.resolution.spread >= 0
    assert "same-graph p50 spread" in flat.resolution.line()


def test_a_measurement_adds_rounds_only_while_a_pair_it_decides_on_is_undecided(tmp_path, matmul_onnx):
    for name, outputs, seed in (("small", 16, 1), ("big", 4000, 1), ("same", 16, 2)):
        (tmp_path / f"{name}.onnx").write_bytes(matmul_onnx(outputs, seed))
    models = {n: tmp_path / f"{n}.onnx" for n in ("small", "big", "same")}
    x, b = np.ones((4, 64), np.float32), SHORT.model_copy(update={"max_extra_looks": 1, "max_extra_seconds": 600})
    # 250 times the work: every round says so at the first look, so no round is added
    settled = measure(models, x, b, pairs=[("small", "big")])
    lat = settled.latency
    assert lat["small"].rounds == 6 and settled.resolution.added == 0
    assert lat["small"].p95_series.measurement == lat["big"].p95_series.measurement  # they pair, round by round
    # two models with the same graph: their first look calls a difference only where all 6 rounds agree (3%), so
    # the rounds are nearly always added, once (max_extra_looks)
    same = measure(models, x, b, pairs=[("small", "same")])
    assert same.resolution.rounds == same.latency["small"].rounds == len(same.latency["same"].p95_series.values)
    assert same.resolution.added in (0, 6) and same.resolution.rounds == 6 + same.resolution.added
    assert all(m.peak_mem_mb > 0 for m in same.latency.values())  # taken in the first batch of rounds
    with pytest.raises(ValueError, match=r"pairs name \['nope'\]"):
        measure(models, x, b, pairs=[("small", "nope")])


def test_measure_of_a_broken_file_names_it(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(RuntimeError, match="broken.onnx"):
        measure({"bad": bad}, np.zeros((1, 1, 8, 8), np.float32), SHORT)


def test_graph_signature_ignores_weights_but_not_shapes(tmp_path, matmul_onnx):
    for name, outputs, seed in (("a", 400, 1), ("b", 400, 2), ("c", 401, 1)):
        (tmp_path / f"{name}.onnx").write_bytes(matmul_onnx(outputs, seed))
    a, b, c = (graph_signature(tmp_path / f"{n}.onnx") for n in "abc")
    assert a == b != c


def test_pinning_takes_the_last_cores_or_the_ones_asked_and_refuses_others():
    allowed = sorted(os.sched_getaffinity(0))
    assert pinned_cpus(BenchmarkConfig()) == (allowed[-1],)
    assert pinned_cpus(BenchmarkConfig(pin=False)) is None
    assert pinned_cpus(BenchmarkConfig(cpus=[allowed[0]])) == (allowed[0],)
    with pytest.raises(ValueError, match=r"benchmark.cpus \[4096\]: CPU\(s\) \[4096\] are not available"):
        pinned_cpus(BenchmarkConfig(cpus=[4096]))


def test_peak_memory_is_the_models_own(tmp_path, matmul_onnx):
    small, big = tmp_path / "small.onnx", tmp_path / "big.onnx"
    small.write_bytes(matmul_onnx(400))  # 0.1 MB of weights
    big.write_bytes(matmul_onnx(80_000))  # 20.5 MB = 19.5 MiB
    x = np.ones((1, 64), np.float32)
    cfg = BenchmarkConfig(warmup_runs=1, timed_runs=10, rounds=1)
    peak = {n: lat.peak_mem_mb for n, lat in measure({"small": small, "big": big}, x, cfg).latency.items()}
    # ORT's own start-up (about 9 MiB) is charged to neither; the big weights are resident at least once
    assert 0 < peak["small"] < 5
    assert peak["big"] > peak["small"] + 19.5
