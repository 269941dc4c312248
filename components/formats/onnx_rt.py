"""ONNX: a trained model exported (checked with onnx.checker, written atomically), and run by ONNX Runtime.

`onnx` is imported only where a file is made or checked: the timing children and the device agent need
onnxruntime and numpy alone."""

from __future__ import annotations

import hashlib
import logging
import warnings
from pathlib import Path

import numpy as np

from components.formats.base import INPUT_NAME, OUTPUT_NAME, Artifact, artifact_info, atomic_path


def check_onnx(path: str | Path) -> None:
    import onnx

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
    import onnx

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
    import onnx

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


def session(path: str | Path, threads: int = 1):
    """An ONNX Runtime CPU session on `threads` intra-op threads, set up as every measurement's."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def predict(path: str | Path, x: np.ndarray, batch_size: int = 256, threads: int = 1) -> np.ndarray:
    """Logits of an ONNX model over `x`, computed by ONNX Runtime."""
    sess = session(path, threads)
    return np.concatenate(
        [sess.run([OUTPUT_NAME], {INPUT_NAME: x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)]
    )


def available() -> bool:
    return True  # onnxruntime is a dependency of the package itself


def start() -> None:
    """Nothing to load once per process beyond what a session loads."""
