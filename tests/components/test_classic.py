"""The classical baseline: fitted on train, chosen on val, and its ONNX graph (the pipeline's input in,
log-probabilities out) agrees with scikit-learn through ONNX Runtime."""

import numpy as np
import pytest

from components import classic
from components.formats import onnx_rt
from components.formats.base import softmax

pytestmark = pytest.mark.unit


def _accuracy(p, y):
    return float((p.argmax(1) == y).mean())


def test_image_rows_the_best_family_on_val_is_kept_and_its_onnx_agrees(digits_splits, digits_spec, tmp_path):
    tr, va, te = digits_splits["train"], digits_splits["val"], digits_splits["test"]
    seen = []
    fitted = classic.fit(digits_spec, (tr.x, tr.y), (va.x, va.y), _accuracy, ["logreg", "svm"], 0, seen.append)
    assert set(fitted.val_scores) == {"logreg", "svm"} and len(seen) == 2
    assert fitted.val_scores[fitted.family] == max(fitted.val_scores.values())
    art = classic.export(fitted, digits_spec, 10, tmp_path / "classic.onnx")
    logits = onnx_rt.predict(art.path, te.x)  # the same (N, 1, 8, 8) input every network candidate takes
    expected = fitted.model.predict_proba(classic.features(digits_spec, te.x))
    np.testing.assert_allclose(softmax(logits), expected, atol=1e-4)
    assert (logits.argmax(1) == expected.argmax(1)).all()


def test_tabular_rows_with_gradient_boosting(tmp_path):
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    spec = {"kind": "tabular", "input_shape": [30], "input_dtype": "float32"}
    fitted = classic.fit(spec, (x[:400], y[:400]), (x[400:480], y[400:480]), _accuracy, ["gbm"], 0)
    art = classic.export(fitted, spec, 2, tmp_path / "gbm.onnx")
    np.testing.assert_allclose(
        softmax(onnx_rt.predict(art.path, x[480:])), fitted.model.predict_proba(x[480:]), atol=1e-4
    )


def test_text_token_ids_become_tfidf_inside_the_graph(tmp_path):
    rng = np.random.default_rng(0)
    spec = {"kind": "text", "vocab_size": 30, "pad_id": 0, "input_shape": [12], "input_dtype": "int64"}
    y = rng.integers(0, 2, 300)
    ids = rng.integers(2, 30, (300, 12))
    ids[y == 1, :3] = 5  # class 1 says token 5 three times
    ids[:, 8:] = 0  # padding, which counts for nothing
    assert classic.families_for("text", None) == [classic.TEXT_FAMILY] and classic.families_for("text", []) == []
    fitted = classic.fit(spec, (ids[:200], y[:200]), (ids[200:250], y[200:250]), _accuracy, [classic.TEXT_FAMILY])
    assert fitted.val_scores[classic.TEXT_FAMILY] > 0.9
    counts = classic.features(spec, ids[250:])
    assert counts[:, 0].sum() == 0 and counts.sum(1).tolist() == [8.0] * 50
    art = classic.export(fitted, spec, 2, tmp_path / "text.onnx")
    np.testing.assert_allclose(
        softmax(onnx_rt.predict(art.path, ids[250:])), fitted.model.predict_proba(counts), atol=1e-4
    )


def test_a_class_missing_from_train_is_refused_at_export(digits_splits, digits_spec, tmp_path):
    tr, va = digits_splits["train"], digits_splits["val"]
    keep = tr.y != 9
    fitted = classic.fit(digits_spec, (tr.x[keep], tr.y[keep]), (va.x, va.y), _accuracy, ["logreg"])
    with pytest.raises(ValueError, match="classes .* in train; every one of 10 is needed"):
        classic.export(fitted, digits_spec, 10, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()
