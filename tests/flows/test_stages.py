"""Each stage's spec, its cache key, holds only what the stage reads: a KD option never retrains the teacher or
the plain student, a gate or benchmark setting or a validation threshold retrains nothing, and editing a
component module re-runs only the stages that use it."""

from pathlib import Path

import pytest

from components import kd
from components.config import effective_config
from components.formats.base import Artifact
from flows.phases.train import teacher_specs
from flows.phases.validate import data_ref
from flows.tasks.specs import (
    PRUNE_CODE,
    QUANTIZE_CODE,
    STUDENT_CODE,
    TRAIN_CODE,
    Member,
    StudentSpec,
    TeacherRef,
    code_version,
)

pytestmark = pytest.mark.unit

TEACHER = TeacherRef(members=[Member(width=32, weights=Artifact(path="/p/t.pt", size_bytes=1, sha256="t1"))])


@pytest.fixture(scope="module")
def keys(shipped_params):
    def of(overrides: dict, data_changes: dict | None = None) -> dict[str, str]:
        params = shipped_params()
        params["datasets"]["digits"] |= data_changes or {}
        cfg = effective_config(params, "digits", overrides)
        data = data_ref(Path("/p"), cfg, "abc")
        variant = kd.resolve(cfg.distill)[0]
        return {
            "teacher": "|".join(spec.key() for spec in teacher_specs(cfg, data)),
            "plain": StudentSpec.of(cfg, data, kd.PLAIN, TEACHER).key(),
            "kd": StudentSpec.of(cfg, data, variant, TEACHER).key(),
        }

    return of


def test_a_kd_option_retrains_only_the_kd_student(keys):
    base, changed = keys({}), keys({"distill.dkd.beta": 3.0})
    assert changed["teacher"] == base["teacher"] and changed["plain"] == base["plain"]
    assert changed["kd"] != base["kd"]
    assert keys({"distill.method": "hinton"})["plain"] == base["plain"]
    assert keys({"distill.hinton.temperature": 3.0}) == base  # options of a method not in use change nothing


def test_gate_benchmark_validation_and_prose_retrain_nothing(keys):
    base = keys({})
    assert keys({"gate.min_accuracy": 0.5, "benchmark.timed_runs": 10, "teacher.min_margin": 0.2}) == base
    assert keys({}, {"validation": {"min_rows_per_class": 5}, "intended_use": "anything"}) == base


def test_the_shared_budget_retrains_both_students_but_not_the_teacher(keys):
    base, changed = keys({}), keys({"student.epochs": 7})
    assert changed["teacher"] == base["teacher"]
    assert changed["plain"] != base["plain"] and changed["kd"] != base["kd"]
    assert keys({"teacher.epochs": 7})["plain"] == base["plain"]


def test_a_larger_ensemble_reuses_the_members_already_trained(keys):
    one, three = keys({})["teacher"], keys({"teacher.ensemble": 3})["teacher"].split("|")
    assert len(three) == 3 and three[0] == one


def test_each_stage_hashes_only_the_modules_it_runs():
    assert "gate.py" not in TRAIN_CODE + STUDENT_CODE + PRUNE_CODE + QUANTIZE_CODE
    assert "validation.py" not in TRAIN_CODE + STUDENT_CODE + PRUNE_CODE + QUANTIZE_CODE
    assert "kd" in STUDENT_CODE and "kd" not in TRAIN_CODE  # a KD edit leaves the teacher cached
    assert code_version("kd") != code_version("train.py")


def test_a_spec_is_the_same_cache_key_in_another_process(keys):
    """Prefect hashes a task's inputs, typed specs here, as JSON: the key must not depend on the process (the
    search and the bench train their students on Dask workers, the run in its own process)."""
    import subprocess
    import sys

    from prefect.utilities.hashing import hash_objects

    code = (
        "from tests.flows.test_stages import TEACHER; from prefect.utilities.hashing import hash_objects; "
        "print(hash_objects(TEACHER))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == hash_objects(TEACHER) and other is not None
