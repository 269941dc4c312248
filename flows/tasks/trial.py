"""One trial of the search, run on a Dask worker: train the recipe's student (cached by its spec: trials that share
it share it), prune it, change its precision, and measure every model of the chain through ORT."""

from __future__ import annotations

from prefect import task
from pydantic import BaseModel, ConfigDict

from components import search as S
from components.candidate import Measurement
from components.config import PipelineConfig
from components.metrics import Scores
from flows.tasks.caching import cached
from flows.tasks.compress import prune_student, qat_student, quantize_int8
from flows.tasks.measure import measure
from flows.tasks.specs import DataRef, PruneSpec, QatSpec, QuantizeSpec, StudentSpec, TeacherRef
from flows.tasks.train import train_student


class TrialResult(BaseModel):
    """A trial's models measured: the trained student (FP32), the pruned one (or None), the final one in the
    recipe's precision, and for a KD student the val scores of the same student trained alone on the same
    budget."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    student: Measurement
    pruned: Measurement | None
    final: Measurement
    plain_val: Scores | None


def trial(number: int, data: DataRef, teacher: TeacherRef, cfg: PipelineConfig, recipe: S.SearchRecipe) -> TrialResult:
    import torch

    torch.set_num_threads(1)  # one core per worker: trials side by side do not fight over threads
    variant = S.variant(recipe)
    spec = StudentSpec.of(cfg, data, variant, teacher, width=recipe.width, depth=recipe.depth, arch=recipe.arch)
    student, _ = cached(train_student, spec)
    plain = None
    if variant.method != "plain":  # KD is judged against this very student trained alone on the same budget
        plain = cached(train_student, spec.alone())[0].val
    pruned, prune_spec, weights = None, None, student.weights
    if recipe.prune_ratio:
        prune = cfg.prune.model_copy(update={"ratio": recipe.prune_ratio})
        prune_spec = PruneSpec(source=spec, weights=student.weights, prune=prune)
        pruned_model = cached(prune_student, prune_spec)[0]
        pruned, weights = pruned_model.onnx, pruned_model.weights
    final = pruned or student.onnx
    if precision := S.PRECISIONS[recipe.precision]:
        quantize = cfg.quantize.model_copy(update={k: v for k, v in precision.items() if k != "mode"})
        if precision["mode"] == "qat":
            qat = QatSpec(source=spec, weights=weights, prune=prune_spec, quantize=quantize)
            final = cached(qat_student, qat)[0]
        else:
            q = QuantizeSpec(data=data, fp32=final, mode=precision["mode"], quantize=quantize)
            final = cached(quantize_int8, q)[0]
    # Trials measure side by side on the workers: unpinned, since a pinned core would be shared. The front is
    # timed again with the workers idle (flows.phases.front).
    models = {"student": student.onnx, "final": final} | ({"pruned": pruned} if pruned else {})
    # the speed rules the trial is judged on: its precision against its FP32 source, its pruning against the student
    pairs = [("final", "pruned" if pruned else "student")] if S.PRECISIONS[recipe.precision] else []
    pairs += [("pruned", "student")] if pruned else []
    m = measure(data, models, cfg.benchmark.model_copy(update={"pin": False}), cfg.gate.target, pairs).measured
    return TrialResult(student=m["student"], pruned=m.get("pruned"), final=m["final"], plain_val=plain)


# Not a decorator: Dask pickles the task's function by reference, which needs it under its own name here.
run_trial = task(trial, name="run_trial", retries=1, retry_delay_seconds=2, task_run_name="trial-{number}")
