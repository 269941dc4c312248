import numpy as np
import pytest

from components.data import get_kind
from components.validation import DataValidationError, class_counts, validate

KIND = get_kind("image")
RULES = dict(input_shape=(1, 8, 8), value_range=(0.0, 1.0), num_classes=10)
SPLIT_RULES = dict(RULES, min_rows_per_class=20, max_class_imbalance=3.0, leakage_reference="train")


def _tables(splits):
    return {n: KIND.describe(s) for n, s in splits.items()}


def _copy(splits):
    from components.data import Dataset

    return {n: Dataset(s.x.copy(), s.y.copy()) for n, s in splits.items()}


def _failed(report):
    return {(f["table"], f["expectation"], f["column"]) for f in report.failures}


def test_clean_digits_pass_every_expectation(digits_splits, tmp_path):
    report = validate(_tables(digits_splits), docs_dir=tmp_path / "docs", **SPLIT_RULES)
    assert report.success, report.summary()
    assert len(report.results) == 3 * 6 + 3 * 2 + 2  # per-sample, class-count and two leakage expectations
    assert (tmp_path / "docs" / "index.html").is_file()


def test_nan_pixel(digits_splits):
    s = _copy(digits_splits)
    s["train"].x[3, 0, 1, 1] = np.nan
    report = validate(_tables(s), **SPLIT_RULES)
    assert _failed(report) == {("train_samples", "expect_column_values_to_be_in_set", "non_finite")}
    assert report.failures[0]["unexpected_count"] == 1 and report.failures[0]["examples"] == ["row 3: 1"]
    with pytest.raises(DataValidationError, match=r"non_finite.*1 of \d+ rows unexpected"):
        report.raise_for_failures()


def test_unknown_label(digits_splits):
    s = _copy(digits_splits)
    s["test"].y[0] = 11
    report = validate(_tables(s), **SPLIT_RULES)
    assert ("test_samples", "expect_column_values_to_be_in_set", "label") in _failed(report)
    assert "row 0: 11" in report.summary()


def test_value_out_of_range(digits_splits):
    s = _copy(digits_splits)
    s["val"].x[2, 0, 0, 0] = 16.0  # an unscaled pixel
    assert _failed(validate(_tables(s), **SPLIT_RULES)) == {
        ("val_samples", "expect_column_values_to_be_between", "max_value")}


def test_wrong_shape_and_dtype(digits_splits):
    from components.data import Dataset

    s = _copy(digits_splits)
    s["val"] = Dataset(s["val"].x[:, :, :7, :7].astype(np.float64), s["val"].y)
    failed = _failed(validate(_tables(s), **SPLIT_RULES))
    assert ("val_samples", "expect_column_values_to_be_in_set", "shape") in failed
    assert ("val_samples", "expect_column_values_to_be_in_set", "dtype") in failed


def test_too_few_rows_of_a_class(digits_splits):
    from components.data import Dataset

    s = _copy(digits_splits)
    keep = np.flatnonzero(s["val"].y != 3)[:] .tolist() + np.flatnonzero(s["val"].y == 3)[:5].tolist()
    s["val"] = Dataset(s["val"].x[keep], s["val"].y[keep])
    report = validate(_tables(s), **SPLIT_RULES)
    assert ("val_class_counts", "expect_column_values_to_be_between", "count") in _failed(report)
    # unbalanced too: 5 rows against ~27 for the largest class
    assert ("val_class_counts", "expect_column_values_to_be_between", "share_of_largest") in _failed(report)


def test_sample_shared_between_train_and_test(digits_splits):
    from components.data import Dataset

    s = _copy(digits_splits)
    s["test"] = Dataset(np.concatenate([s["test"].x, s["train"].x[:2]]), np.concatenate([s["test"].y, s["train"].y[:2]]))
    report = validate(_tables(s), **SPLIT_RULES)
    assert _failed(report) == {("test_samples", "expect_column_values_to_not_be_in_set", "content_hash")}
    assert report.failures[0]["unexpected_count"] == 2


def test_class_counts_include_missing_and_unknown_classes():
    df = class_counts(np.array([0, 0, 2, 7]), 3)
    assert df["label"].tolist() == [0, 1, 2, 7]
    assert df["count"].tolist() == [2, 0, 1, 1]
    assert df["share_of_largest"].tolist() == [1.0, 0.0, 0.5, 0.5]
