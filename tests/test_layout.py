"""The shape of the code, checked: no module in flows/ or components/ over 400 lines and no function over 60, so
that a newcomer finds one concern per file; and no function in them hands a result record on as a plain dict."""

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for pkg in ("flows", "components") for p in (REPO / pkg).rglob("*.py"))
MAX_MODULE, MAX_FUNCTION = 400, 60


def _functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_no_module_over_400_lines_and_no_function_over_60():
    long_modules = [
        f"{p.relative_to(REPO)}: {n}" for p in SOURCES if (n := len(p.read_text().splitlines())) > MAX_MODULE
    ]
    long_functions = [
        f"{p.relative_to(REPO)}:{f.name}: {f.end_lineno - f.lineno + 1}"
        for p in SOURCES
        for f in _functions(p)
        if f.end_lineno - f.lineno + 1 > MAX_FUNCTION
    ]
    assert (long_modules, long_functions) == ([], [])


# The records the pipeline hands on (a candidate, a measurement, an artifact, a decision, an outcome, a search point)
# are typed. A bare `dict` (or a list or mapping of them) is returned only as what it is: JSON made at the edge
# (`as_json`), a mapping of names to values (metrics or tags to log, keyword arguments, environment variables), a
# configuration mapping before it is typed, or the preprocessing spec, which travels with the model as JSON.
BARE_DICT_ALLOWED = {
    "as_json",
    "given",
    "scalars",
    "numbers",
    "tags",
    "flatten",
    "metric_tags",
    "flat_metrics",
    "summary_metrics",
    "read_params",
    "parse_overrides",
    "_merge",
    "options",
    "overrides",
    "fit_kwargs",
    "objective_kwargs",
    "_child_env",
    "describe",
    "fit",
    "load_spec",
    "load_summary",
    "front_rows",
    "_mlflow_cmd",
    "_prefect_cmd",  # a server's command line and environment
    "_options",
    "_section",
    "_pool",
    "stages",  # YAML as read or to be written: --option pairs, a dataset
    # section, prefect.yaml's deployments, dvc.lock's entries
    "_read",
    "_meta",
    "prepare_splits",
    "fetch_verified",  # a raw dataset's info, a preprocessing spec
    "_call",  # a device agent's JSON reply, typed by its caller
}


def _bare_dict(annotation: ast.expr | None) -> bool:
    """Whether a return annotation holds a dict whose values are not typed: dict, dict | None, list[dict],
    dict[str, dict], tuple[dict, ...]."""
    if annotation is None:
        return False
    return any(
        isinstance(n, ast.Name)
        and n.id == "dict"
        and not _subscripted(n, annotation)
        or isinstance(n, ast.Subscript)
        and ast.unparse(n.value) == "dict"
        and "dict" in ast.unparse(n.slice)
        for n in ast.walk(annotation)
    )


def _subscripted(name: ast.Name, tree: ast.expr) -> bool:
    return any(isinstance(n, ast.Subscript) and n.value is name for n in ast.walk(tree))


def test_no_function_returns_a_result_record_as_a_plain_dict():
    found = [
        f"{p.relative_to(REPO)}:{f.name} -> {ast.unparse(f.returns)}"
        for p in SOURCES
        for f in _functions(p)
        if _bare_dict(f.returns) and f.name not in BARE_DICT_ALLOWED
    ]
    assert found == []
