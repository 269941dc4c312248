"""The model you would get without deep learning: a scikit-learn classifier on the same model inputs, chosen on
val, exported to ONNX with skl2onnx so that ONNX Runtime measures it like every other candidate.

- image, audio and tabular inputs are flattened to one row of features: logistic regression, an RBF SVM and
  (tabular by default: it is slow on pixels and rarely wins there) gradient boosting are fitted on train, the
  best on val is kept;
- text inputs (token ids) become TF-IDF over the ids (padding aside), with logistic regression.

The ONNX graph takes the pipeline's model input unchanged (`input`, the shape and dtype every candidate takes) and
returns log-probabilities as `logits`, so softmax, argmax and every metric read it as they read a network's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from components.formats.base import INPUT_NAME, OUTPUT_NAME, Artifact, artifact_info, atomic_path
from components.formats.onnx_rt import check_onnx

FAMILIES = ("logreg", "svm", "gbm")
DEFAULT_FAMILIES = {"tabular": ["logreg", "svm", "gbm"], "image": ["logreg", "svm"], "audio": ["logreg", "svm"]}
TEXT_FAMILY = "tfidf_logreg"
OPSET = {"": 17, "ai.onnx.ml": 3}
MIN_PROBABILITY = 1e-7  # log of a probability clipped here: -16.1, so no -inf reaches a metric


@dataclass(frozen=True)
class Fitted:
    family: str  # the one kept
    model: object  # a fitted scikit-learn estimator over features()
    val_scores: dict[str, float]  # val metric of every family tried
    seconds: float  # fitting all of them


def features(spec: dict, x: np.ndarray) -> np.ndarray:
    """The rows a classical model reads: flattened inputs, or for text the count of each token id (padding 0)."""
    if spec["kind"] == "text":
        size = int(spec["vocab_size"])
        counts = np.zeros((len(x), size), np.float32)
        rows = np.repeat(np.arange(len(x)), x.shape[1])
        np.add.at(counts, (rows, x.reshape(-1)), 1.0)
        counts[:, int(spec["pad_id"])] = 0.0
        return counts
    return np.asarray(x, np.float32).reshape(len(x), -1)


def families_for(kind: str, families: list[str] | None) -> list[str]:
    """The families tried on a data kind: `families` as configured (None: the kind's default); text has its one."""
    if families is not None and not families:
        return []
    if kind == "text":
        return [TEXT_FAMILY]
    return list(families) if families is not None else DEFAULT_FAMILIES[kind]


def estimators(kind: str, families: list[str], seed: int) -> dict[str, Callable[[], object]]:
    """Builders of the estimators of `families` (see `families_for`), by name."""
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.feature_extraction.text import TfidfTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    table = {
        TEXT_FAMILY: lambda: make_pipeline(TfidfTransformer(), LogisticRegression(C=10.0, max_iter=2000)),
        "logreg": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        "svm": lambda: SVC(kernel="rbf", probability=True, random_state=seed),
        "gbm": lambda: GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=seed),
    }
    return {f: table[f] for f in families}


def fit(
    spec: dict,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    score: Callable[[np.ndarray, np.ndarray], float],
    families: list[str],
    seed: int = 0,
    log: Callable[[str], None] = lambda _: None,
) -> Fitted:
    """Each family fitted on train and scored on val by `score(probabilities, labels)`; the best is kept (the first
    listed on a tie)."""
    start = time.perf_counter()
    xt, xv = features(spec, train[0]), features(spec, val[0])
    best, scores = None, {}
    for family, make in estimators(spec["kind"], families, seed).items():
        t = time.perf_counter()
        model = make().fit(xt, train[1])
        scores[family] = score(_probabilities(model, xv, val[1]), val[1])
        log(f"[classic] {family}: val {scores[family]:.4f} ({time.perf_counter() - t:.1f} s)")
        if best is None or scores[family] > scores[best[0]]:
            best = (family, model)
    return Fitted(best[0], best[1], scores, time.perf_counter() - start)


def _probabilities(model, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Probabilities over every class index, also those train lacked (a class absent from train scores 0)."""
    p = model.predict_proba(x)
    out = np.zeros((len(x), max(int(y.max()) + 1, int(model.classes_.max()) + 1)), np.float32)
    out[:, model.classes_] = p
    return out


def export(fitted: Fitted, spec: dict, num_classes: int, path: str | Path) -> Artifact:
    """The fitted model as one ONNX graph from the pipeline's model input to log-probabilities `logits`."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    classes = list(fitted.model.classes_)
    if classes != list(range(num_classes)):
        raise ValueError(f"classic model saw classes {classes} in train; every one of {num_classes} is needed")
    width = features(spec, _example(spec)).shape[1]
    zipmap = {type(step): {"zipmap": False} for step in _steps(fitted.model) if hasattr(step, "predict_proba")}
    model = convert_sklearn(
        fitted.model, initial_types=[("features", FloatTensorType([None, width]))], options=zipmap, target_opset=OPSET
    )
    graph = model.graph
    prob = next(o.name for o in graph.output if o.name != "label")
    nodes, inits = _featurizer(spec, "features")
    nodes_after = [
        helper.make_node("Clip", [prob, "min_probability"], ["clipped"]),
        helper.make_node("Log", ["clipped"], [OUTPUT_NAME]),
    ]
    inits.append(numpy_helper.from_array(np.array(MIN_PROBABILITY, np.float32), "min_probability"))
    elem = TensorProto.INT64 if spec.get("input_dtype") == "int64" else TensorProto.FLOAT
    new = helper.make_graph(
        nodes + list(graph.node) + nodes_after,
        "classic_" + fitted.family,
        [helper.make_tensor_value_info(INPUT_NAME, elem, ["batch", *spec["input_shape"]])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", num_classes])],
        list(graph.initializer) + inits,
    )
    ml = max([o.version for o in model.opset_import if o.domain == "ai.onnx.ml"], default=OPSET["ai.onnx.ml"])
    opsets = [helper.make_opsetid("", OPSET[""]), helper.make_opsetid("ai.onnx.ml", ml)]
    out = helper.make_model(new, opset_imports=opsets, producer_name="edgekd-classic")
    out.ir_version = model.ir_version
    path = Path(path)
    with atomic_path(path) as tmp:
        onnx.save(out, str(tmp))
        check_onnx(tmp)
    return artifact_info(path)


def _steps(model) -> list:
    return [s for _, s in model.steps] if hasattr(model, "steps") else [model]


def _example(spec: dict) -> np.ndarray:
    dtype = np.int64 if spec.get("input_dtype") == "int64" else np.float32
    return np.zeros((1, *spec["input_shape"]), dtype)


def _featurizer(spec: dict, out: str) -> tuple[list, list]:
    """ONNX nodes from the model input to `out`, the rows `features` computes."""
    if spec["kind"] != "text":
        return [helper.make_node("Flatten", [INPUT_NAME], [out], axis=1)], []
    size = int(spec["vocab_size"])
    keep = np.ones(size, np.float32)
    keep[int(spec["pad_id"])] = 0.0
    inits = [
        numpy_helper.from_array(np.array(size, np.int64), "vocab_size"),
        numpy_helper.from_array(np.array([0.0, 1.0], np.float32), "one_hot_values"),
        numpy_helper.from_array(np.array([1], np.int64), "token_axis"),
        numpy_helper.from_array(keep, "not_padding"),
    ]
    nodes = [
        helper.make_node("OneHot", [INPUT_NAME, "vocab_size", "one_hot_values"], ["one_hot"], axis=-1),
        helper.make_node("ReduceSum", ["one_hot", "token_axis"], ["counts"], keepdims=0),
        helper.make_node("Mul", ["counts", "not_padding"], [out]),
    ]
    return nodes, inits
