"""`edgekd data add`: put a user's dataset under DVC and write its `datasets.NAME` section into params.yaml.

The data is read and checked with its kind's loader before anything is written, so a bad dataset leaves
params.yaml, data/ and DVC untouched.
"""
from __future__ import annotations

import subprocess
import sys
from io import StringIO
from pathlib import Path

from components.config import ConfigError, effective_config
from components.data import DataError, get_kind
from components.data.base import write_text


def add_dataset(root: Path, name: str, kind: str, source: str, data_root: str, classes: list[str] | None,
                options: dict) -> dict:
    """Validate, `dvc add` (for files inside the project), then record the dataset. Returns its section."""
    from ruamel.yaml import YAML

    root = root.resolve()
    params_file = root / "params.yaml"
    yaml = YAML()
    yaml.width = 120
    params = yaml.load(params_file.read_text())
    if name in (params.get("datasets") or {}):
        raise ConfigError(f"dataset {name!r} already exists in {params_file}; pick another name or edit it there")
    base = (root / data_root).resolve()
    path = (base / source).resolve()
    if not path.is_relative_to(base):
        raise DataError(f"source {source!r} resolves to {path}, outside the data root {base}")
    if not path.exists():
        raise DataError(f"source {path} does not exist")
    raw = get_kind(kind).load(str(path), options)  # raises DataError naming the bad file or line
    found = sorted({str(v) for v in raw.labels})
    classes = classes or found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(f"{path}: labels {unknown[:5]} are not among --classes {classes}")
    section = {"kind": kind, "root": data_root, "source": source, "classes": classes, "options": options}
    effective_config({"datasets": {name: section}})  # the section must be a valid config before it is written
    if path.is_relative_to(root) and _dvc_trackable(root, path):
        subprocess.run([sys.executable, "-m", "dvc", "add", str(path.relative_to(root))], cwd=root, check=True,
                       capture_output=True, text=True)
    params.setdefault("datasets", {})[name] = section
    buf = StringIO()
    yaml.dump(params, buf)
    write_text(params_file, buf.getvalue())
    return section | {"samples": len(raw), "labels_found": found}


def _dvc_trackable(root: Path, path: Path) -> bool:
    """Files not already in git can be `dvc add`ed; files in git stay there (DVC refuses to track both)."""
    proc = subprocess.run(["git", "ls-files", "--error-unmatch", str(path)], cwd=root, capture_output=True)
    return proc.returncode != 0
