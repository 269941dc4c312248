"""`edgekd bench rerun`: what a no-change re-run costs next to the first run, measured side by side.

A fresh `git clone` of the project (HEAD) is made beside it, so that data paths such as `../shared` resolve as they
do for the project, with its own MLflow store, Prefect home and caches. `edgekd run` runs there twice in a row,
each timed as the whole command (interpreter start, imports and the Prefect server included), and the registry
is read after each. A benchmark, not a test: it trains every model of the first run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


def _versions(clone: Path, name: str) -> int:
    from mlflow import MlflowClient

    store = MlflowClient(tracking_uri=f"sqlite:///{clone / 'mlruns' / 'mlflow.db'}")
    return len(store.search_model_versions(f"name='{name}'"))


@dataclass(frozen=True)
class Timed:
    run: str  # "first run" or "re-run"
    wall_s: float
    exit_code: int
    versions: int  # registered versions of the dataset's model after it


@dataclass(frozen=True)
class RerunResult:
    dataset: str
    clone: str | None  # where the clone was kept (--keep)
    runs: list[Timed]

    @property
    def ratio(self) -> float:
        return round(self.runs[1].wall_s / self.runs[0].wall_s, 4)

    def as_json(self) -> dict:
        first, again = self.runs
        return {
            "dataset": self.dataset,
            "clone": self.clone,
            "runs": [vars(r) for r in self.runs],
            "ratio": self.ratio,
            "new_versions_on_rerun": again.versions - first.versions,
        }


def bench_rerun(root: Path, dataset: str, keep: bool = False) -> RerunResult:
    """Run `edgekd run --dataset DATASET` twice in a fresh clone of `root`; wall times, ratio, versions."""
    clone = Path(tempfile.mkdtemp(prefix=".edgekd-rerun-", dir=root.parent))
    try:
        subprocess.run(["git", "clone", "-q", str(root), str(clone)], check=True, capture_output=True, text=True)
        # Nothing of this process's set-up travels: the clone gets its own store, Prefect home and watchdog.
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "EDGEKD_"))}
        environ["PYTHONPATH"] = str(clone)  # the clone's code, not this checkout's
        cmd = [sys.executable, "-m", "flows.cli", "--project-dir", str(clone), "run", "--dataset", dataset]
        rows = []
        for label in ("first run", "re-run"):
            print(f"{label}: {' '.join(cmd[1:])} (in {clone})", flush=True)
            t0 = time.monotonic()
            proc = subprocess.run(cmd, cwd=clone, env=environ, capture_output=True, text=True)
            wall = time.monotonic() - t0
            (clone / f"{label.replace(' ', '-')}.log").write_text(proc.stdout + proc.stderr)
            if proc.returncode not in (0, 2):
                raise RuntimeError(f"{label} exited with {proc.returncode}:\n{(proc.stdout + proc.stderr)[-3000:]}")
            rows.append(Timed(label, round(wall, 2), proc.returncode, _versions(clone, dataset)))
        return RerunResult(dataset, str(clone) if keep else None, rows)
    finally:
        if not keep:
            shutil.rmtree(clone, ignore_errors=True)


def render(result: RerunResult) -> str:
    first, again = result.runs
    return (
        f"{result.dataset}: first run {first.wall_s:.1f} s, no-change re-run {again.wall_s:.1f} s, "
        f"ratio {result.ratio:.3f}; registered versions {first.versions} -> {again.versions} "
        f"({again.versions - first.versions} new on the re-run)"
        + (f"; clone kept at {result.clone}" if result.clone else "")
    )
