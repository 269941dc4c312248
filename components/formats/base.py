"""What every runtime's module shares: the artifact record, atomic writes, content hashes, the model's tensor names
and the batching of a fixed-batch program. numpy and pydantic only: the device agent imports it."""

from __future__ import annotations

import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

INPUT_NAME, OUTPUT_NAME = "input", "logits"


class Artifact(BaseModel):
    """A file a stage wrote: where it is, its size and its content hash (what later stages and the registry check
    it against)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    size_bytes: int
    sha256: str


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def artifact_info(path: str | Path) -> Artifact:
    return Artifact(path=str(path), size_bytes=os.path.getsize(path), sha256=file_sha256(path))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fixed_batches(x: np.ndarray, size: int):
    """`x` in batches of exactly `size` rows: the last one filled up by cycling from the start of `x` (a program
    lowered for one batch size takes no other)."""
    for i in range(0, len(x), size):
        chunk = x[i : i + size]
        if len(chunk) < size:
            chunk = np.concatenate([chunk, np.resize(x, (size - len(chunk), *x.shape[1:]))])
        yield np.ascontiguousarray(chunk)


def predict_fixed(run, x: np.ndarray, size: int) -> np.ndarray:
    """Outputs of `run` (one fixed-size batch in, its outputs out) over all of `x`, the filler rows dropped."""
    starts = range(0, len(x), size)
    return np.concatenate([run(c)[: len(x) - i].copy() for i, c in zip(starts, fixed_batches(x, size))])


class Named:
    """A tensor's name, as ONNX Runtime's `get_inputs()`/`get_outputs()` give it."""

    def __init__(self, name: str):
        self.name = name


class FixedBatchSession:
    """The part of ONNX Runtime's InferenceSession that scoring and the timing harness use (`get_inputs`,
    `get_outputs`, `run`), for a runtime whose file takes one batch size (`batch_size`); `predict` scores any
    number of rows in full batches."""

    batch_size: int

    def get_inputs(self):
        return [Named(INPUT_NAME)]

    def get_outputs(self):
        return [Named(OUTPUT_NAME)]

    def run(self, output_names, feed: dict) -> list[np.ndarray]:
        raise NotImplementedError

    def predict(self, x: np.ndarray) -> np.ndarray:
        return predict_fixed(lambda c: self.run(None, {INPUT_NAME: c})[0], x, self.batch_size)


def installed(*modules: str) -> bool:
    """Whether every module of `modules` can be imported here (without importing it)."""
    from importlib.util import find_spec

    try:
        return all(find_spec(m) is not None for m in modules)
    except ImportError:  # an import hook that refuses one
        return False


@contextmanager
def captured_native_output():
    """Send this process's stdout and stderr (file descriptors 1 and 2, where native runtimes write) to a temporary
    file for the block; yields a function that returns what was written so far (to name a failure's cause)."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile(mode="w+b") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)

        def text() -> str:
            f.flush()
            f.seek(0)
            return f.read().decode(errors="replace")

        try:
            yield text
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
