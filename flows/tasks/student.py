"""A student of the KD bench: trained (or taken from the cache) single-threaded, so that its numbers are the same
whether the bench trains its students one after another here or side by side on Dask workers, and scored on val
and test through ONNX Runtime."""

from __future__ import annotations

from contextlib import contextmanager

from prefect import task

from components.bench import Accuracy
from components.export import ort_accuracy
from flows.tasks.caching import cached
from flows.tasks.data import load_data
from flows.tasks.specs import StudentSpec
from flows.tasks.train import train_student


@contextmanager
def one_thread():
    """Torch on one intra-op thread for the block: its float sums then come out the same in every process."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def bench_student(spec: StudentSpec) -> Accuracy:
    with one_thread():
        out, _ = cached(train_student, spec)
    test = load_data(spec.data).splits["test"]
    return Accuracy(val_accuracy=out.val.accuracy, test_accuracy=ort_accuracy(out.onnx.path, test.x, test.y))


# Not a decorator: Dask pickles the task's function by reference, which needs it under its own name here.
run_bench_student = task(
    bench_student,
    name="bench_student",
    retries=1,
    retry_delay_seconds=2,
    task_run_name="student-{spec.variant.label}-w{spec.width}-s{spec.seed}",
)
