"""Great Expectations 1.x suites over the per-sample descriptors a data kind produces.

A failed expectation never passes silently: `ValidationReport.raise_for_failures` raises
`DataValidationError` naming each failed expectation with its counts and examples.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from components.data.base import Expectation

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


class DataValidationError(RuntimeError):
    def __init__(self, report: ValidationReport):
        self.report = report
        super().__init__(report.summary())


@dataclass
class ValidationReport:
    success: bool
    failures: list[dict] = field(default_factory=list)
    results: list[dict] = field(default_factory=list)
    docs_index: str | None = None

    def summary(self) -> str:
        if self.success:
            return f"all {len(self.results)} expectations passed"
        lines = [f"{len(self.failures)} of {len(self.results)} expectations failed:"]
        for f in self.failures:
            lines.append(
                f"  - [{f['table']}] {f['expectation']}({f['column']}): {f['unexpected_count']} of "
                f"{f['element_count']} rows unexpected, examples {f['examples']}"
            )
        return "\n".join(lines)

    def raise_for_failures(self) -> None:
        if not self.success:
            raise DataValidationError(self)

    def as_json(self) -> dict:
        return {"success": self.success, "failures": self.failures, "results": self.results}


def class_counts(labels: np.ndarray, num_classes: int) -> pd.DataFrame:
    """One row per expected class, zero-count classes included, and any unexpected label too."""
    found = pd.Series(labels).value_counts()
    classes = sorted(set(range(num_classes)) | set(int(v) for v in found.index))
    counts = np.array([int(found.get(c, 0)) for c in classes])
    return pd.DataFrame({"label": classes, "count": counts, "share_of_largest": counts / max(counts.max(), 1)})


def describe_features(x: np.ndarray, y: np.ndarray, hashes: list[str]) -> pd.DataFrame:
    """Per-sample descriptors of model inputs (any kind): shape, dtype, range, non-finite count, label, hash."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    finite = np.where(np.isfinite(flat), flat, np.nan)
    with np.errstate(all="ignore"):
        lo, hi = np.nanmin(finite, axis=1), np.nanmax(finite, axis=1)
    return pd.DataFrame(
        {
            "shape": ["x".join(map(str, s.shape)) for s in x],
            "dtype": [str(x.dtype)] * len(x),
            "min_value": lo,
            "max_value": hi,
            "non_finite": (~np.isfinite(flat)).sum(axis=1),
            "label": y,
            "content_hash": hashes,
        }
    )


def describe_pool(x: np.ndarray, hashes) -> pd.DataFrame:
    """`describe_features` of an unlabelled pool's model inputs: the same columns but `label`."""
    return describe_features(x, np.zeros(len(x), dtype=np.int64), list(hashes)).drop(columns="label")


def _where(df: pd.DataFrame, raw) -> pd.DataFrame:
    for col in ("file", "line"):  # failure examples then name the file or line instead of a row number
        if col in raw.meta and "where" not in df:
            df["where"] = [f"{col} {v}" if col == "line" else str(v) for v in raw.meta[col]]
    return df


def raw_plan(kind, raw, cfg, pool=None) -> list[tuple[str, pd.DataFrame, list[Expectation]]]:
    """Checks of the raw dataset before it is split: the kind's own, plus the configured label set; with `pool`
    (the unlabelled RawData), also `pool_raw_table`."""
    exps = kind.expectations(raw, cfg.data.options)
    exps.append(("ExpectColumnValuesToBeInSet", {"column": "label", "value_set": list(cfg.data.classes)}))
    df = _where(kind.describe(raw, cfg.data.options), raw)
    labels = pd.Series(np.asarray(raw.labels, dtype=str))
    counts = pd.DataFrame(
        {
            "samples": [int((labels == c).sum()) for c in cfg.data.classes],
            "where": [f"class {c!r}" for c in cfg.data.classes],
        }
    )
    plan = [
        ("raw_samples", df, exps),
        (
            "raw_samples_per_class",
            counts,  # an empty class: a missing folder, a label never spelled as given
            [("ExpectColumnValuesToBeBetween", {"column": "samples", "min_value": 1})],
        ),
    ]
    return plan + ([pool_raw_table(kind, raw, pool, cfg)] if pool is not None else [])


def pool_raw_table(kind, raw, pool, cfg) -> tuple[str, pd.DataFrame, list[Expectation]]:
    """Table "raw_unlabelled": the kind's descriptors of the pool, checked with the expectations of the labelled
    data `raw` (so the pool must have its image shape and value range, sample rate, feature columns...). No label
    checks; checks of columns a pool's descriptors lack (audio's test-rule field: a pool is never split) are the
    labelled data's alone."""
    df = _where(kind.describe(pool, cfg.data.options), pool)
    exps = [e for e in kind.expectations(raw, cfg.data.options) if "column" not in e[1] or e[1]["column"] in df]
    return "raw_unlabelled", df, exps


def _input_expectations(spec: dict) -> list[Expectation]:
    """Model-input schema of prepared data: shape, dtype, finite values, the spec's value range."""
    exps: list[Expectation] = [
        ("ExpectColumnValuesToBeInSet", {"column": "shape", "value_set": ["x".join(map(str, spec["input_shape"]))]}),
        ("ExpectColumnValuesToBeInSet", {"column": "dtype", "value_set": [spec["input_dtype"]]}),
        ("ExpectColumnValuesToBeInSet", {"column": "non_finite", "value_set": [0]}),
    ]
    if spec.get("value_range"):
        lo, hi = spec["value_range"]
        exps += [
            ("ExpectColumnValuesToBeBetween", {"column": c, "min_value": lo, "max_value": hi})
            for c in ("min_value", "max_value")
        ]
    return exps


def split_plan(
    tables: dict[str, pd.DataFrame], spec: dict, cfg, leakage_reference: str = "train", pool: pd.DataFrame | None = None
):
    """Checks of the prepared splits: model-input schema, class counts and balance, and no sample of another
    split shared with `leakage_reference` (by content hash of the raw sample); with `pool` (`describe_pool` of the
    prepared unlabelled pool), also `pool_split_table`."""
    v = cfg.data.validation
    plan = []
    for name, df in tables.items():
        exps = _input_expectations(spec)
        exps.insert(
            3, ("ExpectColumnValuesToBeInSet", {"column": "label", "value_set": list(range(cfg.data.num_classes))})
        )
        if name != leakage_reference:
            ref = sorted(set(tables[leakage_reference]["content_hash"]))
            exps.append(("ExpectColumnValuesToNotBeInSet", {"column": "content_hash", "value_set": ref}))
        plan.append((f"{name}_samples", df, exps))
        plan.append(
            (
                f"{name}_class_counts",
                class_counts(df["label"].to_numpy(), cfg.data.num_classes),
                [
                    ("ExpectColumnValuesToBeBetween", {"column": "count", "min_value": v.min_rows_per_class}),
                    (
                        "ExpectColumnValuesToBeBetween",
                        {"column": "share_of_largest", "min_value": 1.0 / v.max_class_imbalance, "max_value": 1.0},
                    ),
                ],
            )
        )
    return plan + ([pool_split_table(pool, tables, spec, leakage_reference)] if pool is not None else [])


def pool_split_table(
    pool: pd.DataFrame, tables: dict[str, pd.DataFrame], spec: dict, leakage_reference: str = "train"
) -> tuple[str, pd.DataFrame, list[Expectation]]:
    """Table "unlabelled_samples": the prepared pool's model-input schema, and none of its samples equal to one of
    the evaluation splits (every split but `leakage_reference`): the pool is trained on, so such a sample would
    leak that split into training."""
    held_out = sorted({h for n, df in tables.items() if n != leakage_reference for h in df["content_hash"]})
    return (
        "unlabelled_samples",
        pool,
        _input_expectations(spec)
        + [("ExpectColumnValuesToNotBeInSet", {"column": "content_hash", "value_set": held_out})],
    )


def validate(
    plan: list[tuple[str, pd.DataFrame, list[Expectation]]], docs_dir: str | Path | None = None
) -> ValidationReport:
    """Run each table of `plan` through a GX suite of its expectations; `docs_dir` receives GX Data Docs."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    if docs_dir is not None:
        ctx.add_data_docs_site(
            site_name="local",
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    asset = ctx.data_sources.add_pandas("pipeline").add_dataframe_asset("tables")
    batch_def = asset.add_batch_definition_whole_dataframe("whole")

    report = ValidationReport(success=True)
    for table, df, specs in plan:
        exps = [getattr(gx.expectations, cls)(**kwargs) for cls, kwargs in specs]
        suite = ctx.suites.add(gx.ExpectationSuite(name=table, expectations=exps))
        vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=table, data=batch_def, suite=suite))
        actions = [gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=["local"])] if docs_dir else []
        cp = ctx.checkpoints.add(
            gx.Checkpoint(
                name=table, validation_definitions=[vd], actions=actions, result_format={"result_format": "COMPLETE"}
            )
        )
        run = cp.run(batch_parameters={"dataframe": df})
        for res in next(iter(run.run_results.values())).results:
            cfg, r = res.expectation_config, res.result or {}
            entry = {
                "table": table,
                "expectation": cfg.type,
                "column": cfg.kwargs.get("column"),
                "success": bool(res.success),
                "element_count": int(r.get("element_count", len(df))),
                "unexpected_count": int(r.get("unexpected_count", 0) or 0),
                "examples": _examples(df, r),
            }
            report.results.append(entry)
            if not res.success:
                report.success = False
                report.failures.append(entry)
    if docs_dir is not None:
        report.docs_index = str(Path(docs_dir) / "index.html")
    return report


def _examples(df: pd.DataFrame, result: dict, limit: int = 5) -> list[str]:
    """Failing rows as 'file-or-row: value' so the message points at the exact samples."""
    idx = (result.get("partial_unexpected_index_list") or result.get("unexpected_index_list") or [])[:limit]
    vals = (result.get("partial_unexpected_list") or [])[:limit]
    if idx and len(idx) == len(vals):
        where = df["where"] if "where" in df else None  # a file or line, when the kind knows it
        return [f"{where.loc[i] if where is not None else f'row {i}'}: {v}" for i, v in zip(idx, vals)]
    return [str(v) for v in vals]
