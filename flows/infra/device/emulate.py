"""A slower device, emulated: this process and its children limited to a share of one CPU by a cgroup of their own.

cgroup v2 (`cpu.max`) where the unified hierarchy lets us add a group and enable its cpu controller, else cgroup v1
(`cpu.cfs_quota_us` per `cpu.cfs_period_us`). The period is the shortest the kernel allows for the quota (1 ms, or
4 ms for a quarter of a CPU, since a quota is at least 1 ms): an inference call longer than the period is slowed
to 1/quota, a much shorter call runs at full speed and is stalled now and then (its p95 grows, its p50 barely). A
quota is a share of time, not a slower clock. Both need write access to the hierarchy (root, or a delegated
subtree). The mechanism that ran is returned as a sentence, so the agent's facts can state it; where none
can, the error says why instead of measuring an unlimited process as if it were slow.
"""

from __future__ import annotations

import atexit
import math
import os
from pathlib import Path

MIN_US = 1_000  # the kernel's shortest period and quota
CGROUP = Path("/sys/fs/cgroup")


def _v2_dir() -> Path | None:
    """The unified hierarchy's mount and this process's group in it, where there is one."""
    for mount in (CGROUP, CGROUP / "unified"):
        if (mount / "cgroup.controllers").exists():
            for line in Path("/proc/self/cgroup").read_text().splitlines():
                if line.startswith("0::"):
                    return mount / line[3:].lstrip("/")
    return None


def _sweep(parent: Path) -> None:
    """Remove the groups that agents killed with SIGKILL left (their exit handler never ran): empty ones whose
    process is gone. A group still in use cannot be removed."""
    for group in parent.glob("edgekd-device-*"):
        pid = group.name.rsplit("-", 1)[1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            try:
                group.rmdir()
            except OSError:
                pass


def _join(group: Path, parent: Path, limits: dict[str, str]) -> None:
    _sweep(parent)
    group.mkdir(exist_ok=True)
    for name, value in limits.items():
        (group / name).write_text(value)
    (group / "cgroup.procs").write_text(str(os.getpid()))

    def leave():
        try:
            (parent / "cgroup.procs").write_text(str(os.getpid()))
            group.rmdir()
        except OSError:
            pass

    atexit.register(leave)


def limit_cpu(quota: float) -> str:
    """Limit this process (and every child it starts afterwards) to `quota` of one CPU (0 < quota <= 1)."""
    if not 0 < quota <= 1:
        raise ValueError(f"--cpu-quota must be in (0, 1], got {quota}")
    # The shortest period the kernel takes with this quota: the process runs `us` then waits; a call longer than
    # the period is slowed to 1/quota, a much shorter one mostly runs at full speed and now and then waits.
    period = max(MIN_US, math.ceil(MIN_US / quota))
    us, name, errors = round(quota * period), f"edgekd-device-{os.getpid()}", []
    v2 = _v2_dir()
    if v2 is not None:
        try:
            if "cpu" not in (v2 / "cgroup.subtree_control").read_text().split():
                (v2 / "cgroup.subtree_control").write_text("+cpu")
            _join(v2 / name, v2, {"cpu.max": f"{us} {period}"})
            return f"cgroup v2 cpu.max {us} {period} ({quota:g} of one CPU)"
        except OSError as e:
            errors.append(f"cgroup v2 at {v2}: {e}")
    v1 = CGROUP / "cpu"
    if (v1 / "cpu.cfs_quota_us").exists():
        try:
            _join(v1 / name, v1, {"cpu.cfs_period_us": str(period), "cpu.cfs_quota_us": str(us)})
            return f"cgroup v1 cpu.cfs_quota_us {us} per cpu.cfs_period_us {period} ({quota:g} of one CPU)"
        except OSError as e:
            errors.append(f"cgroup v1 at {v1}: {e}")
    raise RuntimeError(
        "cannot emulate a slower device: no writable cgroup cpu controller ("
        + ("; ".join(errors) or "neither cgroup v2 cpu.max nor cgroup v1 cpu.cfs_quota_us is mounted")
        + "). Run the agent as root, or in a cgroup delegated to its user."
    )
