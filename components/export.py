"""ONNX export (checked with onnx.checker, written atomically) and ONNX Runtime scoring."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
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


def check_onnx(path: str | Path) -> None:
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def export_onnx(model, example: np.ndarray, path: str | Path) -> Artifact:
    """Export a torch module for inputs like `example` (one or more real samples) with a dynamic batch axis,
    check the graph, then move it into place."""
    import torch  # here, not at the top: benchmark child processes import this module and need no torch

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # silences "torchvision is not installed" chatter
    model = model.cpu().eval()
    example = torch.from_numpy(np.ascontiguousarray(example[:2]))
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if isinstance(model, torch.jit.ScriptModule):  # a user's TorchScript teacher: torch.export cannot trace it
            torch.onnx.export(
                model,
                (example,),
                str(tmp),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}},
                dynamo=False,
            )
        else:
            torch.onnx.export(
                model,
                (example,),
                str(tmp),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: torch.export.Dim("batch", max=4096)},),
                dynamo=True,
                external_data=False,
                verbose=False,
                optimize=True,
            )
        strip_debug_info(tmp)
        check_onnx(tmp)
    return artifact_info(path)


def strip_debug_info(path: str | Path) -> None:
    """Drop what torch.export leaves on every node for debugging (stack traces with the build machine's paths,
    FX node text, module names: about half of a small student's file) and the intermediate shape
    annotations; the graph, its weights and its outputs are unchanged."""
    model = onnx.load(str(path))
    for node in model.graph.node:
        del node.metadata_props[:]
    del model.graph.value_info[:]
    onnx.save(model, str(path))


def sort_nodes(graph) -> None:
    """Put a graph's nodes in topological order, as the ONNX checker and shape inference need (converters such as
    ORT's float16 one append their Casts at the end)."""
    known = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in known for i in n.input)]
        if not ready:  # a cycle or a dangling input: leave the rest for the checker to name
            ordered += pending
            break
        for n in ready:
            known.update(n.output)
        ordered += ready
        pending = [n for n in pending if n not in ready]
    del graph.node[:]
    graph.node.extend(ordered)


def graph_signature(path: str | Path) -> str:
    """A hash of the model's graph without its weights: operators, attributes, inputs, outputs and the shapes and
    types of its initializers. Two models with the same signature do the same work per call."""
    graph = onnx.load(str(path), load_external_data=False).graph
    for t in graph.initializer:
        t.CopyFrom(onnx.TensorProto(name=t.name, dims=t.dims, data_type=t.data_type))
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                a.t.CopyFrom(onnx.TensorProto(name=a.t.name, dims=a.t.dims, data_type=a.t.data_type))
        node.doc_string = ""
    graph.doc_string = graph.name = ""
    return hashlib.sha256(graph.SerializeToString(deterministic=True)).hexdigest()


def artifact_info(path: str | Path) -> Artifact:
    return Artifact(path=str(path), size_bytes=os.path.getsize(path), sha256=file_sha256(path))


def ort_session(path: str | Path, threads: int = 1):
    """An ONNX Runtime CPU session, set up as every measurement's (components.timing)."""
    from components.timing import session

    return session(str(path), threads)


def ort_predict(path: str | Path, x: np.ndarray, batch_size: int = 256, threads: int = 1) -> np.ndarray:
    """Logits of an ONNX model over `x`, computed by ONNX Runtime."""
    sess = ort_session(path, threads)
    return np.concatenate(
        [sess.run([OUTPUT_NAME], {INPUT_NAME: x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)]
    )


def runtime_predict(path: str | Path, x: np.ndarray) -> np.ndarray:
    """Logits of a deployable model over `x`, computed by its format's runtime: ONNX Runtime for an ONNX file, the
    ExecuTorch runtime for a `.pte` program."""
    if Path(path).suffix == ".pte":
        from components.pte import pte_predict

        return pte_predict(path, x)
    return ort_predict(path, x)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def ort_accuracy(path: str | Path, x: np.ndarray, y: np.ndarray) -> float:
    return float((ort_predict(path, x).argmax(1) == y).mean())
