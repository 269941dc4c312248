import pytest

from components.config import GateConfig
from components.gate import Decision, GateView, decide, select_best
from components.rounds import Plan, Series, median_interval

POLICY = GateConfig(
    min_accuracy=0.9, max_accuracy_drop=0.05, max_p95_ms=1.0, max_size_kb=100, regression_tolerance=0.01
)

pytestmark = pytest.mark.unit
V = GateView.from_json  # metrics and figures by name, as the gate report writes them
TEACHER = {"accuracy": 0.95}
GOOD = {"accuracy": 0.93, "p95_ms": 0.5, "size_bytes": 50 * 1024}
SPELL = [1.00, 1.04, 0.98, 1.20, 1.00, 0.97, 1.00, 1.10, 0.99, 1.00]  # the machine, round by round: median 1
EVEN, WOBBLE = [1.0] * 10, [0.9, 1.1] * 5  # a model's own noise on top: none, or +-10% round to round


def timed(p95_ms: float, own=EVEN, measurement: str = "run") -> dict:
    """The p95 figures of a model timed side by side with the others of `measurement` over 10 rounds: per round
    `p95_ms` x the machine's state x its own noise; its median, 95% interval (2nd and 9th values) and rounds."""
    values = [p95_ms * s * o for s, o in zip(SPELL, own, strict=True)]
    i = median_interval(values)
    series = Series(measurement=measurement, plan=Plan.fixed(10), values=values)
    return {"p95_ms": i.value, "p95_lo_ms": i.lo, "p95_hi_ms": i.hi, "p95_series": series}


def test_good_candidate_passes_with_no_reasons():
    assert decide(V(GOOD), V(TEACHER), None, POLICY) == Decision(True, [])


def test_min_accuracy():
    d = decide(V(GOOD | {"accuracy": 0.89}), V({"accuracy": 0.9}), None, POLICY)
    assert not d.passed and len(d.reasons) == 1 and "min_accuracy" in d.reasons[0]


def test_max_accuracy_drop():
    d = decide(V(GOOD), V({"accuracy": 0.99}), None, POLICY)
    assert not d.passed and len(d.reasons) == 1 and "drop from teacher 0.0600" in d.reasons[0]


def test_max_p95():
    d = decide(V(GOOD | {"p95_ms": 1.5}), V(TEACHER), None, POLICY)
    assert not d.passed and len(d.reasons) == 1 and "p95 latency 1.5000 ms" in d.reasons[0]


def test_max_size():
    d = decide(V(GOOD | {"size_bytes": 101 * 1024}), V(TEACHER), None, POLICY)
    assert not d.passed and len(d.reasons) == 1 and "size 101.0 KiB" in d.reasons[0]


def test_regression_against_production_beyond_tolerance():
    d = decide(V(GOOD), V(TEACHER), V({"accuracy": 0.945}), POLICY)
    assert not d.passed and len(d.reasons) == 1 and "regresses below production" in d.reasons[0]


def test_regression_within_tolerance_passes():
    assert decide(V(GOOD), V(TEACHER), V({"accuracy": 0.935}), POLICY).passed


def test_every_failed_rule_is_reported():
    bad = {"accuracy": 0.5, "p95_ms": 9.0, "size_bytes": 10**7}
    assert len(decide(V(bad), V(TEACHER), V({"accuracy": 0.95}), POLICY).reasons) == 5


def test_select_best_prefers_accuracy_then_lower_p95():
    cands = {
        "a": {"accuracy": 0.95} | timed(0.3),
        "b": {"accuracy": 0.95} | timed(0.2),
        "c": {"accuracy": 0.99} | timed(0.9),
        "d": {"accuracy": 0.97} | timed(0.1),
    }
    decisions = {"a": Decision(True), "b": Decision(True), "c": Decision(False, ["x"]), "d": Decision(False, ["y"])}
    cands = {k: V(v) for k, v in cands.items()}
    assert select_best(cands, decisions) == "b"
    assert select_best(cands, {k: Decision(False, ["x"]) for k in cands}) is None


BINARY = GateConfig(
    metric="f1_positive",
    min_metric=0.88,
    max_metric_drop=0.05,
    min_sensitivity=0.95,
    min_accuracy=0.5,
    max_accuracy_drop=1.0,
    max_p95_ms=1.0,
    max_size_kb=100,
)
B_TEACHER = {"accuracy": 0.98, "f1_positive": 0.93}
B_GOOD = {"accuracy": 0.97, "f1_positive": 0.90, "sensitivity": 0.96, "p95_ms": 0.1, "size_bytes": 1024}


def test_gate_metric_threshold_drop_and_sensitivity():
    assert decide(V(B_GOOD), V(B_TEACHER), None, BINARY).passed
    d = decide(V(B_GOOD | {"f1_positive": 0.87}), V(B_TEACHER), None, BINARY)
    assert d.reasons == [
        "f1_positive 0.8700 < min_metric 0.8800",
        "f1_positive drop from teacher 0.0600 > max_metric_drop 0.0500",
    ]
    d = decide(V(B_GOOD | {"sensitivity": 0.9}), V(B_TEACHER), None, BINARY)
    assert d.reasons == ["sensitivity 0.9000 < min_sensitivity 0.9500"]


def test_regression_uses_the_gate_metric():
    d = decide(V(B_GOOD), V(B_TEACHER), V({"f1_positive": 0.92, "accuracy": 0.5}), BINARY)
    assert d.reasons == ["f1_positive 0.9000 regresses below production 0.9200 - tolerance 0.0100"]


def test_unmeasured_gate_metric_fails_with_a_reason():
    d = decide(V(GOOD), V(TEACHER), None, BINARY)
    assert not d.passed and "was not measured" in d.reasons[0]


def test_select_best_by_gate_metric():
    cands = {
        "a": {"accuracy": 0.99, "f1_positive": 0.80, "p95_ms": 0.1},
        "b": {"accuracy": 0.95, "f1_positive": 0.90, "p95_ms": 0.2},
    }
    ok = {"a": Decision(True), "b": Decision(True)}
    cands = {k: V(v) for k, v in cands.items()}
    assert select_best(cands, ok, "f1_positive") == "b" and select_best(cands, ok) == "a"


def test_an_int8_model_not_faster_than_its_fp32_source_is_refused():
    fp32 = GOOD | timed(0.0119)
    slower = GOOD | timed(0.0273) | {"size_bytes": 30 * 1024}  # digits' static INT8 was 2.3x slower
    d = decide(V(slower), V(TEACHER), None, POLICY, source=V(fp32), transform="int8")
    # every round 0.0273 / 0.0119 = 2.294x; the intervals are the 2nd and 9th of the ten rounds (x 0.98 and x 1.10)
    assert d.reasons == [
        "INT8 slower than FP32 on this device: p95 0.0273 [0.0268, 0.0300] ms vs its FP32 source's 0.0119 "
        "[0.0117, 0.0131] ms (paired p95 ratio 2.294x [2.294, 2.294] (10 rounds, 97.9% interval))"
    ]
    assert not decide(V(fp32), V(TEACHER), None, POLICY, source=V(fp32), transform="int8").passed  # equal is not faster
    assert decide(V(GOOD | timed(0.0100)), V(TEACHER), None, POLICY, source=V(fp32), transform="int8").passed
    assert (
        decide(V(slower), V(TEACHER), None, POLICY, source=V(fp32), transform="fp16")
        .reasons[0]
        .startswith("FP16 slower")
    )
    assert decide(
        V(slower), V(TEACHER), None, POLICY, source=V(fp32), transform="export"
    ).passed  # no rule for an export


def test_a_pruned_model_must_be_faster_or_smaller_than_its_source():
    src = GOOD | timed(0.5) | {"size_bytes": 50 * 1024}
    smaller, faster = GOOD | timed(0.6) | {"size_bytes": 40 * 1024}, GOOD | timed(0.4) | {"size_bytes": 50 * 1024}
    assert decide(V(smaller), V(TEACHER), None, POLICY, source=V(src), transform="prune").passed
    assert decide(V(faster), V(TEACHER), None, POLICY, source=V(src), transform="prune").passed
    same = GOOD | timed(0.5, WOBBLE) | {"size_bytes": 50 * 1024}
    d = decide(V(same), V(TEACHER), None, POLICY, source=V(src), transform="prune")
    assert len(d.reasons) == 1 and d.reasons[0].startswith("pruning paid nothing: p95 0.4918 [0.4455, 0.6050] ms")
    assert (
        "(no measurable difference from its source's 0.5000 [0.4900, 0.5500] ms; paired p95 ratio 1.000x"
        in (d.reasons[0])
    )
    assert d.reasons[0].endswith("and size 50.0 KiB not below its 50.0 KiB")


def test_speed_rules_compare_rounds_pairwise_so_a_difference_inside_the_noise_is_not_faster():
    fp32 = GOOD | timed(0.0119)
    # lower on median, but round by round 0.0112 / 0.0119 x 0.9 or x 1.1: half the rounds are slower. Its values
    # sorted are 0.0112 x (0.882 0.891 0.9 0.9 0.9 1.067 1.1 1.144 1.21 1.32): median 0.0110, interval 2nd to 9th
    inside = GOOD | timed(0.0112, WOBBLE)
    d = decide(V(inside), V(TEACHER), None, POLICY, source=V(fp32), transform="int8")
    assert d.reasons == [
        "INT8 not measurably faster than FP32 on this device: p95 0.0110 [0.0100, 0.0136] ms vs its FP32 source's "
        "0.0119 [0.0117, 0.0131] ms (paired p95 ratio 0.941x [0.847, 1.035] (10 rounds, 97.9% interval))"
    ]
    # the same wobble 12% lower: every round faster (at most 0.882 x 1.1 = 0.97), though the intervals overlap
    apart = GOOD | timed(0.0105, WOBBLE)
    assert V(apart).p95_hi_ms > V(fp32).p95_lo_ms
    assert decide(V(apart), V(TEACHER), None, POLICY, source=V(fp32), transform="int8").passed
    same_size = {"size_bytes": GOOD["size_bytes"]}
    pruned = decide(V(inside | same_size), V(TEACHER), None, POLICY, source=V(fp32 | same_size), transform="prune")
    assert "no measurable difference from its source's 0.0119 [0.0117, 0.0131] ms" in pruned.reasons[0]


def test_a_speed_rule_never_calls_a_difference_without_rounds_side_by_side_or_with_too_few():
    fp32, int8 = GOOD | timed(0.0119), GOOD | timed(0.0060)  # twice as fast in every round
    assert decide(V(int8), V(TEACHER), None, POLICY, source=V(fp32), transform="int8").passed
    elsewhere = GOOD | timed(0.0060, measurement="another run")  # not timed beside its source: no pairing
    d = decide(V(elsewhere), V(TEACHER), None, POLICY, source=V(fp32), transform="int8")
    assert d.reasons[0].endswith("(not measured side by side: no paired comparison)")
    figures = decide(V(GOOD | {"p95_ms": 0.006}), V(TEACHER), None, POLICY, source=V(GOOD), transform="int8")
    assert figures.reasons[0].startswith("INT8 not measurably faster than FP32 on this device: p95 0.0060 ms")
    few = [{k: v for k, v in t.items() if k != "p95_series"} for t in (timed(0.0119), timed(0.0060))]
    for f, values in zip(few, ([0.0119] * 5, [0.0060] * 5), strict=True):  # five rounds: no 95% interval
        f["p95_series"] = Series(measurement="run", plan=Plan.fixed(5), values=values)
    d = decide(V(GOOD | few[1]), V(TEACHER), None, POLICY, source=V(GOOD | few[0]), transform="int8")
    assert "(paired p95 ratio 0.504x (5 rounds: no 95% interval))" in d.reasons[0]


def test_a_tie_on_the_metric_goes_to_the_measurably_faster_else_to_the_first_in_table_order():
    def view(p95, own=EVEN):
        return GateView(metrics={"accuracy": 0.95}, **timed(p95, own))

    ok = {"kd_fp32": Decision(True), "kd_pte_fp32": Decision(True)}
    noisy = {"kd_fp32": view(0.0116), "kd_pte_fp32": view(0.0112, WOBBLE)}
    assert select_best(noisy, ok) == "kd_fp32"  # 0.0112 vs 0.0116, but half its rounds are slower: noise
    apart = {"kd_fp32": view(0.0116), "kd_pte_fp32": view(0.0102)}
    assert select_best(apart, ok) == "kd_pte_fp32"


def test_select_latency_or_size_takes_the_fastest_or_smallest_within_the_tolerance_of_the_best():
    def view(acc, p95, kib, own=EVEN):
        return GateView(metrics={"accuracy": acc}, size_bytes=kib * 1024, **timed(p95, own))

    cands = {
        "kd_fp32": view(0.985, 0.31, 40),  # the best val accuracy
        "kd_pruned_fp32": view(0.982, 0.21, 25),  # 0.3 points below, measurably faster
        "kd_pruned_int8_static": view(0.981, 0.11, 9),  # 0.4 points below, the fastest and smallest
        "kd_pruned_int8_dynamic": view(0.983, 0.115, 10, WOBBLE),  # as fast within the noise, more accurate
        "plain_pruned_int8_static": view(0.975, 0.055, 8),  # fastest of all, but a point below the best
    }
    ok = dict.fromkeys(cands, Decision(True))
    assert select_best(cands, ok, select="accuracy") == "kd_fp32"
    assert select_best(cands, ok, select="latency", tolerance=0.005) == "kd_pruned_int8_dynamic"
    assert select_best(cands, ok, select="size", tolerance=0.005) == "kd_pruned_int8_static"
    assert select_best(cands, ok, select="latency", tolerance=0.0) == "kd_fp32"  # no room: the best val alone
    assert select_best(cands, ok, select="latency", tolerance=0.02) == "plain_pruned_int8_static"
    with pytest.raises(ValueError, match="gate.select 'speed'"):
        select_best(cands, ok, select="speed", tolerance=0.005)


def test_an_mcu_budget_refuses_a_model_over_it_with_its_arena_and_one_tflm_never_ran():
    mcu = POLICY.model_copy(update={"max_ram_kb": 64.0, "max_flash_kb": 256.0})
    fits = GOOD | {"arena_bytes": 60 * 1024, "flash_bytes": 200 * 1024}
    assert decide(V(fits), V(TEACHER), None, mcu) == Decision(True, [])
    over = decide(V(fits | {"arena_bytes": 70 * 1024 + 512}), V(TEACHER), None, mcu)
    assert over.reasons == ["TFLite Micro arena 70.5 KiB > max_ram_kb 64 KiB"]
    flash = decide(V(fits | {"flash_bytes": 300 * 1024}), V(TEACHER), None, mcu)
    assert flash.reasons == ["flash 300.0 KiB > max_flash_kb 256 KiB"]
    never = decide(V(GOOD), V(TEACHER), None, mcu)  # an ONNX file: no arena was found for it
    assert len(never.reasons) == 2 and all("TensorFlow Lite Micro did not run" in r for r in never.reasons)
    assert decide(V(GOOD), V(TEACHER), None, POLICY).passed  # no budget set: no TFLM fit needed
