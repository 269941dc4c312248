"""Energy per inference: measured by RAPL where the kernel lets us read it, otherwise estimated, and labelled so.

The estimate counts the multiply-accumulates of the ONNX graph (Conv, Gemm, MatMul and their integer forms, from
shapes ONNX infers at the benchmark's batch size) and the bytes the model moves (every weight read once, every
activation written and read once), priced with the 45 nm figures of M. Horowitz, "Computing's energy problem (and
what we can do about it)", ISSCC 2014: FP32 multiply 3.7 pJ + add 0.9 pJ, FP16 1.1 + 0.4 pJ, INT8 0.2 + 0.03 pJ,
and a 64-bit read of a 32 KiB SRAM cache 20 pJ (2.5 pJ per byte; models this small stay in cache). It ranks
models of one device against each other; it is not what a given chip draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.formats.onnx_rt import sort_nodes

MAC_PJ = {"fp32": 3.7 + 0.9, "fp16": 1.1 + 0.4, "int8": 0.2 + 0.03}  # Horowitz 2014, multiply + add
CACHE_PJ_PER_BYTE = 20.0 / 8  # Horowitz 2014: 64-bit access of a 32 KiB SRAM
SOURCE = "estimate: MACs and bytes moved x Horowitz (ISSCC 2014) 45 nm energies"
RAPL = Path("/sys/class/powercap/intel-rapl:0/energy_uj")

_MAC_OPS = {"Conv", "ConvInteger", "QLinearConv", "Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"}
_ITEMSIZE = {1: 4, 10: 2, 2: 1, 3: 1, 6: 4, 7: 8, 11: 8}  # TensorProto data types: float, float16, (u)int8, ...


def precision_of(model) -> str:
    """The arithmetic the model's heavy ops run in: int8 (integer or QDQ ops), fp16 (float16 weights) or fp32."""
    ops = {n.op_type for n in model.graph.node}
    if ops & {"ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul", "DequantizeLinear"}:
        return "int8"
    if any(t.data_type == 10 for t in model.graph.initializer):
        return "fp16"
    return "fp32"


@dataclass(frozen=True)
class OpCounts:
    """What one inference of a batch computes and moves: multiply-accumulates, weight and activation bytes, and the
    precision the heavy ops run in."""

    macs: int
    weight_bytes: int
    activation_bytes: int
    precision: str


def count(path: str | Path, batch_size: int = 1) -> OpCounts:
    """MACs, weight bytes and activation bytes of one inference of a batch, and the precision they run in."""
    import onnx
    from onnx import numpy_helper, shape_inference

    model = onnx.load(str(path))
    inp = model.graph.input[0].type.tensor_type.shape.dim
    if inp and not inp[0].dim_value:
        inp[0].dim_value = batch_size  # fix the dynamic batch axis so that shapes infer
    del model.graph.value_info[:]  # converters leave shapeless entries that inference would keep
    sort_nodes(model.graph)
    model = shape_inference.infer_shapes(model)
    g = model.graph
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in list(g.value_info) + list(g.input) + list(g.output)
    }
    itemsize = {v.name: _ITEMSIZE.get(v.type.tensor_type.elem_type, 4) for v in list(g.value_info) + list(g.output)}
    weights = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    macs = 0
    for n in g.node:
        if n.op_type not in _MAC_OPS:
            continue
        out = shapes.get(n.output[0], [])
        # Conv: every output element sums C_in/groups x kernel products; Gemm/MatMul: the inner dimension K
        w = _weight_shape(n, weights, shapes)
        if not out or w is None or 0 in out:
            continue
        inner = int(np.prod(w[1:])) if "Conv" in n.op_type else (w[0] if not _transposed(n) else w[-1])
        macs += int(np.prod(out)) * inner
    act = sum(
        int(np.prod(s)) * itemsize.get(name, 4)
        for name, s in shapes.items()
        if name not in weights and s and 0 not in s
    )
    return OpCounts(macs, int(sum(a.nbytes for a in weights.values())), act, precision_of(model))


def countable(path: str | Path) -> bool:
    """Whether `count` sees the model's work: not where ONNX-ML operators (scikit-learn's SVMs, trees, linear
    models exported by skl2onnx) do it, whose arithmetic the estimate does not model."""
    import onnx

    return not any(n.domain == "ai.onnx.ml" for n in onnx.load(str(path)).graph.node)


def _weight_shape(node, weights: dict, shapes: dict) -> list[int] | None:
    """Shape of a MAC op's weight: its second input, or, in a QDQ graph, the initializer behind the
    DequantizeLinear that feeds it."""
    name = node.input[3] if node.op_type.startswith("QLinear") else node.input[1]
    if name in weights:
        return list(weights[name].shape)
    return shapes.get(name)


def _transposed(node) -> bool:
    return any(a.name == "transB" and a.i == 1 for a in node.attribute)


def estimate_nj(counts: OpCounts) -> float:
    """Estimated energy of one inference in nanojoules (see the module's doc for the constants)."""
    moved = counts.weight_bytes + 2 * counts.activation_bytes
    return (counts.macs * MAC_PJ[counts.precision] + moved * CACHE_PJ_PER_BYTE) / 1000.0


def rapl_readable() -> bool:
    """Whether the package energy counter (Intel RAPL via powercap) can be read here."""
    try:
        int(RAPL.read_text())
        return True
    except (OSError, ValueError):
        return False
