"""Teachers as KD sees them: a function from prepared inputs to logits. A network trained here (one, or an
ensemble), or one the user brings as a file: ONNX (run by ONNX Runtime, so any framework's model can teach) or
TorchScript."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

TeacherFn = Callable[[torch.Tensor], torch.Tensor]
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript")


class TeacherFileError(ValueError):
    """A teacher file that cannot teach this dataset: unreadable, wrong format, or wrong input/output shape."""


def onnx_teacher(path: str | Path, threads: int = 1) -> TeacherFn:
    """Logits from an ONNX file through ONNX Runtime (CPU), for a batch on any device."""
    from components.formats import onnx_rt

    sess = onnx_rt.session(path, threads)
    name = sess.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        out = sess.run(None, {name: np.ascontiguousarray(x.detach().cpu().numpy())})[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32)).to(x.device)

    return run


def load_teacher_file(path: str | Path) -> tuple[TeacherFn, nn.Module | None]:
    """A user's teacher: (logits function, the torch module when it is TorchScript, else None)."""
    path = Path(path)
    if not path.is_file():
        raise TeacherFileError(f"teacher.source {path}: no such file")
    if path.suffix == ".onnx":
        from components.formats.onnx_rt import check_onnx

        try:
            check_onnx(path)
            return onnx_teacher(path), None
        except Exception as e:
            raise TeacherFileError(f"teacher.source {path}: not a valid ONNX model ({e})") from None
    if path.suffix in TORCHSCRIPT_SUFFIXES:
        try:
            module = torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as e:  # a pickle of Python objects (torch.save) is refused here, never unpickled
            raise TeacherFileError(
                f"teacher.source {path}: not a TorchScript archive (save it with "
                f"torch.jit.save(torch.jit.script(model) or torch.jit.trace(model, x), path)): {e}"
            ) from None
        return module, module
    raise TeacherFileError(
        f"teacher.source {path}: expected an .onnx file or a TorchScript archive ({', '.join(TORCHSCRIPT_SUFFIXES)})"
    )


def torch_teacher(module: nn.Module) -> TeacherFn:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module.to(x.device)(x)

    return run


def logits(teacher: TeacherFn, x: np.ndarray, batch_size: int = 512, device: torch.device | None = None) -> np.ndarray:
    """The teacher's logits for every row of `x` (float32, (N, classes))."""
    device = device or torch.device("cpu")
    out = [
        teacher(torch.from_numpy(x[i : i + batch_size]).to(device)).detach().float().cpu().numpy()
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def check_teacher(teacher: TeacherFn, example: np.ndarray, num_classes: int, source: str) -> None:
    """A teacher must map the prepared inputs to (N, num_classes) finite logits."""
    try:
        out = logits(teacher, example[:2])
    except Exception as e:
        raise TeacherFileError(
            f"teacher.source {source}: fails on the prepared inputs of shape "
            f"{list(example.shape[1:])} ({type(e).__name__}: {e})"
        ) from None
    if out.shape != (min(2, len(example)), num_classes):
        raise TeacherFileError(
            f"teacher.source {source}: outputs shape {list(out.shape)} for 2 inputs; expected "
            f"[2, {num_classes}] logits, one per class"
        )
    if not np.isfinite(out).all():
        raise TeacherFileError(f"teacher.source {source}: outputs NaN/Inf on the prepared inputs")
