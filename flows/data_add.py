"""`edgekd data add`: put a user's dataset under DVC and write its `datasets.NAME` section into params.yaml.

The data (and its unlabelled pool, if any) is read and checked with its kind's loaders before anything is
written, so a bad dataset leaves params.yaml, data/ and DVC untouched.
"""
from __future__ import annotations

import subprocess
import sys
from io import StringIO
from pathlib import Path

from components.config import ConfigError, effective_config
from components.data import DataError, get_kind
from components.data.base import write_text
from flows.dvc_stages import check_apart, resolve_in_root


def add_dataset(root: Path, name: str, kind: str, source: str, data_root: str, classes: list[str] | None,
                options: dict, unlabelled: str | None = None) -> dict:
    """Validate, `dvc add` (for files inside the project), then record the dataset. Returns its section, with
    `samples`, `labels_found` and, with an `unlabelled` pool (a path relative to `data_root`), `unlabelled_samples`.
    """
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
    raw = get_kind(kind).load(str(path), options)  # raises DataError naming the bad file or line
    pool = get_kind(kind).load_unlabelled(str(pool_path), options, like=raw) if pool_path is not None else None
    found = sorted({str(v) for v in raw.labels})
    classes = classes or found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(f"{path}: labels {unknown[:5]} are not among --classes {classes}")
    section = {"kind": kind, "root": data_root, "source": source}
    section |= {"unlabelled": unlabelled} if unlabelled is not None else {}
    section |= {"classes": classes, "options": options}
    effective_config({"datasets": {name: section}})  # the section must be a valid config before it is written
    for p in (path, pool_path):
        if p is not None and p.is_relative_to(root) and _dvc_trackable(root, p):
            subprocess.run([sys.executable, "-m", "dvc", "add", str(p.relative_to(root))], cwd=root, check=True,
                           capture_output=True, text=True)
    params.setdefault("datasets", {})[name] = section
    write_yaml(yaml, params, params_file)
    return section | {"samples": len(raw), "labels_found": found} | (
        {"unlabelled_samples": len(pool)} if pool is not None else {})


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
