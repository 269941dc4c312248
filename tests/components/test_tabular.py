from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import recall_score, roc_auc_score

from components.config import load_config
from components.data import DataError, RawData, get_kind
from components.data.base import content_hashes, prepare_splits
from components.data.options import parse
from components.data.tabular import tabular_range_expectations, tabular_range_frame
from components.formats import onnx_rt
from components.formats.onnx_rt import export_onnx
from components.models import build
from components.preprocess import transform
from components.prune import prune_channels
from components.quantize import calibration_sample, quantize_dynamic_int8, quantize_static_int8
from components.train import fit
from components.validation import describe_features, raw_plan, split_plan, validate

pytestmark = pytest.mark.unit

KIND = get_kind("tabular")
PARAMS = Path(__file__).parents[2] / "params.yaml"


def _failed(report):
    return {(f["table"], f["expectation"], f["column"]) for f in report.failures}


@pytest.fixture(scope="module")
def bc_cfg():
    return load_config(PARAMS, "breast_cancer")


@pytest.fixture(scope="module")
def bc_prepared(bc_cfg):
    raw = KIND.load(bc_cfg.data.source, bc_cfg.data.options)
    splits, spec, dropped = prepare_splits(KIND, raw, bc_cfg.data)
    return raw, splits, spec, dropped


# --- reading users' files -------------------------------------------------------------------------------------


def test_csv_with_named_label_column_delimiter_and_feature_subset(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("id;age;diagnosis;bmi\n7;41;sick;22.5\n8; 35 ;well;-1e1\n9;60;sick;30\n")
    raw = KIND.load(
        str(p), parse(KIND.name, {"label_column": "diagnosis", "delimiter": ";", "feature_columns": ["bmi", "age"]})
    )
    np.testing.assert_array_equal(raw.samples, [[22.5, 41.0], [-10.0, 35.0], [30.0, 60.0]])
    assert raw.samples.dtype == np.float64
    assert raw.labels.tolist() == ["sick", "well", "sick"]
    assert raw.meta["line"].tolist() == [1, 2, 3]
    assert raw.info["features"] == ["bmi", "age"]


def test_csv_default_features_are_every_other_column(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("a,y,b\n1,x,2\n3,z,4\n")
    raw = KIND.load(str(p), parse(KIND.name, {"label_column": "y"}))
    assert raw.info["features"] == ["a", "b"] and raw.samples.tolist() == [[1, 2], [3, 4]]


def test_parquet_with_numeric_labels_and_label_map(tmp_path):
    p = tmp_path / "t.parquet"
    pd.DataFrame({"f1": [0.5, 1.5, 2.5], "f2": [1, 2, 3], "target": [0, 1, 0]}).to_parquet(p)
    raw = KIND.load(str(p), parse(KIND.name, {"label_column": "target", "label_map": {0: "malignant", "1": "benign"}}))
    assert raw.labels.tolist() == ["malignant", "benign", "malignant"]
    np.testing.assert_array_equal(raw.samples, [[0.5, 1], [1.5, 2], [2.5, 3]])
    assert raw.meta["line"].tolist() == [1, 2, 3]


def test_csv_float_spelled_labels_match_label_map_keys(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("f,y\n1,1.0\n2,0\n")
    raw = KIND.load(str(p), parse(KIND.name, {"label_column": "y", "label_map": {0: "benign", 1: "malignant"}}))
    assert raw.labels.tolist() == ["malignant", "benign"]


# --- bad files ------------------------------------------------------------------------------------------------


def test_label_column_is_inferred_by_name_values_or_classes(tmp_path):
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "radius": rng.normal(14, 3, 20).round(3),
            "smoker": np.arange(20) % 2,
            "diagnosis": np.where(np.arange(20) % 3, "benign", "malignant"),
        }
    )
    df.to_csv(tmp_path / "t.csv", index=False)

    with pytest.raises(
        DataError,
        match=r"columns \['smoker', 'diagnosis'\] could each hold the labels; pick one "
        "with --option label_column=COLUMN",
    ):
        KIND.infer_options(str(tmp_path / "t.csv"), parse(KIND.name, {}), None)
    options, note = KIND.infer_options(str(tmp_path / "t.csv"), parse(KIND.name, {}), ["benign", "malignant"])
    assert (options.given(), note) == (
        {"label_column": "diagnosis"},
        "label column 'diagnosis' inferred (2 distinct values)",
    )
    assert KIND.load(str(tmp_path / "t.csv"), options).info["features"] == ["radius", "smoker"]

    df.drop(columns="smoker").to_csv(tmp_path / "t.csv", index=False)  # the only column of few repeated values
    assert KIND.infer_options(str(tmp_path / "t.csv"), parse(KIND.name, {}), None)[0].given() == {
        "label_column": "diagnosis"
    }
    df.rename(columns={"smoker": "label"}).to_csv(tmp_path / "t.csv", index=False)  # the default name wins
    options, note = KIND.infer_options(str(tmp_path / "t.csv"), parse(KIND.name, {}), None)
    assert (options.given(), note) == ({"label_column": "label"}, "label column 'label' (by its name)")


def test_missing_label_column_names_column_and_file(tmp_path):
    p = tmp_path / "nolabel.csv"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match=r"nolabel\.csv: label column 'diagnosis' not found"):
        KIND.load(str(p), parse(KIND.name, {"label_column": "diagnosis"}))


def test_non_numeric_value_names_column_and_first_bad_row(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("a,b,y\n1,2,u\n3,4,v\n5,oops,u\n6,n/a!,v\n")
    with pytest.raises(DataError, match=r"bad\.csv: column 'b' has a non-numeric value 'oops' at row 3 \(2 bad rows"):
        KIND.load(str(p), parse(KIND.name, {"label_column": "y"}))


@pytest.mark.parametrize(
    "name,content",
    [
        ("corrupt.parquet", b"PAR1 this is not a parquet file"),
        ("corrupt.csv", b'a,b,y\n1,2,u\n3,"4,v\n'),  # an unterminated quote
    ],
)
def test_corrupt_file_is_named(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=rf"{name}: unreadable or corrupt"):
        KIND.load(str(tmp_path / name), parse(KIND.name, {"label_column": "y"}))


def test_other_bad_sources(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("a,y\n1,2\n2,\n")
    with pytest.raises(DataError, match=r"label column 'y' is empty at row 2"):
        KIND.load(str(p), parse(KIND.name, {"label_column": "y"}))
    p.write_text("a,y\n1,2\n2,0\n")
    with pytest.raises(DataError, match=r"label '2' at row 1 is not a key of options.label_map"):
        KIND.load(str(p), parse(KIND.name, {"label_column": "y", "label_map": {0: "benign", 1: "malignant"}}))
    with pytest.raises(DataError, match=r"feature columns \['c'\] not found"):
        KIND.load(str(p), parse(KIND.name, {"label_column": "y", "feature_columns": ["a", "c"]}))
    (tmp_path / "t.xlsx").write_text("x")
    with pytest.raises(DataError, match=r"t\.xlsx: unknown table format"):
        KIND.load(str(tmp_path / "t.xlsx"), parse(KIND.name, {}))
    with pytest.raises(DataError, match="no such file"):
        KIND.load(str(tmp_path / "absent.csv"), parse(KIND.name, {}))


# --- unlabelled pool ------------------------------------------------------------------------------------------


def test_unlabelled_csv_without_label_column_in_the_labelled_feature_order(tmp_path):
    labelled = tmp_path / "t.csv"
    labelled.write_text("a,y,b\n1,x,2\n3,z,4\n")
    pool_file = tmp_path / "pool.csv"
    pool_file.write_text("extra,b,a\n9,20,10\n9,40,30\n")  # columns in another order, one more
    raw = KIND.load(str(labelled), parse(KIND.name, {"label_column": "y"}))

    pool = KIND.load_unlabelled(str(pool_file), parse(KIND.name, {"label_column": "y"}), like=raw)

    assert pool.info["features"] == ["a", "b"] and pool.samples.tolist() == [[10, 20], [30, 40]]
    assert pool.labels.tolist() == ["", ""] and pool.meta["line"].tolist() == [1, 2]
    # train a: mean 2, std 1; b: mean 3, std 1
    np.testing.assert_allclose(transform(KIND.fit(raw, parse(KIND.name, {})), pool.samples), [[8, 17], [28, 37]])


def test_unlabelled_parquet_ignores_a_label_column_and_follows_feature_columns(tmp_path):
    p = tmp_path / "pool.parquet"
    pd.DataFrame({"f1": [0.5, 1.5], "f2": [1, 2], "target": [0, 1]}).to_parquet(p)

    pool = KIND.load_unlabelled(str(p), parse(KIND.name, {"label_column": "target", "feature_columns": ["f2", "f1"]}))

    assert pool.samples.tolist() == [[1, 0.5], [2, 1.5]] and pool.labels.tolist() == ["", ""]


@pytest.mark.parametrize(
    "name,content,match",
    [
        ("pool.csv", b"a,c\n1,2\n", r"pool\.csv: feature columns \['b'\] not found"),
        ("pool.csv", b"a,b\n1,2\n3,x\n", r"pool\.csv: column 'b' has a non-numeric value 'x' at row 2"),
        ("pool.parquet", b"PAR1 this is not a parquet file", r"pool\.parquet: unreadable or corrupt"),
        ("pool.csv", b"a,b\n", r"pool\.csv: no data rows"),
    ],
)
def test_bad_unlabelled_tables_are_named(tmp_path, name, content, match):
    raw = RawData(np.zeros((2, 2)), np.array(["u", "v"]), {}, {"features": ["a", "b"]})
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=match):
        KIND.load_unlabelled(str(tmp_path / name), parse(KIND.name, {"label_column": "y"}), like=raw)


def test_empty_cell_reaches_gx_with_its_column_and_line(tmp_path, bc_cfg):
    p = tmp_path / "t.csv"
    p.write_text(
        "a,b,y\n" + "".join(f"{i},{'' if i == 2 else i},{'benign' if i % 2 else 'malignant'}\n" for i in range(6))
    )
    raw = KIND.load(str(p), parse(KIND.name, {"label_column": "y"}))
    report = validate(raw_plan(KIND, raw, bc_cfg))
    assert _failed(report) == {
        ("raw_samples", "expect_column_values_to_be_in_set", "non_finite"),
        ("raw_samples", "expect_column_values_to_not_be_null", "b"),
    }
    null = next(f for f in report.failures if f["column"] == "b")
    assert null["unexpected_count"] == 1 and null["examples"][0].startswith("line 3")


# --- preprocessing --------------------------------------------------------------------------------------------


def test_standardisation_uses_hand_computed_train_statistics():
    train = RawData(
        np.array([[1.0, 0.0, 7.0], [3.0, 4.0, 7.0]]), np.array(["a", "b"]), {}, {"features": ["u", "v", "c"]}
    )
    spec = KIND.fit(train, parse(KIND.name, {"range_margin": 0.5}))
    # mean (1+3)/2 = 2, population std 1; (0+4)/2 = 2, std 2; a constant column keeps std 1 (no division by 0)
    assert spec["mean"] == [2.0, 2.0, 7.0] and spec["std"] == [1.0, 2.0, 1.0]
    # range 2 widened by half of it on each side; the constant column's width is |7|
    assert spec["feature_min"] == [0.0, -2.0, 3.5] and spec["feature_max"] == [4.0, 6.0, 10.5]
    assert spec["input_shape"] == [3] and spec["input_dtype"] == "float32"
    x = transform(spec, np.array([[5.0, 8.0, 7.0]]))
    assert x.dtype == np.float32 and x.tolist() == [[3.0, 3.0, 0.0]]
    by_name = transform(spec, pd.DataFrame({"c": [7.0], "v": [8.0], "u": [5.0], "extra": [1]}))
    assert by_name.tolist() == [[3.0, 3.0, 0.0]]
    with pytest.raises(ValueError, match=r"expected \(N, 3\)"):
        transform(spec, np.zeros((2, 4)))


def test_prepare_fits_on_train_rows_only(bc_prepared):
    raw, splits, spec, dropped = bc_prepared
    assert dropped == 0 and {n: len(s) for n, s in splits.items()} == {"train": 369, "val": 86, "test": 114}
    train_rows = set(splits["train"].meta["hash"])
    idx = [i for i, h in enumerate(content_hashes(raw.samples)) if h in train_rows]
    assert len(idx) == 369
    np.testing.assert_allclose(spec["mean"], raw.samples[idx].mean(0), rtol=1e-12)
    np.testing.assert_allclose(spec["std"], raw.samples[idx].std(0), rtol=1e-12)
    assert not np.allclose(spec["mean"], raw.samples.mean(0), rtol=1e-6)  # the full data would differ
    np.testing.assert_allclose(splits["train"].x.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(splits["train"].x.std(0), 1, atol=1e-4)


def test_range_expectations_accept_train_and_flag_values_past_the_margin():
    train = RawData(np.array([[1.0, 0.0], [3.0, 4.0]]), np.array(["a", "b"]), {}, {"features": ["u", "v"]})
    spec = KIND.fit(train, parse(KIND.name, {"range_margin": 0.5}))  # u in [0, 4], v in [-2, 6]
    x = transform(spec, np.array([[1.0, 0.0], [3.0, 4.0], [0.0, 6.0], [4.5, 1.0]]))
    exps = tabular_range_expectations(spec)
    assert [(e[1]["column"], round(e[1]["min_value"], 4), round(e[1]["max_value"], 4)) for e in exps] == [
        ("u", 0.0, 4.0),
        ("v", -2.0, 6.0),
    ]
    report = validate([("test_ranges", tabular_range_frame(spec, x), exps)])
    assert _failed(report) == {("test_ranges", "expect_column_values_to_be_between", "u")}
    assert report.failures[0]["unexpected_count"] == 1 and report.failures[0]["examples"] == ["row 3: 4.5"]


# --- the built-in dataset -------------------------------------------------------------------------------------


def test_builtin_breast_cancer_schema_and_suites(bc_cfg, bc_prepared):
    raw, splits, spec, _ = bc_prepared
    assert raw.samples.shape == (569, 30) and len(raw.info["features"]) == 30
    assert raw.info["features"][:2] == ["mean radius", "mean texture"]
    assert (raw.labels == "malignant").sum() == 212 and (raw.labels == "benign").sum() == 357
    assert bc_cfg.data.classes[-1] == "malignant"  # the positive class is last
    assert spec["features"] == raw.info["features"] and spec["input_shape"] == [30]
    tables = {n: describe_features(d.x, d.y, list(d.meta["hash"])) for n, d in splits.items()}
    ranges = [
        (f"{n}_ranges", tabular_range_frame(spec, d.x), tabular_range_expectations(spec)) for n, d in splits.items()
    ]
    report = validate(raw_plan(KIND, raw, bc_cfg) + split_plan(tables, spec, bc_cfg) + ranges)
    assert report.success, report.summary()


def test_builtin_schema_change_fails_naming_the_column(bc_cfg):
    raw = KIND.load("sklearn:breast_cancer", parse(KIND.name, {}))
    expected = list(raw.info["features"])
    raw.samples[4, 0] = np.nan
    dropped = RawData(raw.samples[:, 1:], raw.labels, raw.meta, dict(raw.info, features=expected[1:]))
    exps = KIND.expectations(dropped, parse(KIND.name, {"feature_columns": expected}))
    report = validate([("raw_samples", KIND.describe(dropped, parse(KIND.name, {})), exps)])
    assert _failed(report) == {
        ("raw_samples", "expect_table_columns_to_match_set", None),
        ("raw_samples", "expect_column_values_to_be_in_set", "n_features"),
    }
    report = validate(raw_plan(KIND, raw, bc_cfg))
    assert _failed(report) == {
        ("raw_samples", "expect_column_values_to_be_in_set", "non_finite"),
        ("raw_samples", "expect_column_values_to_not_be_null", "mean radius"),
    }
    assert "line 5" in report.summary()


# --- models: pruning, ONNX, ORT, INT8 --------------------------------------------------------------------------


def test_teacher_prunes_hidden_units_and_keeps_two_outputs():
    spec = {"kind": "tabular", "input_shape": [30], "input_dtype": "float32"}
    model = build("tabular", "teacher", spec, 2, 256, seed=0)
    pruned, report = prune_channels(model, torch.zeros(2, 30), 0.25)
    widths = lambda m: [x.out_features for x in m.modules() if isinstance(x, torch.nn.Linear)]  # noqa: E731
    assert widths(model) == [256, 128, 2] and widths(pruned) == [192, 96, 2]
    # 30*192+192 + 192*96+96 + 96*2+2 parameters after pruning
    assert report.params_after == 5952 + 18528 + 194
    assert pruned(torch.randn(5, 30)).shape == (5, 2)


def test_student_prune_export_ort_and_int8(bc_prepared, tmp_path):
    _, s, spec, _ = bc_prepared
    student = build("tabular", "student", spec, 2, 8, seed=0)
    student, _ = fit(  # one thread, fit's default: a 30-8-2 MLP only loses to thread hand-offs
        student,
        s["train"],
        s["val"],
        epochs=25,
        lr=0.01,
        batch_size=32,
        patience=25,
        seed=0,
        device=torch.device("cpu"),
    )
    pruned, report = prune_channels(student, torch.from_numpy(s["train"].x[:2]), 0.25)
    assert [m.out_features for m in pruned.modules() if isinstance(m, torch.nn.Linear)] == [6, 2]
    assert report.params_after == 30 * 6 + 6 + 6 * 2 + 2

    fp32 = export_onnx(pruned, s["test"].x, tmp_path / "pruned.onnx")
    test = s["test"]
    logits = onnx_rt.predict(fp32.path, test.x[:37])  # not the export batch size: the batch axis is dynamic
    np.testing.assert_allclose(logits, pruned(torch.from_numpy(test.x[:37])).detach().numpy(), atol=1e-4)
    assert fp32.size_bytes < 8 * 1024  # graph overhead dominates 200 weights

    def scores(path):
        z = onnx_rt.predict(path, test.x)
        p = np.exp(z[:, 1]) / np.exp(z).sum(1)
        return roc_auc_score(test.y, p), recall_score(test.y, z.argmax(1))

    auc32, sens32 = scores(fp32.path)
    assert auc32 > 0.98 and sens32 > 0.9  # a model that learned, so the INT8 comparison means something
    static = quantize_static_int8(fp32.path, tmp_path / "s.onnx", calibration_sample(s["train"].x, 256, 0))
    dynamic = quantize_dynamic_int8(fp32.path, tmp_path / "d.onnx")
    for info in (static, dynamic):
        auc8, sens8 = scores(info.path)
        assert abs(auc8 - auc32) <= 0.01 and abs(sens8 - sens32) <= 1 / 42 + 1e-9  # at most one tumour flips
