"""`edgekd bench soak`: the scheduled pipeline run N times through a served deployment (`edgekd serve` on a local
Prefect server), sampling after each run what the long-lived processes hold and what the stores weigh.

The long-lived processes are `serve` and everything it started before its first run (the Prefect server and its
workers). After each completed flow run, at a moment no run is in progress (when the schedule leaves one) and once
the processes of that run are gone (up to SETTLE_S seconds), it samples their RSS, open files, threads and open
database files, counts the processes started for earlier runs that are still there ("children": a leak), and
sizes mlruns/, .edgekd/, DVC's cache and the Prefect home. components/soak.py judges the growth.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from components.soak import Growth, Sample, growth
from flows.infra.processes import ServerStartError, resource_tracker, stop_tree, tail
from flows.infra.resources import folder_bytes, held

DEPLOYMENT = "edgekd-soak"
SETTLE_S = 20.0
READY_S = 300.0


class SoakError(RuntimeError):
    """A scheduled run failed, or `serve` stopped or stalled: the soak cannot go on."""


@dataclass
class SoakResult:
    samples: list[Sample]
    growth: list[Growth]
    log: Path

    @property
    def grows(self) -> list[str]:
        return [g.quantity for g in self.growth if g.grows]


def stores(root: Path) -> dict[str, Path]:
    from flows.data import dvc

    return {
        "mlruns": root / "mlruns",
        "edgekd": root / ".edgekd",
        "dvc_cache": dvc.cache_dir(root),
        "prefect_home": Path(os.environ["PREFECT_HOME"]),
    }


def soak(root: Path, runs: int, every_s: int, port: int, serve_args: list[str], log=print) -> SoakResult:
    """Serve the pipeline every `every_s` seconds until `runs` runs completed, sampling after each."""
    import psutil

    if os.environ.get("PREFECT_API_URL"):
        raise SoakError("bench soak measures the local servers `serve` starts: unset PREFECT_API_URL (team mode)")
    home = Path(os.environ["PREFECT_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    out = home / "soak-serve.log"
    url = f"http://127.0.0.1:{port}/api"
    cmd = [sys.executable, "-m", "flows.cli", "--project-dir", str(root), "serve", "--interval", str(every_s)]
    with open(out, "wb") as f:
        proc = subprocess.Popen(
            [*cmd, "--name", DEPLOYMENT, "--port", str(port), *serve_args],
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait(lambda: "serving deployment" in out.read_text(errors="replace"), proc, out, READY_S, "serving")
        serve = psutil.Process(proc.pid)
        long_lived = [serve, *serve.children(recursive=True)]
        keep = {(p.pid, p.create_time()) for p in long_lived}
        log(f"serving every {every_s} s; long-lived processes: {len(long_lived)} (serve, its Prefect server, ...)")
        samples: list[Sample] = []
        where = stores(root)
        while len(samples) < runs:
            n = len(samples) + 1
            _wait(lambda n=n: _completed(url, out) >= n, proc, out, every_s + READY_S, f"run {n} to complete")
            done_at = time.time()
            _idle(url, every_s)
            left = _settle(serve, keep, done_at)
            s = Sample(
                run=n,
                children=len(left),
                storage={k: folder_bytes(v) for k, v in where.items()},
                **vars(held(long_lived, lambda p: _label(p, serve.pid))),
            )
            samples.append(s)
            log(
                f"run {n}/{runs}: RSS {s.rss_mib:.1f} MiB, {s.open_files} open files, {s.threads} threads, "
                f"{s.children} children left, {s.db_connections} DB files open"
            )
        return SoakResult(samples, growth(samples), out)
    finally:
        stop_tree(proc, signal.SIGTERM, grace=30)


def _label(p, serve_pid: int) -> str:
    """A long-lived process's name in the soak's table."""
    if p.pid == serve_pid:
        return "serve"
    cmd = " ".join(p.cmdline())
    if "prefect" in cmd and ("server" in cmd or "uvicorn" in cmd):
        return "prefect server"
    if "flows.infra.watchdog" in cmd:
        return "watchdog"
    return p.name()


def _transient(serve, keep: set, before: float) -> list:
    """Processes under `serve` started for runs that completed before `before` (not long-lived, and not
    multiprocessing's resource tracker, which the first run starts and serve keeps)."""
    import psutil

    found = []
    for p in serve.children(recursive=True):
        try:
            if (p.pid, p.create_time()) in keep or p.create_time() >= before or not p.is_running():
                continue
        except psutil.Error:
            continue
        if not resource_tracker(p):  # started with the first flow run, one per serve: not a run's leftover
            found.append(p)
    return found


def _settle(serve, keep: set, done_at: float) -> list:
    """Wait until the processes of finished runs are gone; the ones still there after SETTLE_S (leaks)."""
    deadline = time.monotonic() + SETTLE_S
    while (left := _transient(serve, keep, done_at)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def _count(url: str, *states: str) -> int | None:
    """Flow runs of the soak's deployment in `states`, by Prefect's count route (a number, not the growing list
    of runs: the soak must not itself make the server hold more memory run after run); None if it did not answer."""
    import httpx

    body = {"flow_runs": {"state": {"type": {"any_": list(states)}}}, "deployments": {"name": {"any_": [DEPLOYMENT]}}}
    try:
        return int(httpx.post(f"{url}/flow_runs/count", json=body, timeout=10).json())
    except (httpx.HTTPError, ValueError, TypeError):
        return None


def _idle(url: str, within_s: float) -> None:
    """Wait (up to `within_s`) for a moment with no flow run in progress, so that a sample sees the servers at
    rest rather than serving the next run; runs back to back leave none, and the sample is taken anyway."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline and _count(url, "RUNNING", "PENDING") != 0:
        time.sleep(1)


def _completed(url: str, out: Path) -> int:
    """Completed flow runs of the soak's deployment; SoakError once one failed, crashed or was cancelled."""
    if _count(url, "FAILED", "CRASHED", "CANCELLED"):
        raise SoakError(f"a scheduled run failed, crashed or was cancelled; see {out}:\n{tail(out)}")
    return _count(url, "COMPLETED") or 0


def _wait(check, proc: subprocess.Popen, out: Path, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None:
            raise ServerStartError(f"`serve` exited with {proc.returncode} waiting for {what}; {out}:\n{tail(out)}")
        if time.monotonic() > deadline:
            raise SoakError(f"no {what} within {timeout:.0f} s; {out}:\n{tail(out)}")
        time.sleep(1)
