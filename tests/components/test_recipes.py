import pytest

from components.recipes import Recipe, recipes

pytestmark = pytest.mark.unit


def test_the_kd_and_plain_students_get_the_same_recipes():
    table = recipes()
    names = [r.name for r in table]
    assert names[0] == "teacher_fp32"
    for student in ("plain", "kd"):
        assert [n for n in names if n.startswith(student + "_")] == [
            f"{student}_fp32",
            f"{student}_pruned_fp32",
            f"{student}_pruned_int8_static",
            f"{student}_pruned_int8_dynamic",
            f"{student}_pruned_int8_qat",
        ]
    assert {r.transform for r in table} == {"export", "prune", "int8", "qat"}
    assert [r.options["mode"] for r in table if r.transform == "int8"] == ["static", "dynamic"] * 2
    sources = {r.name: r.source for r in table}
    assert sources["kd_pruned_int8_static"] == "kd_pruned_fp32" and sources["kd_pruned_fp32"] == "kd_fp32"
    assert sources["kd_pruned_int8_qat"] == "kd_pruned_fp32"  # QAT fine-tunes the pruned FP32 student
    assert [r.name for r in recipes(("plain",))] == names[:6] + ["classic_fp32"]  # no KD student: no KD candidates
    assert names[-1] == "classic_fp32" and sources["classic_fp32"] == "classic"  # last: a tie goes to a network
    assert "classic_fp32" not in [r.name for r in recipes(classic=False)]


def test_a_recipe_needs_a_known_transform():
    with pytest.raises(AssertionError):
        Recipe("x", "plain", "sparsify")
