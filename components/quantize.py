"""ONNX Runtime INT8: static QDQ (per-channel weights, calibrated) and dynamic quantization."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from components.formats.base import INPUT_NAME, Artifact, artifact_info, atomic_path
from components.formats.onnx_rt import check_onnx, sort_nodes


class _Calibration:
    """CalibrationDataReader over single samples of the train split."""

    def __init__(self, x: np.ndarray):
        self._it = iter(x[i : i + 1] for i in range(len(x)))

    def get_next(self):
        batch = next(self._it, None)
        return None if batch is None else {INPUT_NAME: batch}


def calibration_sample(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    idx = np.random.default_rng(seed).choice(len(x), size=min(n, len(x)), replace=False)
    return x[np.sort(idx)]


def quantize_static_int8(fp32: str | Path, out: str | Path, calib_x: np.ndarray, per_channel: bool = True) -> Artifact:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    logging.getLogger("root").setLevel(logging.ERROR)  # ORT quantization logs per-tensor chatter at INFO
    with atomic_path(Path(out).with_suffix(".pre.onnx")) as pre:
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        with atomic_path(out) as tmp:
            quantize_static(
                str(pre),
                str(tmp),
                _Calibration(calib_x),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
            check_onnx(tmp)
    Path(out).with_suffix(".pre.onnx").unlink(missing_ok=True)
    return artifact_info(out)


def quantize_dynamic_int8(fp32: str | Path, out: str | Path) -> Artifact:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # ORT's CPU ConvInteger kernel takes uint8 weights only; int8 weights would fail at session creation.
    with atomic_path(out) as tmp:
        quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QUInt8)
        check_onnx(tmp)
    return artifact_info(out)


def convert_fp16(fp32: str | Path, out: str | Path) -> Artifact:
    """Float16 weights and arithmetic, float32 inputs and outputs (a Cast at each end), via ONNX Runtime's
    converter. Whether it is faster than FP32 depends on the CPU's float16 kernels: measure it."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
    sort_nodes(model.graph)
    with atomic_path(out) as tmp:
        onnx.save(model, str(tmp))
        check_onnx(tmp)
    return artifact_info(out)
