"""Weights between stages: saved by one stage with their sha256, loaded by the next only if the file is the one
recorded and holds nothing but tensors; and the teacher a KD stage distils from, with its logits cached on disk."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from components.archs import UnsafeWeightsError, load_state
from components.formats.base import Artifact, artifact_info, atomic_path, file_sha256
from components.models import Ensemble, build
from components.teachers import load_teacher_file, logits, torch_teacher
from flows.tasks.specs import DataRef, TeacherRef, code_version


class UntrustedFileError(RuntimeError):
    """A weights or teacher file that changed since a stage recorded it, or that is not a plain tensor file."""


def save_weights(model: torch.nn.Module, path: Path) -> Artifact:
    with atomic_path(path) as tmp:
        torch.save(model.state_dict(), tmp)
    return artifact_info(path)


def load_weights(model: torch.nn.Module, weights: Artifact) -> torch.nn.Module:
    """Weights a stage saved or the user named (a state dict or a safetensors file), loaded only if the file is the
    one recorded, without unpickling code."""
    path = weights.path
    if file_sha256(path) != weights.sha256:
        raise UntrustedFileError(
            f"{path}: sha256 differs from the one recorded when it was read; "
            "refusing to load it (delete .edgekd/artifacts to retrain)"
        )
    try:
        return load_state(model, path).eval()
    except UnsafeWeightsError as e:
        raise UntrustedFileError(str(e)) from None


def teacher_module(ref: TeacherRef, data: DataRef, pspec: dict) -> torch.nn.Module | None:
    """The teacher as one torch module (an ensemble averages its members), or None for a user's ONNX file."""
    if ref.file:
        if file_sha256(ref.file.path) != ref.file.sha256:
            raise UntrustedFileError(f"teacher.source {ref.file.path} changed since this run read it")
        return load_teacher_file(ref.file.path)[1]
    nets = [
        load_weights(build(data.kind, "teacher", pspec, len(data.classes), m.width, 0, arch=m.arch), m.weights)
        for m in ref.members
    ]
    return nets[0] if len(nets) == 1 else Ensemble(nets).eval()


def kd_teacher(ref: TeacherRef, data: DataRef, pspec: dict):
    """(logits function, the module whose layers feature methods may tap, or None) of a KD stage's teacher: only
    one network trained here exposes its layers; an ensemble or a user's file gives logits only."""
    module = teacher_module(ref, data, pspec)
    fn = load_teacher_file(ref.file.path)[0] if module is None else torch_teacher(module)
    return fn, (module if len(ref.members) == 1 else None)


def _inputs_hash(x: np.ndarray) -> hashlib._Hash:
    return hashlib.sha256(np.ascontiguousarray(x).tobytes() + str(x.shape).encode())


def _npy_cached(path: Path, compute: Callable[[], np.ndarray]) -> tuple[np.ndarray, bool]:
    """The array saved at `path`, or `compute()` saved there atomically; and whether it came from the file."""
    if path.is_file():
        return np.load(path, allow_pickle=False), True
    out = compute()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, out)
    return out, False


def logits_cache(root: str, teacher_id: str, teacher) -> Callable[[np.ndarray], np.ndarray]:
    """Teacher logits of fixed inputs, cached on disk by content (teacher id + the inputs' bytes)."""

    def of(x: np.ndarray) -> np.ndarray:
        path = Path(root) / ".edgekd" / "logits" / f"{teacher_id}-{_inputs_hash(x).hexdigest()[:16]}.npy"
        return _npy_cached(path, lambda: logits(teacher, x))[0]

    return of


def views_cache(root: str, teacher_id: str, teacher, count: int, seed: int, precision: str):
    """A pool of `count` views per training sample and the teacher's logits on each (components.kd.views), every
    view's logits cached on disk by content (teacher id, the inputs' bytes, the augmentation, seed, view, precision
    and the code that draws and computes them): `of(x, augmentation) -> (Views, logits of shape (count * n,
    classes), view-major)`. `of.view(x, augmentation, v)` computes (or finds) one view alone, (logits, whether
    cached): how the pool is built in parallel."""
    from components.augment import Views
    from components.kd.views import draw_view, view_logits

    code = code_version("augment.py", "kd/views.py")

    def view(x: np.ndarray, augmentation, v: int, inputs=None) -> tuple[np.ndarray, bool]:
        h = (inputs or _inputs_hash(x)).copy()
        h.update(repr((augmentation.key(), seed, v, precision, code)).encode())
        path = Path(root) / ".edgekd" / "views" / f"{teacher_id}-{h.hexdigest()[:16]}.npy"
        return _npy_cached(
            path, lambda: view_logits(teacher, x, augmentation, draw_view(augmentation, len(x), seed, v), precision)
        )

    def of(x: np.ndarray, augmentation):
        inputs = _inputs_hash(x)  # once for the whole pool
        params = torch.stack([draw_view(augmentation, len(x), seed, v) for v in range(count)])
        return Views(augmentation, params), np.concatenate([view(x, augmentation, v, inputs)[0] for v in range(count)])

    of.view = view
    return of
