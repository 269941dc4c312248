"""The configuration reference (docs/configuration.md), generated from the code that defines it: every key of
params.yaml with its type, default and description (the config models), each data kind's options, each KD
method's options, and the environment variables edgekd reads. A test fails when the page drifts from the code.

    python -m flows.reporting.reference --write docs/configuration.md
"""

from __future__ import annotations

import argparse
import types
import typing
from pathlib import Path

import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from components.config import DataConfig, PipelineConfig, TargetConfig, TeamConfig, ValidationConfig
from components.data.options import OPTIONS
from flows.infra.environment import VARIABLES

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
INTRO = """# Configuration reference

Generated from the code by `python -m flows.reporting.reference --write docs/configuration.md`; a test fails when
this page and the code disagree, so do not edit it by hand.

`params.yaml` holds what a project changes: `dataset` (the default dataset's name), `datasets` (one section per
dataset, below) and, where the project differs from the defaults for every dataset, any stage section. A dataset's
`overrides` change stage keys for that dataset only, and `--set SECTION.KEY=VALUE` for one run. Every key below has
the default shown unless the file sets it; unknown keys are errors that name the key.
"""


def type_name(annotation) -> str:
    """A field's type as a reader writes it in YAML: int, float, text, true/false, a list, one of some values."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " or ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in args)
    if origin is list:
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict or annotation is dict:
        return "mapping"
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return {bool: "true/false", int: "integer", float: "number", str: "text"}.get(annotation, str(annotation))


def value(v) -> str:
    """A default as YAML spells it."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, BaseModel):
        return "see below"
    if isinstance(v, str):
        return v.replace("\t", "\\t").replace("\n", "\\n") if v else '""'
    if isinstance(v, (list, dict)):
        return yaml.safe_dump(v, default_flow_style=True, width=1000).strip()
    return str(v)


def _doc(obj) -> str:
    """A class's docstring on one line."""
    return " ".join((obj.__doc__ or "").split())


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(model: type[BaseModel], prefix: str) -> list[str]:
    """One row a field: key (with `prefix`), type, default (`required` when it has none), description."""
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for name, f in model.model_fields.items():
        default = (
            "required"
            if f.default is PydanticUndefined and f.default_factory is None
            else f"`{_cell(value(f.get_default(call_default_factory=True)))}`"
        )
        rows.append(
            f"| `{prefix}{name}` | {_cell(type_name(f.annotation))} | {default} | {_cell(f.description or '')} |"
        )
    return rows


def _stage_sections() -> list[str]:
    out = []
    for name, f in PipelineConfig.model_fields.items():
        if name == "data":
            continue
        model = f.annotation
        out += ["", f"## {name}", "", _doc(model), ""]
        out += table(model, f"{name}.")
        if name == "distill":
            out += _kd_methods()
        if name == "benchmark":
            out += ["", "### benchmark.targets.NAME", "", _doc(TargetConfig), ""]
            out += table(TargetConfig, "benchmark.targets.NAME.")
    return out


def _kd_methods() -> list[str]:
    from components.kd import METHODS

    out = [
        "",
        "Each method's options go under `distill.METHOD` (e.g. `distill.dkd.beta: 4`); a method runs with "
        "its defaults below unless set there.",
    ]
    for name, cls in METHODS.items():
        doc = _doc(cls)
        out += ["", f"### distill.{name}", "", doc, ""]
        out += table(cls.Options, f"distill.{name}.") if cls.Options.model_fields else ["No options."]
    return out


def _datasets() -> list[str]:
    out = ["", "## datasets.NAME", "", _doc(DataConfig), ""]
    out += [r for r in table(DataConfig, "") if not r.startswith("| `name`")]
    out += ["", "### datasets.NAME.validation", ""] + table(ValidationConfig, "validation.")
    for kind, model in OPTIONS.items():
        out += ["", f"### datasets.NAME.options of kind {kind}", ""]
        out += table(model, "options.") if model.model_fields else ["No options."]
    return out


def _environment() -> list[str]:
    rows = [
        "",
        "## Environment variables",
        "",
        "Each tool's own variables (MLFLOW_TRACKING_URI, PREFECT_API_URL, ...) win over `params.yaml`. The "
        "`EDGEKD_*` variables edgekd reads are all declared in `flows/infra/environment.py`:",
        "",
        "| variable | default | what it does |",
        "|---|---|---|",
    ]
    for v in VARIABLES:
        who = " Set by edgekd for its own processes, not by users." if v.internal else ""
        rows.append(f"| `{v.name}` | `{value(v.default)}` | {_cell(v.description)}{who} |")
    return rows


def render() -> str:
    team = ["", "## team", "", _doc(TeamConfig), ""] + table(TeamConfig, "team.")
    return INTRO + "\n".join(_datasets() + _stage_sections() + team + _environment()) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--write", metavar="PATH", help="write the page here (default: print it)")
    a = p.parse_args(argv)
    if a.write:
        Path(a.write).write_text(render())
    else:
        print(render(), end="")


if __name__ == "__main__":
    main()
