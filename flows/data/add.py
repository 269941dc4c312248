"""`edgekd data add`: put a user's dataset under DVC and write its `datasets.NAME` section into params.yaml.

The data (and its unlabelled pool, if any) is read and checked with its kind's loaders before anything is
written, so a bad dataset leaves params.yaml, data/ and DVC untouched. Reading options the user leaves out are
inferred from the file (the kind's `infer_options`) and written into the section, so ingest reads it the same way.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

from components.config import ConfigError, effective_config, parse_overrides
from components.data import DataError, get_kind
from components.data.base import label_problem, splits_from_source, write_text
from components.data.options import parse as parse_options
from flows.data import remote
from flows.data.layout import check_apart, resolve_in_root

# A new dataset's gate: nothing is known yet of the accuracy it allows, so there is no absolute floor; a candidate
# must stay within 5 points of the teacher's val accuracy (a first run has an untuned student) and score no lower
# than the same student trained without a teacher. Latency and size stay the device profile's (the stage section).
# What is registered is what an edge user wants: the fastest candidate within half a point of the best val score.
NEW_DATASET_GATE = {
    "min_accuracy": 0.0,
    "max_accuracy_drop": 0.05,
    "plain_tolerance": 0.0,
    "select": "latency",
    "select_tolerance": 0.005,
}


@dataclass(frozen=True)
class Added:
    """A dataset `data add` recorded: its `datasets.NAME` section as written, what was read, what was inferred of
    its options ("" for nothing), the splits the source fixes, and whether its files reached the default remote
    (`push`: what to print of it, "" when nothing went to DVC)."""

    section: dict
    samples: int
    labels_found: list[str]
    inferred: str
    splits_from_source: list[str]
    pushed: bool
    push: str
    unlabelled_samples: int | None


def add_dataset(root: Path, name: str, kind: str, source: str, data_root: str, classes: list[str] | None,
                options: dict, unlabelled: str | None = None, overrides: dict | None = None) -> Added:
    """Validate, `dvc add` (for files inside the project), then record the dataset, with NEW_DATASET_GATE and
    `overrides` ({"SECTION.KEY": value}, on top of it) as its overrides. `unlabelled`: a pool, a path relative to
    `data_root`."""
    root = root.resolve()
    params_file = root / "params.yaml"
    yaml = round_trip_yaml()
    params = yaml.load(params_file.read_text())
    if name in (params.get("datasets") or {}):
        raise ConfigError(f"dataset {name!r} already exists in {params_file}; pick another name or edit it there")
    path = resolve_in_root(root, data_root, source, "source")
    pool_path = resolve_in_root(root, data_root, unlabelled, "unlabelled") if unlabelled is not None else None
    if pool_path is not None:
        check_apart(pool_path, path)
    reader = get_kind(kind)
    opts = _options(kind, options)
    opts, inferred = reader.infer_options(str(path), opts, classes) if hasattr(reader, "infer_options") else (opts, "")
    raw = reader.load(str(path), opts)  # raises DataError naming the bad file or line
    pool = reader.load_unlabelled(str(pool_path), opts, like=raw) if pool_path is not None else None
    classes = _classes(raw, classes, opts, path)
    section = _section(kind, source, data_root, unlabelled, classes, opts.given(), overrides)
    effective_config({"datasets": {name: section}})  # the section must be a valid config before it is written
    tracked = [_dvc_add(root, p) for p in (path, pool_path)
               if p is not None and p.is_relative_to(root) and _dvc_trackable(root, p)]
    params.setdefault("datasets", {})[name] = section
    write_yaml(yaml, params, params_file)
    pushed, push = _push(root, tracked)
    return Added(section, len(raw), sorted({str(v) for v in raw.labels}), inferred, splits_from_source(raw), pushed,
                 push, len(pool) if pool is not None else None)


def _options(kind: str, options: dict):
    """The `--option` values as the kind's typed options; an unknown one or a bad value is a DataError naming it."""
    try:
        return parse_options(kind, options, where="--option")
    except ValueError as e:
        raise DataError(str(e)) from None


def _classes(raw, classes: list[str] | None, options, path: Path) -> list[str]:
    """The label set: the given `classes` (every label found must be among them), else the labels found, when the
    label column can hold labels at all."""
    found = sorted({str(v) for v in raw.labels})
    problem = label_problem(raw.labels) if classes is None and "label_column" in options.given() else None
    if problem:  # e.g. a message column given (or taken by default) as the label: thousands of "classes"
        raise DataError(f"{path}: label_column {options.label_column!r} cannot hold the labels: {problem}; pick "
                        "the label column with --option label_column=COLUMN, or list the classes with --classes")
    classes = classes or found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(f"{path}: labels {unknown[:5]} are not among --classes {classes}")
    return classes


def _section(kind: str, source: str, data_root: str, unlabelled: str | None, classes: list[str], options: dict,
             overrides: dict | None) -> dict:
    """The `datasets.NAME` section: its gate overrides start from NEW_DATASET_GATE, with a comment saying so."""
    from ruamel.yaml.comments import CommentedMap
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString

    stages = parse_overrides(overrides)
    stages = CommentedMap(stages | {"gate": NEW_DATASET_GATE | stages.get("gate", {})})
    stages.yaml_set_comment_before_after_key("gate", indent=6, before="data add's gate for a new dataset: relative to "
                                             "the teacher and the plain student; tighten it here")
    section = {"kind": kind, "root": data_root, "source": source}
    section |= {"unlabelled": unlabelled} if unlabelled is not None else {}
    # quoted, as labels such as yes/no/on/off would be booleans to the YAML 1.1 readers of params.yaml (PyYAML)
    return section | {"classes": [DoubleQuotedScalarString(c) for c in classes], "options": options,
                      "overrides": stages}


def _dvc_add(root: Path, path: Path) -> str:
    subprocess.run([sys.executable, "-m", "dvc", "add", str(path.relative_to(root))], cwd=root, check=True,
                   capture_output=True, text=True)
    return f"{path.relative_to(root)}.dvc"


def _push(root: Path, targets: list[str]) -> tuple[bool, str]:
    """Push the new .dvc targets to the default remote, so that a teammate's clone can pull them. A failed push
    does not undo the addition (the data is in the local DVC cache): it is said, to be pushed later."""
    if not targets:
        return False, ""
    try:
        return True, f"pushed to {remote.push(root, targets)}"
    except remote.RemoteError as e:
        return False, f"not pushed: {e}\nthe data is in the local DVC cache only: run `dvc push` when the remote " \
                      "is reachable"


def round_trip_yaml():
    """A ruamel.yaml round-trip loader: what it writes back keeps the file's comments, order and quoting."""
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.width = 120
    yaml.preserve_quotes = True
    yaml.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    return yaml


def write_yaml(yaml, data, path: Path) -> None:
    buf = StringIO()
    yaml.dump(data, buf)
    write_text(path, buf.getvalue())


def _dvc_trackable(root: Path, path: Path) -> bool:
    """Files not already in git can be `dvc add`ed; files in git stay there (DVC refuses to track both)."""
    proc = subprocess.run(["git", "ls-files", "--error-unmatch", str(path)], cwd=root, capture_output=True)
    return proc.returncode != 0
