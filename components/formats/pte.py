"""ExecuTorch: a trained student lowered to a `.pte` program with the XNNPACK delegate, in FP32 or INT8, and run
through the ExecuTorch runtime.

INT8 is PT2E quantization with ExecuTorch's XNNPACK quantizer (symmetric, per-channel weights where configured,
static activations) calibrated on the same train samples as ONNX Runtime's static INT8. A program is lowered for
one batch size (that of the device profile): ExecuTorch 1.4's memory planning caps a dynamic batch axis below its
stated bound (a `Dim("batch", max=1024)` input took at most 15 rows of 64 values), so a fixed batch is what runs
reliably; scoring feeds full batches, the last one filled up with the first samples and their outputs dropped.

`executorch` (which brings torch) is imported only when a `.pte` is made or run.
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from components.formats.base import Artifact, FixedBatchSession, artifact_info, atomic_path, fixed_batches, installed


@contextmanager
def _quiet():
    """torchao, which ExecuTorch imports, logs a warning for each CUDA kernel library a CPU wheel cannot load, and
    torch one for each Enum torchao registers. (The runtime's own native lines, about cpuinfo and its threadpool, go
    to stderr from C++.)"""
    logging.getLogger("torchao").setLevel(logging.ERROR)
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)  # torchao's Enum registration, deprecated
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _lower(exported, path: str | Path) -> Artifact:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    program = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()]).to_executorch()
    with atomic_path(path) as tmp:
        tmp.write_bytes(program.buffer)
    return artifact_info(path)


def _named(model):
    """`model` inside a module of its own: ExecuTorch 1.4's XNNPACK batch-norm fusion fails on a network whose
    parameter names start with a digit (a bare nn.Sequential: "'0_weight_fused_bn' is not in list")."""
    import torch

    class Named(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x)

    return Named(model).cpu().eval()


def export_pte(model, batch: np.ndarray, path: str | Path) -> Artifact:
    """`model` lowered in FP32 for inputs shaped like `batch` (its first axis is the program's batch size)."""
    with _quiet():
        import torch

        x = torch.from_numpy(np.ascontiguousarray(batch))
        return _lower(torch.export.export(_named(model), (x,)), path)


def quantize_pte(model, batch: np.ndarray, calib_x: np.ndarray, path: str | Path, per_channel: bool = True) -> Artifact:
    """`model` quantized to INT8 (PT2E, XNNPACK quantizer) after calibration on `calib_x`, fed in batches of
    `batch`'s size (the last filled up with the first samples), then lowered like export_pte."""
    with _quiet():
        import torch
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        x = torch.from_numpy(np.ascontiguousarray(batch))
        graph = torch.export.export(_named(model), (x,)).module()
        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=per_channel))
        prepared = prepare_pt2e(graph, quantizer)
        for chunk in fixed_batches(calib_x, len(batch)):
            prepared(torch.from_numpy(chunk))
        return _lower(torch.export.export(convert_pt2e(prepared), (x,)), path)


def load_runtime():
    """ExecuTorch's runtime and its native bindings, loaded once per process."""
    with _quiet():
        import executorch.extension.pybindings.portable_lib as lib
        from executorch.runtime import Runtime

        return Runtime.get(), lib


class PteSession(FixedBatchSession):
    """A `.pte` program's forward method behind the part of ONNX Runtime's InferenceSession that scoring and the
    timing harness use (`get_inputs`, `get_outputs`, `run`), on `threads` XNNPACK threads."""

    def __init__(self, path: str | Path, threads: int = 1):
        runtime, lib = load_runtime()
        if lib._threadpool_get_thread_count() != threads:
            lib._unsafe_reset_threadpool(threads)
        self._method = runtime.load_program(str(path)).load_method("forward")
        self.batch_size = int(self._method.metadata.input_tensor_meta(0).sizes()[0])

    def run(self, output_names, feed: dict) -> list[np.ndarray]:
        import torch

        (x,) = feed.values()
        return [self._method.execute([torch.from_numpy(x)])[0].numpy()]


def predict(path: str | Path, x: np.ndarray, threads: int = 1) -> np.ndarray:
    """Logits of a `.pte` program over `x`, computed by the ExecuTorch runtime in the program's batch size."""
    return PteSession(path, threads).predict(x)


def session(path: str | Path, threads: int = 1) -> PteSession:
    return PteSession(path, threads)


def available() -> bool:
    """Whether ExecuTorch is installed here (it brings torch)."""
    return installed("executorch")


def start() -> None:
    """ExecuTorch's runtime (and torch) load once per process: a memory measurement charges them to no model."""
    load_runtime()
