"""What processes hold and what folders weigh, for the soak: RSS, open files, threads, database connections, the
children left behind, and bytes on disk."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DB_SUFFIXES = (".db", ".db-wal", ".sqlite")


@dataclass(frozen=True)
class Held:
    rss_mib: float
    open_files: int
    threads: int
    db_connections: int
    rss_by_process: dict[str, float]


def held(processes, label) -> Held:
    """Summed over `processes` (psutil.Process) still running: RSS in MiB, open files, threads, and open SQLite
    database files (a local Prefect server's connections); and the RSS of each, by `label(process)`."""
    import psutil

    rss = files = threads = dbs = 0
    by_process: dict[str, float] = {}
    for p in processes:
        try:
            with p.oneshot():
                mem = p.memory_info().rss
                opened = p.open_files()
                threads += p.num_threads()
                name = label(p)
        except psutil.Error:
            continue
        rss += mem
        by_process[name] = by_process.get(name, 0.0) + mem / 2**20
        files += len(opened)
        dbs += sum(f.path.endswith(DB_SUFFIXES) for f in opened)
    return Held(rss / 2**20, files, threads, dbs, by_process)


def folder_bytes(path: Path) -> int:
    """Bytes of the regular files under `path` (0 when it does not exist); symlinks are not followed."""
    total = 0
    for dirpath, _, names in os.walk(path):
        for n in names:
            try:
                st = os.lstat(os.path.join(dirpath, n))
            except OSError:
                continue
            total += st.st_size
    return total
