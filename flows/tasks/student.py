"""A student of the KD bench: trained (or taken from the cache) on `train.threads` threads, as `edgekd run` trains
it, so that its numbers are the same whether the bench trains its students one after another here or side by side
on Dask workers, and scored on val and test through ONNX Runtime, with which test items it gets right (the bench's
intervals need the test set's own sampling variance). Not cached itself: scoring takes the student from
`train_student`'s cache, whose key it leaves alone."""

from __future__ import annotations

from prefect import task

from components.bench import StudentAccuracy
from components.formats import onnx_rt
from flows.tasks.caching import cached
from flows.tasks.data import load_data
from flows.tasks.specs import StudentSpec
from flows.tasks.train import train_student


def bench_student(spec: StudentSpec) -> StudentAccuracy:
    out, _ = cached(train_student, spec)
    test = load_data(spec.data).splits["test"]
    return StudentAccuracy.of(out.val.accuracy, onnx_rt.predict(out.onnx.path, test.x).argmax(1), test.y)


# Not a decorator: Dask pickles the task's function by reference, which needs it under its own name here.
run_bench_student = task(
    bench_student,
    name="bench_student",
    retries=1,
    retry_delay_seconds=2,
    task_run_name="student-{spec.variant.label}-w{spec.width}-s{spec.seed}",
)
