"""A run's training times (flows/phases/context.py): the wall time during which at least one training ran."""

import pytest

from flows.phases.context import StageTime, TrainingTimes

pytestmark = pytest.mark.unit


def _t(started: float, seconds: float) -> StageTime:
    return StageTime("student_kd", "{}", started, seconds, 10, seconds / 10)


def test_overlapping_trainings_count_once_and_a_gap_not_at_all():
    # 0-10 and 5-15 overlap (15 s of wall), 20-25 after a 5 s gap in which nothing trained (5 s)
    out = TrainingTimes.of([_t(20, 5), _t(0, 10), _t(5, 10)]).as_json()
    assert (out["sum_s"], out["wall_s"], out["wall_over_sum"]) == (25.0, 20.0, 0.8)
    assert [t["started"] for t in out["trainings"]] == [20, 0, 5]  # in the run's order


def test_one_after_another_the_wall_is_the_sum_and_one_inside_another_adds_nothing():
    assert TrainingTimes.of([_t(0, 4), _t(4, 6)]).as_json()["wall_over_sum"] == 1.0
    assert TrainingTimes.of([_t(0, 10), _t(2, 3)]).wall_s == 10.0
    assert TrainingTimes.of([]).as_json()["wall_over_sum"] is None
