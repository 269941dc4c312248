import optuna
import pytest

from components import search as S
from components.config import DistillConfig, GateConfig, SearchConfig
from components.gate import GateView
from components.rounds import Plan, Series, median_interval

pytestmark = pytest.mark.unit

POLICY = GateConfig(min_accuracy=0.9, max_accuracy_drop=0.05, max_p95_ms=1.0, max_size_kb=100)
TEACHER = GateView(metrics={"accuracy": 0.95})
PLAIN = GateView(metrics={"accuracy": 0.92})


SPELL = [1.00, 1.04, 0.98, 1.20, 1.00, 0.97, 1.00, 1.10, 0.99, 1.00]  # the machine, round by round: median 1


def timed(p95_ms: float, own=(1.0,) * 10) -> dict:
    """p95 figures of a model timed side by side with the others of one measurement: per round `p95_ms` x the
    machine's state x its own noise; its median and 95% interval (the 2nd and 9th of ten values)."""
    values = [p95_ms * s * o for s, o in zip(SPELL, own, strict=True)]
    i = median_interval(values)
    series = Series(measurement="m", plan=Plan.fixed(10), values=values)
    return {"p95_ms": i.value, "p95_lo_ms": i.lo, "p95_hi_ms": i.hi, "p95_series": series}


def view(acc, p95, kib):
    return GateView(metrics={"accuracy": acc}, size_bytes=kib * 1024, **timed(p95))


def point(name, acc, p95, size, own=(1.0,) * 10):
    return S.SearchPoint(
        candidate=name,
        val_accuracy=acc,
        test_accuracy=acc,
        val_score=acc,
        test_score=acc,
        size_bytes=size,
        energy_nj=None,
        energy_source=None,
        **timed(p95, own),
    )


def test_budget_is_a_wall_time_or_a_number_of_trials():
    assert S.parse_budget("15m") == (900.0, None)
    assert S.parse_budget("90s") == (90.0, None) and S.parse_budget("1.5h") == (5400.0, None)
    assert S.parse_budget("40") == (None, 40)
    for bad in ("0", "15 minutes", "-3", "m"):
        with pytest.raises(S.SearchConfigError, match="--budget"):
            S.parse_budget(bad)


def test_objectives_default_and_refusals():
    assert S.parse_objectives(None, False) == ["accuracy", "p95", "size"]
    assert S.parse_objectives(None, True) == ["accuracy", "p95", "size", "energy"]
    assert S.parse_objectives("accuracy,energy", False) == ["accuracy", "energy"]
    for bad in ("p95,size", "accuracy,flops", "accuracy,p95,p95"):
        with pytest.raises(S.SearchConfigError):
            S.parse_objectives(bad, False)


def test_space_defaults_around_the_student_width_and_leaves_out_feature_methods_without_a_feature_teacher():
    distill = DistillConfig(method="dkd")
    sp = S.space(SearchConfig(methods=["plain", "dkd", "hint"]), "image", 4, distill, feature_teacher=False)
    assert sp.widths == (2, 3, 4, 6, 8, 12, 16) and sp.depths == (1, 2, 3)
    assert sorted(sp.methods) == ["dkd", "plain"] and sp.methods["dkd"]["temperature"] == 4.0
    assert "hint" in S.space(SearchConfig(methods=["hint"]), "image", 4, distill, feature_teacher=True).methods
    assert S.space(SearchConfig(), "text", 16, distill, True).depths is None  # the text student has one depth
    with pytest.raises(S.SearchConfigError, match="int4"):
        S.space(SearchConfig(precisions=["int4"]), "image", 4, distill, True)


def test_suggest_reads_a_trial_and_scales_the_temperature():
    sp = S.space(SearchConfig(widths=[4, 8]), "image", 4, DistillConfig(method="dkd"), True)
    trial = optuna.trial.FixedTrial(
        {
            "method": "dkd",
            "dkd.temperature_factor": 2.0,
            "width": 8,
            "depth": 1,
            "prune_ratio": 0.25,
            "precision": "int8_static_per_tensor",
        }
    )
    recipe = S.suggest(trial, sp)
    assert recipe.model_dump() == {
        "arch": "edgekd",
        "width": 8,
        "depth": 1,
        "method": "dkd",
        "options": {"alpha": 1.0, "beta": 2.0, "temperature": 8.0, "warmup_epochs": 20},
        "prune_ratio": 0.25,
        "precision": "int8_static_per_tensor",
    }
    assert recipe.label() == "w8 d1 dkd(T=8) prune0.25 int8_static_per_tensor"


def test_architectures_are_a_knob_and_only_edgekds_image_student_has_depths():
    distill = DistillConfig(method="dkd")
    sp = S.space(SearchConfig(archs=["edgekd", "resnet8"], widths=[1]), "image", 1, distill, True)
    assert sp.archs == ("edgekd", "resnet8") and sp.depths == (1, 2, 3) and sp.describe()["archs"] == list(sp.archs)
    fixed = {"method": "plain", "width": 1, "prune_ratio": 0.0, "precision": "int8_qat"}
    recipe = S.suggest(optuna.trial.FixedTrial(fixed | {"arch": "resnet8", "depth": 2}), sp)
    assert (recipe.arch, recipe.depth) == ("resnet8", None) and recipe.label() == "resnet8 w1 plain int8_qat"
    assert S.suggest(optuna.trial.FixedTrial(fixed | {"arch": "edgekd", "depth": 2}), sp).depth == 2
    alone = S.space(SearchConfig(widths=[1]), "image", 1, distill, True, arch="resnet8")  # the student's own arch
    assert alone.archs == ("resnet8",) and alone.depths is None
    with pytest.raises(ValueError, match="nope"):
        SearchConfig(archs=["nope"])


def test_a_qat_trial_is_judged_as_an_int8_against_its_fp32_source():
    student, slower = view(0.95, 0.010, 20), view(0.95, 0.020, 8)
    chain = S.Chain(student=student, pruned=None, final=slower, precision="int8_qat")
    why = S.reasons(chain, TEACHER, PLAIN, POLICY, default=None, default_tolerance=0.0)
    assert why == [
        "INT8 (QAT) slower than FP32 on this device: p95 0.0200 [0.0196, 0.0220] ms vs its FP32 source's 0.0100 "
        "[0.0098, 0.0110] ms (paired p95 ratio 2.000x [2.000, 2.000] (10 rounds, 97.9% interval))"
    ]


def test_a_trial_is_refused_for_a_slower_int8_a_useless_pruning_and_falling_short_of_the_default():
    student, pruned = view(0.95, 0.010, 20), view(0.95, 0.010, 20)  # pruning changed neither
    slower = view(0.95, 0.020, 8)
    chain = S.Chain(student=student, pruned=pruned, final=slower, precision="int8_static")
    why = S.reasons(chain, TEACHER, PLAIN, POLICY, default=view(0.96, 0.01, 20), default_tolerance=0.005)
    paired = "(10 rounds, 97.9% interval)"
    assert why == [
        "INT8 slower than FP32 on this device: p95 0.0200 [0.0196, 0.0220] ms vs its FP32 source's 0.0100 "
        f"[0.0098, 0.0110] ms (paired p95 ratio 2.000x [2.000, 2.000] {paired})",
        "pruning paid nothing: p95 0.0100 [0.0098, 0.0110] ms (no measurable difference from its source's 0.0100 "
        f"[0.0098, 0.0110] ms; paired p95 ratio 1.000x [1.000, 1.000] {paired}) and size 20.0 KiB not below its "
        "20.0 KiB",
        "accuracy 0.9500 < the default recipe's 0.9600 - default_tolerance 0.0050",
    ]
    fine = S.Chain(student=student, pruned=None, final=student, precision="fp32")
    assert S.reasons(fine, TEACHER, PLAIN, POLICY, default=view(0.953, 0.01, 20), default_tolerance=0.005) == []


def test_front_keeps_the_non_dominated_points_and_pick_chooses_on_it():
    pts = [
        point("a", 0.99, 0.02, 9000),
        point("b", 0.98, 0.01, 9000),
        point("c", 0.97, 0.01, 9500),  # dominated by b
        point("d", 0.97, 0.03, 4000),
        point("e", 0.98, 0.01, 9000),
    ]  # b's values again
    front = S.front(pts, ["accuracy", "p95", "size"])
    assert [p.name for p in front] == ["a", "b", "d"]
    assert S.pick(front, "latency").name == "b"
    assert S.pick(front, "accuracy").name == "a"
    assert S.pick(front, "size").name == "d"
    assert S.pick([], "latency") is None
    assert S.Ratios.of(pts[1], pts[0]).as_json("val_accuracy") == {
        "val_accuracy_diff": -0.01,
        "speed": "faster",  # every round half the reference's
        "p95_ms": 0.5,
        "size_bytes": 1.0,
        "paired_p95": 0.5,
        "paired_p95_lo": 0.5,
        "paired_p95_hi": 0.5,
    }
    # 0.018 against 0.02 round by round x 0.8 or x 1.2: half the rounds slower, so no measurable difference
    noisy = point("n", 0.98, 0.018, 9000, own=(0.8, 1.2) * 5)
    assert S.Ratios.of(noisy, pts[0]).speed == "no measurable difference"
    assert S.Ratios.of(pts[0], noisy).speed == "no measurable difference"
    figures = [p.model_copy(update={"p95_series": None}) for p in pts[:2]]  # single figures: nothing is measurable
    assert S.Ratios.of(figures[1], figures[0]).speed == "no measurable difference"


def test_a_point_round_trips_through_the_json_a_study_keeps():
    recipe = S.SearchRecipe(width=8, depth=None, method="plain", options={}, prune_ratio=0.0, precision="fp32")
    p = S.SearchPoint(
        recipe=recipe,
        val_accuracy=0.9,
        test_accuracy=0.8,
        val_score=0.7,
        test_score=0.6,
        p95_ms=0.1,
        size_bytes=10,
        energy_nj=1.5,
        energy_source="estimate",
        trial=3,
    )
    d = p.as_json("f1_positive")
    assert (d["val_f1_positive"], d["test_f1_positive"], d["trial"]) == (0.7, 0.6, 3) and "gate_reasons" not in d
    assert S.SearchPoint.from_json(d, "f1_positive") == p
    ref = point("ref", 0.9, 0.1, 10)  # with its per-round p95, which the study keeps for paired comparisons
    assert S.SearchPoint.from_json(ref.as_json("accuracy"), "accuracy") == ref


def test_a_kd_trial_must_beat_the_same_student_trained_alone():
    kd_student = view(0.9889, 0.01, 12)
    chain = S.Chain(
        student=kd_student,
        pruned=None,
        final=kd_student,
        precision="fp32",
        plain=GateView(metrics={"accuracy": 0.9963}),
    )  # plain beat hinton at this width and depth
    teacher = GateView(metrics={"accuracy": 0.99})
    assert S.reasons(chain, teacher, PLAIN, POLICY, None, 0.0) == [
        "accuracy 0.9889 < 0.9963 of the same student trained without a teacher - plain_tolerance 0.0000: KD does "
        "not pay at this width and depth"
    ]
    chain = S.Chain(
        student=kd_student, pruned=None, final=kd_student, precision="fp32", plain=GateView(metrics={"accuracy": 0.98})
    )
    assert S.reasons(chain, teacher, PLAIN, POLICY, None, 0.0) == []
