"""Running DVC in the project: `dvc repro` of a dataset's stages, putting its data back as dvc.lock last had it,
`dvc status`, and what DVC said when it failed. DVC runs as a subprocess, so that it resolves paths against the
project and its stage commands find this interpreter."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml


class DvcError(RuntimeError):
    """A DVC stage failed; `data_error` is the stage's own 'error: ...' line when the data was at fault."""

    def __init__(self, message: str, data_error: str | None = None):
        super().__init__(message)
        self.data_error = data_error


def run(root: Path, args: list[str], timeout: float, module: bool = True) -> subprocess.CompletedProcess:
    """DVC (`python -m dvc ARGS`, or `args` as given with module False) in the project, with this interpreter first
    on PATH; a timeout is a failed run (exit 124)."""
    cmd = [sys.executable, "-m", "dvc", *args] if module else args
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    try:
        return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(cmd, 124, "", f"ERROR: no answer within {timeout:.0f} s")


def cache_dir(root: Path) -> Path:
    """The project's DVC cache folder (`dvc cache dir`; .dvc/cache unless configured)."""
    return Path(run(root, ["cache", "dir"], timeout=60).stdout.strip() or root / ".dvc" / "cache")


def repro(root: Path, stage: str, log=print) -> list[str]:
    """`dvc repro STAGE` (with its upstream stages); returns the stages that actually ran. TimeoutError when
    another process holds DVC's lock; DvcError otherwise."""
    proc = run(root, ["repro", stage], timeout=3600)
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.strip():
            log(f"dvc: {line}")
    if proc.returncode != 0:
        if "Unable to acquire lock" in proc.stderr:
            raise TimeoutError(f"dvc repro {stage}: the DVC repository is locked by another process")
        data_errors = [line[len("error: "):] for line in proc.stderr.splitlines() if line.startswith("error: ")]
        raise DvcError(f"dvc repro {stage} failed (exit {proc.returncode}):\n{proc.stderr.strip()[-3000:]}",
                       data_errors[-1] if data_errors else None)
    return re.findall(r"Running stage '([^']+)'", proc.stdout)


def read_lock(root: Path) -> str | None:
    lock = root / "dvc.lock"
    return lock.read_text() if lock.exists() else None


def restore(root: Path, name: str, lock_before: str | None, log=print) -> None:
    """Put dvc.lock and dataset `name`'s outputs back as they were (`lock_before`, None: no dvc.lock): data that
    failed to ingest or to validate is never left in data/. The outputs of the previous lock come back from DVC's
    cache; outputs of stages that had no lock entry are removed."""
    from components.formats.base import atomic_path
    from flows.data.layout import prepared_dir, raw_dir  # here: `edgekd run`'s no-change check needs no readers

    lock = root / "dvc.lock"
    if lock_before is None:
        lock.unlink(missing_ok=True)
    else:
        with atomic_path(lock) as tmp:
            tmp.write_text(lock_before)
    locked = (yaml.safe_load(lock_before or "") or {}).get("stages", {})
    for stage, out in ((f"ingest@{name}", raw_dir(root, name)), (f"prepare@{name}", prepared_dir(root, name))):
        if stage not in locked:
            shutil.rmtree(out, ignore_errors=True)
            continue
        proc = run(root, ["checkout", "--force", stage], timeout=600)
        if proc.returncode != 0:
            log(f"could not restore {out} from DVC's cache: {proc.stderr.strip()[-1000:]}")
    log(f"data of {name!r} restored to the last good version in dvc.lock")


def stages(root: Path, name: str) -> dict:
    """Dataset `name`'s entries of dvc.lock (ingest@NAME, prepare@NAME), None where there is none."""
    lock = root / "dvc.lock"
    locked = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}) if lock.exists() else {}
    return {s: locked.get(s) for s in (f"ingest@{name}", f"prepare@{name}")}


def dataset_hash(root: Path, name: str) -> str:
    """DVC's hash of data/prepared/NAME as dvc.lock records it: the version of the prepared data."""
    return stages(root, name)[f"prepare@{name}"]["outs"][0]["md5"]


def clean(root: Path, name: str) -> bool:
    """Whether `dvc status` finds dataset `name`'s stages up to date."""
    import json

    proc = run(root, ["status", "--json", f"ingest@{name}", f"prepare@{name}"], timeout=300)
    try:
        return proc.returncode == 0 and json.loads(proc.stdout or "null") == {}
    except ValueError:
        return False


def message(proc: subprocess.CompletedProcess) -> str:
    """What DVC said on stderr (its warnings name the missing objects, its errors the targets), less its support
    footer; the end of its output when stderr is empty."""
    lines = [line.removeprefix("ERROR: ") for line in proc.stderr.splitlines()
             if line.strip() and not line.startswith(("Having any troubles?", "<https://dvc.org/support"))]
    return "\n".join(lines)[-2000:] or proc.stdout.strip()[-2000:] or f"exit {proc.returncode}"


def summary(proc: subprocess.CompletedProcess) -> str:
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    return lines[-1] if lines else "nothing to push"
