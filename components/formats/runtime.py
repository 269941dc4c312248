"""One interface over the runtimes: a model file's format by its suffix, and for each format its module, which
gives `session(path, threads)` (the part of ONNX Runtime's InferenceSession that scoring and timing use),
`predict(path, x)` (logits through the runtime), `available()` (whether this machine runs it) and `start()` (what
loads once per process, charged to no model's memory). Export, timing, predict and the registry go through here and
import no runtime themselves. A format's module is imported only when its files are met: the ONNX timing child and
the device agent need neither torch nor LiteRT."""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

MODULES = {"onnx": "onnx_rt", "pte": "pte", "tflite": "litert"}  # format -> its module in components.formats
SUFFIXES = {".onnx": "onnx", ".pte": "pte", ".tflite": "tflite"}
RUNTIMES = {"onnx": "onnxruntime", "pte": "executorch", "tflite": "ai-edge-litert"}  # the distribution that runs it


def format_of(path) -> str:
    """A model file's format ("onnx", "pte" or "tflite"), from its suffix."""
    try:
        return SUFFIXES[Path(path).suffix]
    except KeyError:
        raise ValueError(f"{path}: unknown model format (expected one of {', '.join(SUFFIXES)})") from None


def module(fmt: str):
    """The module of format `fmt` (components.formats.onnx_rt, .pte or .litert)."""
    return import_module(f"components.formats.{MODULES[fmt]}")


def available() -> list[str]:
    """The formats this machine can run and time: ONNX always, the others where their runtime is installed."""
    return [f for f in MODULES if module(f).available()]


def session(path, threads: int = 1):
    return module(format_of(path)).session(path, threads)


def predict(path, x: np.ndarray) -> np.ndarray:
    """Logits of a deployable model over `x`, computed by its format's runtime."""
    return module(format_of(path)).predict(path, x)


def start(path) -> None:
    """Load what the format of `path` loads once per process."""
    module(format_of(path)).start()


def runtime_version(fmt: str) -> str | None:
    """The installed version of the runtime that runs `fmt`, None where it is not installed."""
    try:
        return version(RUNTIMES[fmt])
    except PackageNotFoundError:
        return None


def accuracy(path, x: np.ndarray, y: np.ndarray) -> float:
    return float((predict(path, x).argmax(1) == y).mean())


NEEDS = {  # what a format's candidates need besides its runtime: the tools that make them
    "pte": ("executorch", "install the pinned `executorch` from requirements.lock"),
    "tflite": ("litert_torch, ai_edge_quantizer, tflite_micro", "install edgekd[litert] (pinned in requirements.lock)"),
}


def check_makeable(formats: list[str]) -> None:
    """ValueError naming each format of `formats` whose tools are not installed here, and how to get them."""
    from components.formats.base import installed

    lacking = []
    for f in formats:
        modules, how = NEEDS.get(f, ("", ""))
        absent = [m for m in modules.split(", ") if m and not installed(m)]
        if absent:
            lacking.append(f"`{f}` needs {', '.join(absent)}: {how}, or drop `{f}` from export.formats")
    if lacking:
        raise ValueError("export.formats: " + "; ".join(lacking))
