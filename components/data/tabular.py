"""Tabular kind: rows of numeric features with one label column, from a CSV or Parquet file, or built-in
`sklearn:breast_cancer` (569 rows, 30 features; labels "malignant"/"benign"). Options:
components.data.options.TabularOptions.

meta["line"] is the 1-based data row number (the header is not counted), also for Parquet files.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from components.data.base import DataError, Expectation, RawData, infer_label_column, unlabelled
from components.data.options import TabularOptions

CSV_SUFFIXES = {".csv", ".tsv", ".txt"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
BUILTIN = "sklearn:breast_cancer"


class TabularKind:
    name = "tabular"
    Options = TabularOptions
    augment = None  # no label-preserving perturbation of clinical measurements is known to be safe

    def load(self, source: str, options: TabularOptions) -> RawData:
        if source == BUILTIN:
            return _breast_cancer()
        if source.startswith("sklearn:"):
            raise DataError(f"tabular source {source}: the only built-in tabular dataset is {BUILTIN!r}")
        path = Path(source)
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        return _from_frame(_read_table(path, options), path, options)

    def infer_options(self, source: str, options: TabularOptions, classes: list[str] | None
                      ) -> tuple[TabularOptions, str]:
        """Without `label_column`: the column named "label", else the one column that can hold the labels
        (`infer_label_column`)."""
        if "label_column" in options.model_fields_set:
            return options, ""
        path = Path(source)
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        df = _read_table(path, options)
        if "label" in df.columns:
            return _with(options, label_column="label"), "label column 'label' (by its name)"
        mapping = {_label_key(k): str(v) for k, v in options.label_map.items()}
        columns = {c: [mapping.get(k, k) for k in map(_label_key, df[c].dropna())] for c in df.columns}
        label, note = infer_label_column(columns, classes, path)
        return _with(options, label_column=label), note

    def load_unlabelled(self, source: str, options: TabularOptions, like: RawData | None = None) -> RawData:
        """A CSV/Parquet file with the dataset's feature columns (options.feature_columns, else those of `like`,
        else every column but the label column), in any order; the label column, if present, is ignored."""
        path = Path(source)
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        df = _read_table(path, options)
        label_col = options.label_column
        features = options.feature_columns or (like.info["features"] if like is not None else None)
        features = _feature_columns(df, path, label_col, features)
        return unlabelled(_matrix(df, features, path), {"line": np.arange(1, len(df) + 1)},
                          {"features": features, "label_column": label_col, "source": path.name}, path)

    def pack(self, samples) -> dict[str, np.ndarray]:
        return {"x": np.asarray(samples, dtype=np.float64)}

    def unpack(self, arrays: dict[str, np.ndarray]):
        return arrays["x"]

    def describe(self, raw: RawData, options: TabularOptions) -> pd.DataFrame:
        x = np.asarray(raw.samples, dtype=np.float64)
        df = pd.DataFrame(x, columns=list(raw.info["features"]))
        df["n_features"] = x.shape[1]
        df["non_finite"] = (~np.isfinite(x)).sum(axis=1)
        df["label"] = raw.labels
        return df

    def expectations(self, raw: RawData, options: TabularOptions) -> list[Expectation]:
        expected = list(options.feature_columns or raw.info["features"])
        present = [f for f in expected if f in raw.info["features"]]
        return [
            # "at least" these columns; `n_features` catches extra ones (raw_plan may add a `where` column)
            ("ExpectTableColumnsToMatchSet", {"column_set": [*expected, "n_features", "non_finite", "label"],
                                              "exact_match": False}),
            ("ExpectColumnValuesToBeInSet", {"column": "n_features", "value_set": [len(expected)]}),
            ("ExpectColumnValuesToBeInSet", {"column": "non_finite", "value_set": [0]}),
            # one per feature, so a missing value is reported with its column and line
            *[("ExpectColumnValuesToNotBeNull", {"column": f}) for f in present],
        ]

    def fit(self, train: RawData, options: TabularOptions) -> dict:
        x = np.asarray(train.samples, dtype=np.float64)
        margin = options.range_margin
        mean, std = x.mean(axis=0), x.std(axis=0)
        std = np.where(std > 1e-12, std, 1.0)  # a constant feature maps to 0 instead of dividing by zero
        lo, hi = x.min(axis=0), x.max(axis=0)
        width = np.where(hi > lo, hi - lo, np.maximum(np.abs(lo), 1.0))
        return {"kind": "tabular", "features": list(train.info["features"]), "mean": mean.tolist(),
                "std": std.tolist(), "feature_min": (lo - margin * width).tolist(),
                "feature_max": (hi + margin * width).tolist(), "range_margin": margin,
                "input_shape": [x.shape[1]], "input_dtype": "float32"}

    def split_checks(self, spec: dict, name: str, data) -> list:
        """Prepared values of each split must lie within the train range (widened by range_margin)."""
        return [(f"{name}_ranges", tabular_range_frame(spec, data.x), tabular_range_expectations(spec))]


# --- range checks of prepared splits (wired into components.validation.split_plan) ------------------------


def tabular_range_frame(spec: dict, x: np.ndarray) -> pd.DataFrame:
    """Model inputs (N, n_features) of a prepared split back in raw units, one column per feature: the table
    `tabular_range_expectations` checks."""
    raw = np.asarray(x, dtype=np.float64) * np.asarray(spec["std"]) + np.asarray(spec["mean"])
    return pd.DataFrame(raw, columns=list(spec["features"]))


def tabular_range_expectations(spec: dict) -> list[Expectation]:
    """Each feature within the train split's [min, max] widened by `range_margin` (spec["feature_min"/"max"], raw
    units), over a frame with one column per feature in raw units (`tabular_range_frame`). The bounds get a
    float32 round-off allowance, since the prepared data stores standardised float32."""
    out = []
    for f, lo, hi, m, s in zip(spec["features"], spec["feature_min"], spec["feature_max"], spec["mean"],
                               spec["std"]):
        tol = 1e-6 * (max(abs(lo - m), abs(hi - m)) + s)
        out.append(("ExpectColumnValuesToBeBetween", {"column": f, "min_value": lo - tol, "max_value": hi + tol}))
    return out


# --- reading ---------------------------------------------------------------------------------------------------


def _breast_cancer() -> RawData:
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    labels = np.asarray(d.target_names)[d.target].astype(str)  # 0 -> malignant, 1 -> benign
    return RawData(d.data.astype(np.float64), labels, {"line": np.arange(1, len(labels) + 1)},
                   {"features": [str(f) for f in d.feature_names], "label_column": "target", "source": BUILTIN})


def _read_table(path: Path, options: TabularOptions) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix in PARQUET_SUFFIXES:
            df = pd.read_parquet(path)
        elif suffix in CSV_SUFFIXES:
            # Everything as text: non-numeric cells are then reported by column and row, not guessed at.
            df = pd.read_csv(path, sep=options.delimiter, dtype=str, skipinitialspace=True)
        else:
            raise DataError(f"{path}: unknown table format {suffix!r}; expected "
                            f"{sorted(CSV_SUFFIXES | PARQUET_SUFFIXES)}")
    except DataError:
        raise
    except (OSError, ValueError, pd.errors.ParserError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"{path}: unreadable or corrupt {suffix.lstrip('.')} file ({type(e).__name__}: "
                        f"{str(e).strip()[:200]})") from e
    if df.empty:
        raise DataError(f"{path}: no data rows")
    df.columns = [str(c) for c in df.columns]
    return df.reset_index(drop=True)


def _from_frame(df: pd.DataFrame, path: Path, options: TabularOptions) -> RawData:
    label_col = options.label_column
    if label_col not in df.columns:
        raise DataError(f"{path}: label column {label_col!r} not found (columns: {list(df.columns)[:12]}); "
                        "set options.label_column")
    features = _feature_columns(df, path, label_col, options.feature_columns)
    x = _matrix(df, features, path)
    labels = _labels(df[label_col], label_col, path, options.label_map)
    return RawData(x, labels, {"line": np.arange(1, len(df) + 1)},
                   {"features": features, "label_column": label_col, "source": path.name})


def _feature_columns(df: pd.DataFrame, path: Path, label_col: str, features: list | None) -> list[str]:
    """`features` (default: every column but the label column), each checked to be a column of `df`."""
    features = [str(c) for c in (features or [c for c in df.columns if c != label_col])]
    missing = [c for c in features if c not in df.columns]
    if missing:
        raise DataError(f"{path}: feature columns {missing} not found (columns: {list(df.columns)[:12]})")
    if label_col in features:
        raise DataError(f"{path}: the label column {label_col!r} is also listed in options.feature_columns")
    if not features:
        raise DataError(f"{path}: no feature columns besides the label column {label_col!r}")
    return features


def _matrix(df: pd.DataFrame, features: list[str], path: Path) -> np.ndarray:
    return np.column_stack([_numeric(df[c], c, path) for c in features])


def _numeric(col: pd.Series, name: str, path: Path) -> np.ndarray:
    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
        return col.to_numpy(dtype=np.float64, na_value=np.nan)
    text = col.astype("string").str.strip()
    values = pd.to_numeric(text, errors="coerce")
    bad = values.isna() & text.notna() & (text != "")  # empty cells are missing values, which GX reports
    if bad.any():
        rows = np.flatnonzero(bad.to_numpy())
        raise DataError(f"{path}: column {name!r} has a non-numeric value {text.iloc[rows[0]]!r} at row "
                        f"{rows[0] + 1} ({len(rows)} bad row{'s' if len(rows) > 1 else ''} in this column)")
    return values.to_numpy(dtype=np.float64, na_value=np.nan)


def _label_key(v) -> str:
    """1, 1.0 and "1" spell one label; anything else is kept as written (stripped)."""
    s = str(v).strip()
    try:
        f = float(s)
    except ValueError:
        return s
    return str(int(f)) if f.is_integer() else s


def _labels(col: pd.Series, name: str, path: Path, label_map: dict | None) -> np.ndarray:
    empty = col.isna().to_numpy() | (col.astype("string").str.strip() == "").fillna(True).to_numpy()
    if empty.any():
        row = int(np.flatnonzero(empty)[0]) + 1
        raise DataError(f"{path}: label column {name!r} is empty at row {row} ({int(empty.sum())} rows without label)")
    numeric = pd.api.types.is_numeric_dtype(col)
    keys = [_label_key(v) if (numeric or label_map) else str(v).strip() for v in col]
    if not label_map:
        return np.array(keys, dtype=str)
    mapping = {_label_key(k): str(v) for k, v in label_map.items()}
    unknown = [i for i, k in enumerate(keys) if k not in mapping]
    if unknown:
        raise DataError(f"{path}: label {keys[unknown[0]]!r} at row {unknown[0] + 1} is not a key of "
                        f"options.label_map {sorted(mapping)}")
    return np.array([mapping[k] for k in keys], dtype=str)


def _with(options, **values):
    """`options` with `values` set explicitly (so that `data add` records them)."""
    return type(options).model_validate(options.given() | values)
