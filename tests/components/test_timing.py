"""The harness of components.timing, in its real child process (its statistics are tests/components/test_rounds.py)."""

import math

import numpy as np
import pytest

from components import timing
from components.benchmark import ROOT

pytestmark = pytest.mark.unit


def test_rounds_added_to_a_measurement_are_timed_without_taking_peak_memory_again(tmp_path, matmul_onnx):
    paths = []
    for seed in (1, 2):
        paths.append(str(tmp_path / f"m{seed}.onnx"))
        (tmp_path / f"m{seed}.onnx").write_bytes(matmul_onnx(16, seed))
    batch = tmp_path / "batch.npy"
    np.save(batch, np.ones((1, 64), np.float32))
    more = timing.run(paths, str(batch), timing.Settings(1, 2, 10, 3, memory=False), paths[0], timeout=120, cwd=ROOT)
    assert [len(r) for r in more.rounds] == [3, 3] and all(r.p95_ms > 0 for rs in more.rounds for r in rs)
    assert len(more.peak_mem_mb) == 2 and all(math.isnan(p) for p in more.peak_mem_mb)
