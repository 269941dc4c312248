"""LiteRT (the former TensorFlow Lite): a trained model lowered to a `.tflite` file by litert-torch, in FP32, or in
INT8 by ai-edge-quantizer's static recipe (int8 weights and activations, calibrated on the same train samples as
ONNX Runtime's static INT8), and run by the LiteRT interpreter (`ai-edge-litert`, its default XNNPACK delegate).

The INT8 file is full-integer: its input and output tensors are int8 with a scale and zero point, as TFLite Micro
runs it on a microcontroller. A session here takes and returns float32 (the input quantized, the output dequantized
in numpy, which a timing therefore includes, as an ONNX static INT8 file's QuantizeLinear is). A file is lowered for
one batch size, that of the device profile, as an ExecuTorch program is; scoring feeds it full batches.

The converter (litert-torch, which brings torch and jax) is imported only when a file is made; the interpreter only
when one is run.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from components.formats.base import (
    Artifact,
    FixedBatchSession,
    artifact_info,
    atomic_path,
    captured_native_output,
    fixed_batches,
    installed,
)


class LoweringError(RuntimeError):
    """The converter or the quantizer refused the model; the message holds the tail of what they printed."""


@contextmanager
def _lowering(what: str):
    """A converter step with its progress lines (litert-torch prints one per pass, the quantizer a progress bar and
    a warning that its calibration keeps every tensor, which is what calibration needs) captured, and a failure
    raised with their tail."""
    import warnings

    with captured_native_output() as text, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        except Exception as e:
            raise LoweringError(f"{what} failed: {e}\n{text()[-2000:]}") from e


def lower(model, batch: np.ndarray, path: str | Path) -> Artifact:
    """`model` (a torch module) lowered in FP32 for inputs shaped like `batch` (its first axis is the file's batch
    size)."""
    import torch

    with _lowering("litert-torch conversion"):
        import litert_torch

        edge = litert_torch.convert(model.cpu().eval(), (torch.from_numpy(np.ascontiguousarray(batch)),))
        with atomic_path(path) as tmp:
            edge.export(str(tmp))
    return artifact_info(path)


def quantize(fp32: str | Path, calib_x: np.ndarray, path: str | Path) -> Artifact:
    """The FP32 file quantized to full-integer INT8 (ai-edge-quantizer's `static_wi8_ai8`: per-channel int8 weights,
    int8 activations, min-max calibrated on `calib_x` fed in the file's batch size)."""
    from ai_edge_litert.interpreter import Interpreter

    signatures = Interpreter(model_path=str(fp32)).get_signature_list()
    (key, sig), *_ = signatures.items()
    (name,) = sig["inputs"]
    spec = TensorSpec.of(Interpreter(model_path=str(fp32)).get_input_details()[0])
    with _lowering("ai-edge-quantizer static INT8"):
        from ai_edge_quantizer import quantizer, recipe

        q = quantizer.Quantizer(str(fp32))
        q.load_quantization_recipe(recipe.static_wi8_ai8())
        result = q.calibrate({key: [{name: spec.to_tensor(c)} for c in fixed_batches(calib_x, spec.shape[0])]})
        with atomic_path(path) as tmp:
            q.quantize(result).export_model(str(tmp), overwrite=True)
    return artifact_info(path)


class TensorSpec(BaseModel):
    """A model's input or output tensor: dtype, shape, and for an integer tensor its quantization (real value =
    scale * (q - zero_point)); what firmware feeds and reads."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dtype: str
    shape: list[int]
    scale: float = 0.0
    zero_point: int = 0

    @classmethod
    def of(cls, detail: dict) -> TensorSpec:
        """From the LiteRT interpreter's tensor details, or TFLM's (`quantization_parameters`)."""
        if "quantization_parameters" in detail and "quantization" not in detail:
            q = detail["quantization_parameters"] or {}
            scales, zeros = q.get("scales", []), q.get("zero_points", [])
            scale, zero = (float(scales[0]), int(zeros[0])) if len(scales) else (0.0, 0)
        else:
            scale, zero = detail["quantization"]
        dtype = np.dtype(detail["dtype"]).name
        return cls(dtype=dtype, shape=[int(v) for v in detail["shape"]], scale=float(scale), zero_point=int(zero))

    @property
    def integer(self) -> bool:
        """Whether it holds quantized integers (scale > 0); token ids, integers too, are not quantized."""
        return not np.issubdtype(np.dtype(self.dtype), np.floating) and self.scale > 0

    def to_tensor(self, x: np.ndarray) -> np.ndarray:
        """The model's input as this tensor takes it: quantized for a quantized tensor, else cast (floats, ids)."""
        dtype = np.dtype(self.dtype)
        if not self.integer:
            return np.ascontiguousarray(x, dtype=dtype)
        info = np.iinfo(dtype)
        return np.clip(np.round(x / self.scale) + self.zero_point, info.min, info.max).astype(dtype)

    def to_float(self, y: np.ndarray) -> np.ndarray:
        """This tensor's values as floats: dequantized for an integer tensor."""
        if not self.integer:
            return y
        return ((y.astype(np.float32) - self.zero_point) * self.scale).astype(np.float32)


class LiteRtSession(FixedBatchSession):
    """A `.tflite` file in the LiteRT interpreter on `threads` threads, behind the part of ONNX Runtime's
    InferenceSession that scoring and the timing harness use (`get_inputs`, `get_outputs`, `run`)."""

    def __init__(self, path: str | Path, threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        with captured_native_output():  # "Created TensorFlow Lite XNNPACK delegate for CPU." on every session
            self._it = Interpreter(model_path=str(path), num_threads=threads)
            self._it.allocate_tensors()
        self._in, self._out = self._it.get_input_details()[0]["index"], self._it.get_output_details()[0]["index"]
        self.input = TensorSpec.of(self._it.get_input_details()[0])
        self.output = TensorSpec.of(self._it.get_output_details()[0])
        self.batch_size = self.input.shape[0]

    def run(self, output_names, feed: dict) -> list[np.ndarray]:
        (x,) = feed.values()
        self._it.set_tensor(self._in, self.input.to_tensor(x))
        self._it.invoke()
        return [self.output.to_float(self._it.get_tensor(self._out))]


def session(path: str | Path, threads: int = 1) -> LiteRtSession:
    return LiteRtSession(path, threads)


def predict(path: str | Path, x: np.ndarray, threads: int = 1) -> np.ndarray:
    """Logits of a `.tflite` file over `x`, computed by the LiteRT interpreter in the file's batch size."""
    return LiteRtSession(path, threads).predict(x)


def available() -> bool:
    """Whether the LiteRT interpreter is installed here (`edgekd[litert]`, or `ai-edge-litert` beside an agent)."""
    return installed("ai_edge_litert")


def start() -> None:
    """The interpreter's module loads once per process."""
    import ai_edge_litert.interpreter  # noqa: F401
