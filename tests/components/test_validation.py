import numpy as np
import pytest

from components.config import DIGITS, DataConfig, PipelineConfig
from components.data import Dataset, RawData, get_kind
from components.data.options import parse
from components.validation import (
    DataValidationError,
    class_counts,
    describe_features,
    describe_pool,
    raw_plan,
    split_plan,
    validate,
)

pytestmark = pytest.mark.unit

KIND = get_kind("image")
CFG = PipelineConfig(data=DataConfig(name="digits", **DIGITS))


def _tables(splits):
    return {n: describe_features(s.x, s.y, list(s.meta["hash"])) for n, s in splits.items()}


def _copy(splits):
    return {n: Dataset(s.x.copy(), s.y.copy(), {"hash": s.meta["hash"].copy()}) for n, s in splits.items()}


def _failed(report):
    return {(f["table"], f["expectation"], f["column"]) for f in report.failures}


def _raw():
    return KIND.load("sklearn:digits", parse(KIND.name, {}))


def test_clean_digits_pass_every_expectation(digits_splits, digits_spec, tmp_path):
    report = validate(
        raw_plan(KIND, _raw(), CFG) + split_plan(_tables(digits_splits), digits_spec, CFG), docs_dir=tmp_path / "docs"
    )
    assert report.success, report.summary()
    assert len(report.results) == 5 + 1 + 3 * 6 + 2 + 3 * 2  # raw, raw per class, per-split, leakage, class counts
    assert (tmp_path / "docs" / "index.html").is_file()


def test_a_configured_class_without_samples_is_named():
    raw = _raw()
    keep = raw.labels != "4"
    raw = type(raw)(raw.samples[keep], raw.labels[keep], {}, raw.info)
    report = validate(raw_plan(KIND, raw, CFG))
    assert _failed(report) == {("raw_samples_per_class", "expect_column_values_to_be_between", "samples")}
    assert report.failures[0]["examples"] == ["class '4': 0"]


def test_raw_nan_pixel_names_the_sample():
    raw = _raw()
    raw.samples[3, 1, 1] = np.nan
    report = validate(raw_plan(KIND, raw, CFG))
    assert _failed(report) == {("raw_samples", "expect_column_values_to_be_in_set", "non_finite")}
    assert report.failures[0]["unexpected_count"] == 1 and report.failures[0]["examples"] == ["row 3: 1"]
    with pytest.raises(DataValidationError, match=r"non_finite.*1 of 1797 rows unexpected"):
        report.raise_for_failures()


def test_raw_unknown_label():
    raw = _raw()
    raw.labels[0] = "11"
    report = validate(raw_plan(KIND, raw, CFG))
    assert _failed(report) == {("raw_samples", "expect_column_values_to_be_in_set", "label")}
    assert "row 0: 11" in report.summary()


def test_raw_value_out_of_range_and_file_names_in_examples():
    raw = _raw().subset(np.arange(50))
    raw.samples[2, 0, 0] = 300.0
    raw.meta["file"] = np.array([f"img_{i}.png" for i in range(50)])
    df = KIND.describe(raw, parse(KIND.name, {})).assign(where=raw.meta["file"])
    report = validate([("raw_samples", df, KIND.expectations(raw, parse(KIND.name, {})))])
    assert _failed(report) == {("raw_samples", "expect_column_values_to_be_between", "max_value")}
    assert report.failures[0]["examples"] == ["img_2.png: 300.0"]


def test_prepared_value_out_of_range(digits_splits, digits_spec):
    s = _copy(digits_splits)
    s["val"].x[2, 0, 0, 0] = 16.0  # an unscaled pixel
    assert _failed(validate(split_plan(_tables(s), digits_spec, CFG))) == {
        ("val_samples", "expect_column_values_to_be_between", "max_value")
    }


def test_wrong_shape_and_dtype(digits_splits, digits_spec):
    s = _copy(digits_splits)
    s["val"] = Dataset(s["val"].x[:, :, :7, :7].astype(np.float64), s["val"].y, s["val"].meta)
    failed = _failed(validate(split_plan(_tables(s), digits_spec, CFG)))
    assert ("val_samples", "expect_column_values_to_be_in_set", "shape") in failed
    assert ("val_samples", "expect_column_values_to_be_in_set", "dtype") in failed


def test_too_few_rows_of_a_class(digits_splits, digits_spec):
    s = _copy(digits_splits)
    keep = np.flatnonzero(s["val"].y != 3).tolist() + np.flatnonzero(s["val"].y == 3)[:5].tolist()
    s["val"] = Dataset(s["val"].x[keep], s["val"].y[keep], {"hash": s["val"].meta["hash"][keep]})
    failed = _failed(validate(split_plan(_tables(s), digits_spec, CFG)))
    assert ("val_class_counts", "expect_column_values_to_be_between", "count") in failed
    # unbalanced too: 5 rows against ~27 for the largest class
    assert ("val_class_counts", "expect_column_values_to_be_between", "share_of_largest") in failed


def test_sample_shared_between_train_and_test(digits_splits, digits_spec):
    s = _copy(digits_splits)
    t, tr = s["test"], s["train"]
    s["test"] = Dataset(
        np.concatenate([t.x, tr.x[:2]]),
        np.concatenate([t.y, tr.y[:2]]),
        {"hash": np.concatenate([t.meta["hash"], tr.meta["hash"][:2]])},
    )
    report = validate(split_plan(_tables(s), digits_spec, CFG))
    assert _failed(report) == {("test_samples", "expect_column_values_to_not_be_in_set", "content_hash")}
    assert report.failures[0]["unexpected_count"] == 2


def test_class_counts_include_missing_and_unknown_classes():
    df = class_counts(np.array([0, 0, 2, 7]), 3)
    assert df["label"].tolist() == [0, 1, 2, 7]
    assert df["count"].tolist() == [2, 0, 1, 1]
    assert df["share_of_largest"].tolist() == [1.0, 0.0, 0.5, 0.5]


# --- unlabelled pool -------------------------------------------------------------------------------------------


def _pool(samples):
    return RawData(
        samples.astype(np.float32),
        np.full(len(samples), "", dtype=str),
        {"file": np.array([f"p{i}.png" for i in range(len(samples))])},
        {"scale": 16.0, "unlabelled": True},
    )


def test_raw_pool_table_is_checked_with_the_labelled_data_s_expectations():
    raw = _raw()
    good = _pool(raw.samples[:4] * 0 + 3)
    wrong_size = _pool(np.zeros((2, 9, 8)))
    too_bright = _pool(np.full((2, 8, 8), 255.0))  # over the labelled scale 16

    plans = [raw_plan(KIND, raw, CFG, pool=p) for p in (good, wrong_size, too_bright)]

    assert [t for t, _, _ in plans[0]] == ["raw_samples", "raw_samples_per_class", "raw_unlabelled"]
    assert all(e[1].get("column") != "label" for e in plans[0][2][2])  # no label checks on a pool
    assert validate(plans[0]).success
    assert _failed(validate(plans[1])) == {("raw_unlabelled", "expect_column_values_to_be_in_set", "shape")}
    report = validate(plans[2])
    assert _failed(report) == {
        ("raw_unlabelled", "expect_column_values_to_be_between", c) for c in ("min_value", "max_value")
    }
    assert report.failures[0]["examples"][0] == "p0.png: 255.0"


def test_prepared_pool_holding_a_val_or_test_sample_fails_naming_the_rows(digits_splits, digits_spec):
    val, test, train = digits_splits["val"], digits_splits["test"], digits_splits["train"]
    x = np.concatenate([train.x[:3], val.x[:1], test.x[:2]])
    hashes = np.concatenate([train.meta["hash"][:3], val.meta["hash"][:1], test.meta["hash"][:2]])

    plan = split_plan(_tables(digits_splits), digits_spec, CFG, pool=describe_pool(x, hashes))
    report = validate(plan)

    assert plan[-1][0] == "unlabelled_samples" and "label" not in plan[-1][1]
    assert _failed(report) == {("unlabelled_samples", "expect_column_values_to_not_be_in_set", "content_hash")}
    assert report.failures[0]["unexpected_count"] == 3  # train rows are no leak of an evaluation split


def test_prepared_pool_schema_is_the_splits_schema(digits_splits, digits_spec):
    x = digits_splits["train"].x[:4].copy()
    x[1, 0, 0, 0] = np.nan
    x[2, 0, 0, 0] = 2.0  # past the [0, 1] value range

    report = validate(
        split_plan(
            _tables(digits_splits), digits_spec, CFG, pool=describe_pool(x.astype(np.float64), ["a", "b", "c", "d"])
        )
    )

    assert _failed(report) == {
        ("unlabelled_samples", "expect_column_values_to_be_in_set", "non_finite"),
        ("unlabelled_samples", "expect_column_values_to_be_in_set", "dtype"),
        ("unlabelled_samples", "expect_column_values_to_be_between", "max_value"),
    }
