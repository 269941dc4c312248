"""Compression tasks: structured pruning with a fine-tune, ONNX Runtime quantization (static and dynamic INT8,
FP16), ExecuTorch programs and LiteRT files (FP32 and INT8)."""

from __future__ import annotations

import time

import torch
from prefect import task

from components import quantize
from components.distill import train_variant
from components.formats import litert, pte
from components.formats.base import Artifact
from components.formats.onnx_rt import export_onnx
from components.formats.runtime import check_makeable
from components.prune import prune_channels
from components.qat import fake_quantized
from components.train import evaluate
from flows.tasks.caching import CACHED, stage_task
from flows.tasks.data import load_data
from flows.tasks.specs import LiteRtSpec, PruneSpec, PteSpec, QatSpec, QuantizeSpec, TrainedModel, out_dir
from flows.tasks.train import finish, fit_kwargs, objective_kwargs, student_module
from flows.tasks.weights import load_weights


def prune_student_stage(p: PruneSpec) -> TrainedModel:
    """Remove channels of a trained student, then fine-tune it with the objective it was trained with."""
    started = time.time()
    s = p.source
    data = load_data(s.data)
    splits = data.splits
    student = load_weights(student_module(s, data.spec), p.weights)
    pruned, report = prune_channels(student, torch.from_numpy(splits["train"].x[:2]), p.prune.ratio)
    report.torch_val_accuracy_before_finetune = evaluate(pruned, splits["val"], torch.device("cpu")).accuracy
    hist = []
    if p.prune.finetune_epochs:
        kw = fit_kwargs(
            s.data.kind,
            s.train,
            p.prune.finetune_epochs,
            p.prune.finetune_lr,
            s.budget.patience,
            s.seed,
            "prune-finetune",
        )
        pruned, hist = train_variant(
            pruned, s.variant, splits["train"], splits["val"], **objective_kwargs(s, data.spec, data.pool), **kw
        )
    return finish(pruned, out_dir(p, "pruned", s.data.root), hist, splits, s.data.classes, started, prune=report)


prune_student = stage_task(prune_student_stage, **CACHED)


def pruned_student(p: PruneSpec, weights: Artifact, example: torch.Tensor) -> torch.nn.Module:
    """The network a pruning made (its structure redone from its source, deterministically) with `weights`."""
    s = p.source
    student = load_weights(student_module(s, load_data(s.data).spec), p.weights)
    return load_weights(prune_channels(student, example, p.prune.ratio)[0], weights)


@task(**CACHED)
def qat_student(q: QatSpec) -> Artifact:
    """A trained student or its pruned form fine-tuned with INT8 simulated (components/qat.py) and the objective it
    was trained with, then exported and quantized to static INT8 on the same calibration samples as every static
    INT8."""
    s = q.source
    data = load_data(s.data)
    splits = data.splits
    if q.prune is None:
        model = load_weights(student_module(s, data.spec), q.weights)
    else:
        model = pruned_student(q.prune, q.weights, torch.from_numpy(splits["train"].x[:2]))
    kw = fit_kwargs(s.data.kind, s.train, q.quantize.qat_epochs, q.quantize.qat_lr, s.budget.patience, s.seed, "qat")
    with fake_quantized(model):
        model, _ = train_variant(
            model, s.variant, splits["train"], splits["val"], **objective_kwargs(s, data.spec, data.pool), **kw
        )
    out = out_dir(q, "qat", s.data.root)
    fp32 = export_onnx(model, splits["test"].x, out / "fp32.onnx")
    calib = quantize.calibration_sample(splits["train"].x, q.quantize.calibration_samples, 0)
    return quantize.quantize_static_int8(fp32.path, out / "model.onnx", calib, q.quantize.per_channel)


@task(**CACHED)
def quantize_int8(q: QuantizeSpec) -> Artifact:
    """The FP32 model in the spec's precision: FP16, static INT8 (calibrated on train samples) or dynamic INT8."""
    out = out_dir(q, "quantized", q.data.root) / "model.onnx"
    if q.mode == "fp16":
        return quantize.convert_fp16(q.fp32.path, out)
    if q.mode == "static":
        calib = quantize.calibration_sample(load_data(q.data).splits["train"].x, q.quantize.calibration_samples, 0)
        return quantize.quantize_static_int8(q.fp32.path, out, calib, q.quantize.per_channel)
    return quantize.quantize_dynamic_int8(q.fp32.path, out)


@task(**CACHED)
def lower_pte(p: PteSpec) -> Artifact:
    """A trained student as an ExecuTorch program (XNNPACK delegate) for batches of the device profile's size: FP32,
    or INT8 calibrated on the same train samples as ONNX Runtime's static INT8."""
    check_makeable(["pte"])
    s = p.source
    data = load_data(s.data)
    train_x = data.splits["train"].x
    student = load_weights(student_module(s, data.spec), p.weights)
    out = out_dir(p, "pte", s.data.root) / "model.pte"
    batch = train_x[: p.batch_size]
    if p.mode == "fp32":
        return pte.export_pte(student, batch, out)
    calib = quantize.calibration_sample(train_x, p.quantize.calibration_samples, 0)
    return pte.quantize_pte(student, batch, calib, out, p.quantize.per_channel)


@task(**CACHED)
def lower_tflite(p: LiteRtSpec) -> Artifact:
    """A trained student as a LiteRT file for batches of the device profile's size (FP32, by litert-torch), or its
    FP32 file quantized to full-integer INT8 (ai-edge-quantizer) on the same train samples as ONNX Runtime's static
    INT8."""
    check_makeable(["tflite"])
    s = p.source
    data = load_data(s.data)
    train_x = data.splits["train"].x
    out = out_dir(p, "tflite", s.data.root) / "model.tflite"
    if p.mode == "fp32":
        student = load_weights(student_module(s, data.spec), p.weights)
        return litert.lower(student, train_x[: p.batch_size], out)
    calib = quantize.calibration_sample(train_x, p.quantize.calibration_samples, 0)
    return litert.quantize(p.fp32.path, calib, out)
