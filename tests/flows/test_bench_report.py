"""What `edgekd bench kd` prints and writes: the statistics stated in the heading and the JSON, Holm's p beside each
test difference, a sweep's val difference shown as a selection rather than with an interval, every student's test
items in the JSON, and no verdict from a single split."""

import pytest

from components.bench import Accuracy, BenchRow, Conditions, summarize
from flows.reporting.bench import SELECTED, BenchResult, render

pytestmark = pytest.mark.unit


def _result(splits: int) -> BenchResult:
    rows = [
        BenchRow(
            width=4,
            method=m,
            seed=s,
            split=k,
            val_accuracy=0.9 + d,
            test_accuracy=t,
            variant=m,
            variants=v,
            test_correct=c,
        )
        for s in range(2)
        for k in range(splits)
        for m, d, v, t, c in (
            ("plain", 0.0, 1, 0.75, "1110"),
            ("dkd", 0.01 * (k + 1), 1, 1.0, "1111"),
            ("adaptive", 0.02, 3, 0.75, "1101"),
        )
    ]
    teachers = {k: Accuracy(val_accuracy=0.99, test_accuracy=1.0) for k in range(splits)}
    conditions = Conditions(
        threads=1,
        deterministic=True,
        device="cpu",
        seeds=2,
        splits=splits,
        widths=[4],
        labelled_fraction=1.0,
        torch="2.13.0",
        commit="0" * 40,
        date="2026-12-08",
    )
    return BenchResult("digits", 1.0, teachers, rows, summarize(rows, teachers), {}, conditions)


def test_the_table_states_its_statistics_and_holm_and_withholds_a_sweep_s_val_claim():
    result = _result(splits=3)
    text = render(result)
    assert "statistics: paired over splits" in text and "Holm" in text.splitlines()[3]
    adaptive = next(line for line in text.splitlines() if " adaptive " in line)
    assert SELECTED in adaptive and "[" not in adaptive.split(SELECTED)[0]  # no val interval before the test one
    assert "Holm-adjusted over the 2 KD method(s) of the width" in text
    data = result.as_json()
    assert "Holm" in data["conditions"]["interval"] and "over splits" in data["conditions"]["interval"]
    cells = {c["method"]: c for c in data["table"]}
    assert cells["adaptive"]["val_gain"] is None and cells["adaptive"]["selected_on_val"] is True
    assert cells["dkd"]["family"] == 2 and cells["dkd"]["holm_p"] is not None
    assert cells["dkd"]["test_gain"]["items"] == 4
    assert {r["test_correct"] for r in data["rows"]} == {"1110", "1111", "1101"}


def test_one_split_says_it_cannot_give_a_verdict():
    text = render(_result(splits=1))
    assert "not enough splits" in text and "run --splits 3 or more" in text
    assert "gain" not in [line.split()[-1] for line in text.splitlines() if " dkd " in line]
