"""`edgekd data remove`: take a dataset out of the project; its registered model stays in MLflow.

Removed: the `datasets.NAME` section of params.yaml, the `ingest@NAME` and `prepare@NAME` entries of dvc.lock,
data/raw/NAME and data/prepared/NAME, and DVC's tracking of the source and unlabelled pool (the `.dvc` file and
.gitignore line that `data add` created) unless another dataset reads the same files.
Kept: the source and pool files themselves (the user's own data, perhaps their only copy outside DVC's cache),
DVC's cache (`dvc gc` frees it), and the registered model NAME with every version and its history: `predict`
reads only the registry.

params.yaml is written last. Until then the dataset is still declared, so when a step fails the project is one
that `edgekd data remove NAME` finishes (each step skips what is already gone) or `edgekd run --dataset NAME`
rebuilds. Written first, it would leave dvc.lock entries and folders that no dataset names, which nothing
would ever clean up.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from components.config import ConfigError, DataConfig
from flows.data.add import round_trip_yaml, write_yaml
from flows.data.layout import prepared_dir, raw_dir


@dataclass
class Removal:
    """What removing dataset `name` changes, worked out before anything is changed."""
    root: Path
    name: str
    lock_stages: list[str]  # its entries in dvc.lock
    dvc_files: list[Path]  # .dvc files tracking its source or pool
    folders: list[Path]  # its ingested and prepared data
    kept: list[Path]  # its source and pool files, left on disk

    def describe(self) -> str:
        rel = [str(p.relative_to(self.root)) for p in self.dvc_files + self.folders]
        return ", ".join([f"params.yaml datasets.{self.name}"] + [f"dvc.lock {s}" for s in self.lock_stages] + rel)


def plan_removal(root: Path, name: str) -> Removal:
    """Check that `name` can be removed (ConfigError naming why not) and list what would go."""
    root = root.resolve()
    params_file = root / "params.yaml"
    params = round_trip_yaml().load(params_file.read_text())
    datasets = params.get("datasets") or {}
    if name not in datasets:
        raise ConfigError(f"unknown dataset {name!r}; {params_file} defines {sorted(datasets)}")
    default = params.get("dataset", next(iter(datasets)))
    if name == default:
        rest = [d for d in datasets if d != name]
        raise ConfigError(f"{name!r} is the default dataset (`dataset` in {params_file}"
                          f"{'' if 'dataset' in params else ', unset: the first of datasets'}); "
                          + (f"set `dataset:` to one of {rest} first" if rest else
                             "it is the only dataset: add another one and make it the default first"))
    others = [q for n, s in datasets.items() if n != name for q in _paths(root, s or {})]
    own = [p for p in _paths(root, datasets[name] or {})
           if not any(p.is_relative_to(q) or q.is_relative_to(p) for q in others)]  # read by no other dataset
    dvc_files = [p.with_name(p.name + ".dvc") for p in own if p.is_relative_to(root)]
    lock_file = root / "dvc.lock"
    locked = (round_trip_yaml().load(lock_file.read_text()) or {}).get("stages", {}) if lock_file.is_file() else {}
    return Removal(root, name,
                   lock_stages=[s for s in (f"ingest@{name}", f"prepare@{name}") if s in locked],
                   dvc_files=[f for f in dvc_files if f.is_file()],
                   folders=[d for d in (raw_dir(root, name), prepared_dir(root, name)) if d.exists()],
                   kept=[p for p in own if p.exists()])


def _paths(root: Path, section: dict) -> list[Path]:
    """The source and pool files of a dataset section (built-in sources have none)."""
    data_root = section.get("root", DataConfig.model_fields["root"].default)
    return [(root / data_root / v).resolve() for v in (section.get("source"), section.get("unlabelled"))
            if isinstance(v, str) and not v.startswith("sklearn:")]


def remove_dataset(plan: Removal) -> None:
    """Carry out `plan`: DVC tracking, dvc.lock entries, data folders, then params.yaml (see the module's doc)."""
    root = plan.root
    if plan.dvc_files:
        proc = subprocess.run([sys.executable, "-m", "dvc", "remove", *(str(p.relative_to(root))
                                                                        for p in plan.dvc_files)],
                              cwd=root, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"dvc remove failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    yaml = round_trip_yaml()
    if plan.lock_stages:
        lock = yaml.load((root / "dvc.lock").read_text())
        for stage in plan.lock_stages:
            del lock["stages"][stage]
        write_yaml(yaml, lock, root / "dvc.lock")
    for folder in plan.folders:
        shutil.rmtree(folder)
    params = yaml.load((root / "params.yaml").read_text())
    del params["datasets"][plan.name]
    write_yaml(yaml, params, root / "params.yaml")
