import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from components import energy
from components.benchmark import measure
from components.config import BenchmarkConfig
from components.formats.base import INPUT_NAME, OUTPUT_NAME

pytestmark = pytest.mark.unit


def _conv_gemm(path):
    """x (N,1,8,8) -> Conv 3x3 (4 filters, pad 1) -> Flatten -> Gemm (256 -> 10), both with biases."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
        for n, s in (("w", (4, 1, 3, 3)), ("b", (4,)), ("g", (10, 256)), ("gb", (10,)))
    ]
    nodes = [
        helper.make_node("Conv", [INPUT_NAME, "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Flatten", ["c"], ["f"]),
        helper.make_node("Gemm", ["f", "g", "gb"], [OUTPUT_NAME], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "cg",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def test_macs_bytes_and_the_estimate_by_hand(tmp_path):
    path = tmp_path / "m.onnx"
    _conv_gemm(path)
    c = energy.count(path, batch_size=1)
    # Conv: 4 x 8 x 8 outputs x (1 x 3 x 3) = 2,304; Gemm: 10 outputs x 256 = 2,560
    assert c.macs == 2304 + 2560 and c.precision == "fp32"
    assert c.weight_bytes == (36 + 4 + 2560 + 10) * 4
    # activations: input 64, conv 256, flatten 256, output 10 floats
    assert c.activation_bytes == (64 + 256 + 256 + 10) * 4
    pj = 4864 * 4.6 + (10440 + 2 * 2344) * 2.5
    assert energy.estimate_nj(c) == pytest.approx(pj / 1000)
    assert energy.count(path, batch_size=4).macs == 4 * 4864


def test_benchmark_labels_the_energy_it_reports(tmp_path):
    path = tmp_path / "m.onnx"
    _conv_gemm(path)
    cfg = BenchmarkConfig(warmup_runs=1, timed_runs=10, rounds=1)
    r = measure({"m": path}, np.ones((2, 1, 8, 8), np.float32), cfg).latency["m"]
    if energy.rapl_readable():
        assert r.energy_source.startswith("measured") and r.energy_nj > 0
    else:
        assert r.energy_source == energy.SOURCE
        assert r.energy_nj == pytest.approx(energy.estimate_nj(energy.count(path)))
