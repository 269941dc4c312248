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

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


class DataValidationError(RuntimeError):
    def __init__(self, report: "ValidationReport"):
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

    def to_dict(self) -> dict:
        return {"success": self.success, "failures": self.failures, "results": self.results}


def class_counts(labels: np.ndarray, num_classes: int) -> pd.DataFrame:
    """One row per expected class, zero-count classes included, and any unexpected label too."""
    found = pd.Series(labels).value_counts()
    classes = sorted(set(range(num_classes)) | set(int(v) for v in found.index))
    counts = np.array([int(found.get(c, 0)) for c in classes])
    return pd.DataFrame({"label": classes, "count": counts, "share_of_largest": counts / max(counts.max(), 1)})


def _sample_expectations(gx, input_shape: tuple[int, ...], dtype: str, value_range: tuple[float, float], num_classes: int):
    E = gx.expectations
    lo, hi = value_range
    return [
        E.ExpectColumnValuesToBeInSet(column="shape", value_set=["x".join(map(str, input_shape))]),
        E.ExpectColumnValuesToBeInSet(column="dtype", value_set=[dtype]),
        E.ExpectColumnValuesToBeInSet(column="non_finite", value_set=[0]),
        E.ExpectColumnValuesToBeBetween(column="min_value", min_value=lo, max_value=hi),
        E.ExpectColumnValuesToBeBetween(column="max_value", min_value=lo, max_value=hi),
        E.ExpectColumnValuesToBeInSet(column="label", value_set=list(range(num_classes))),
    ]


def _count_expectations(gx, min_rows: int, max_imbalance: float):
    E = gx.expectations
    return [
        E.ExpectColumnValuesToBeBetween(column="count", min_value=min_rows),
        E.ExpectColumnValuesToBeBetween(column="share_of_largest", min_value=1.0 / max_imbalance, max_value=1.0),
    ]


def validate(
    samples: dict[str, pd.DataFrame],
    *,
    input_shape: tuple[int, ...],
    dtype: str = "float32",
    value_range: tuple[float, float],
    num_classes: int,
    min_rows_per_class: int | None = None,
    max_class_imbalance: float | None = None,
    leakage_reference: str | None = None,
    docs_dir: str | Path | None = None,
) -> ValidationReport:
    """Run the suites over the per-sample tables in `samples` (one per split).

    With `min_rows_per_class`/`max_class_imbalance`, each table's class counts are checked too. With
    `leakage_reference` (a key of `samples`, e.g. "train"), every other table must share no content hash with it.
    `docs_dir` receives the GX Data Docs site.
    """
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

    plan: list[tuple[str, pd.DataFrame, list]] = []
    for name, df in samples.items():
        exps = _sample_expectations(gx, input_shape, dtype, value_range, num_classes)
        if leakage_reference is not None and name != leakage_reference:
            ref = sorted(set(samples[leakage_reference]["content_hash"]))
            exps.append(gx.expectations.ExpectColumnValuesToNotBeInSet(column="content_hash", value_set=ref))
        plan.append((f"{name}_samples", df, exps))
        if min_rows_per_class is not None:
            plan.append(
                (f"{name}_class_counts", class_counts(df["label"].to_numpy(), num_classes),
                 _count_expectations(gx, min_rows_per_class, max_class_imbalance or float("inf")))
            )

    report = ValidationReport(success=True)
    for table, df, exps in plan:
        suite = ctx.suites.add(gx.ExpectationSuite(name=table, expectations=exps))
        vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=table, data=batch_def, suite=suite))
        actions = [gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=["local"])] if docs_dir else []
        cp = ctx.checkpoints.add(
            gx.Checkpoint(name=table, validation_definitions=[vd], actions=actions,
                          result_format={"result_format": "COMPLETE"})
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
    """Failing rows as 'row i: value' so the message points at the exact samples."""
    idx = (result.get("partial_unexpected_index_list") or result.get("unexpected_index_list") or [])[:limit]
    vals = (result.get("partial_unexpected_list") or [])[:limit]
    if idx and len(idx) == len(vals):
        return [f"row {i}: {v}" for i, v in zip(idx, vals)]
    return [str(v) for v in vals]
