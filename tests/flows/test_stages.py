"""Each stage's spec, its cache key, holds only what the stage reads: a KD option never retrains the teacher or
the plain student, a gate or benchmark setting or a validation threshold retrains nothing, and editing a
component module re-runs only the stages that use it."""
from pathlib import Path

from components import kd
from components.config import effective_config
from flows.pipeline import data_ref, student_spec, teacher_specs
from flows.stages import PRUNE_CODE, QUANTIZE_CODE, STUDENT_CODE, TRAIN_CODE, TeacherRef, code_version
from tests.flows.projects import shipped_params

TEACHER = TeacherRef(members=[{"width": 32, "weights": {"path": "/p/t.pt", "sha256": "t1"}}])


def keys(overrides: dict, data_changes: dict | None = None) -> dict[str, str]:
    params = shipped_params()
    params["datasets"]["digits"] |= data_changes or {}
    cfg = effective_config(params, "digits", overrides)
    data = data_ref(Path("/p"), cfg, "abc")
    variant = kd.resolve(cfg.distill)[0]
    return {"teacher": "|".join(spec.key() for spec in teacher_specs(cfg, data)), "plain": student_spec(cfg, data, kd.PLAIN, TEACHER).key(),
            "kd": student_spec(cfg, data, variant, TEACHER).key()}


def test_a_kd_option_retrains_only_the_kd_student():
    base, changed = keys({}), keys({"distill.dkd.beta": 3.0})
    assert changed["teacher"] == base["teacher"] and changed["plain"] == base["plain"]
    assert changed["kd"] != base["kd"]
    assert keys({"distill.method": "hinton"})["plain"] == base["plain"]
    assert keys({"distill.hinton.temperature": 3.0}) == base  # options of a method not in use change nothing


def test_gate_benchmark_validation_and_prose_retrain_nothing():
    base = keys({})
    assert keys({"gate.min_accuracy": 0.5, "benchmark.timed_runs": 10, "teacher.min_margin": 0.2}) == base
    assert keys({}, {"validation": {"min_rows_per_class": 5}, "intended_use": "anything"}) == base


def test_the_shared_budget_retrains_both_students_but_not_the_teacher():
    base, changed = keys({}), keys({"student.epochs": 7})
    assert changed["teacher"] == base["teacher"]
    assert changed["plain"] != base["plain"] and changed["kd"] != base["kd"]
    assert keys({"teacher.epochs": 7})["plain"] == base["plain"]


def test_a_larger_ensemble_reuses_the_members_already_trained():
    one, three = keys({})["teacher"], keys({"teacher.ensemble": 3})["teacher"].split("|")
    assert len(three) == 3 and three[0] == one


def test_each_stage_hashes_only_the_modules_it_runs():
    assert "gate.py" not in TRAIN_CODE + STUDENT_CODE + PRUNE_CODE + QUANTIZE_CODE
    assert "validation.py" not in TRAIN_CODE + STUDENT_CODE + PRUNE_CODE + QUANTIZE_CODE
    assert "kd.py" in STUDENT_CODE and "kd.py" not in TRAIN_CODE  # a KD edit leaves the teacher cached
    assert code_version("kd.py") != code_version("train.py")
