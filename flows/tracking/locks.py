"""The lock that serializes changes of a model's `production` alias: a PostgreSQL advisory lock with a team's
database (every machine sees it, and the server releases it when its holder's connection ends, so a killed process
never leaves it held), otherwise a file lock beside the project's store (this machine only)."""

from __future__ import annotations

import hashlib
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from flows.infra.database import connect, redact
from flows.infra.environment import DATABASE_URL, LOCK_DIR, LOCK_TIMEOUT
from flows.tracking.errors import PromotionError


@contextmanager
def registry_lock(name: str, timeout: float | None = None):
    """Serialize changes of `name`'s production alias; a promotion waits at most `timeout` seconds (default
    EDGEKD_LOCK_TIMEOUT) for another one to finish, then is refused."""
    timeout = float(LOCK_TIMEOUT.get()) if timeout is None else timeout
    url = DATABASE_URL.get()
    if url:
        with _advisory_lock(url, name, timeout):
            yield
        return
    if not os.environ["MLFLOW_TRACKING_URI"].startswith("sqlite:"):
        print(
            f"warning: promotions of {name} are serialized by a file lock on this machine only; set "
            "EDGEKD_DATABASE_URL (or team.database_url) to the team's PostgreSQL so every machine shares the guard",
            file=sys.stderr,
            flush=True,
        )
    with _file_lock(name, timeout):
        yield


@contextmanager
def _file_lock(name: str, timeout: float):
    from filelock import FileLock, Timeout

    folder = Path(LOCK_DIR.get() or ".edgekd/locks")
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / f"registry-{name}.lock"))
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            _waiting(name, timeout)
            lock.acquire(timeout=timeout)
    except Timeout:
        raise PromotionError(_busy(name, timeout, str(folder))) from None
    try:
        yield
    finally:
        lock.release()


def _waiting(name: str, timeout: float) -> None:
    print(
        f"waiting up to {timeout:.0f} s for another promotion or rollback of {name} to finish ...",
        file=sys.stderr,
        flush=True,
    )


def _busy(name: str, timeout: float, where: str) -> str:
    return (
        f"another promotion or rollback of {name} has held the registry lock for {timeout:.0f} s ({where}); "
        "nothing was changed, try again"
    )


def lock_key(name: str) -> int:
    """The advisory lock key of a registered model: a signed 64-bit number from its name."""
    return int.from_bytes(hashlib.sha256(f"edgekd.registry:{name}".encode()).digest()[:8], "big", signed=True)


@contextmanager
def _advisory_lock(url: str, name: str, timeout: float):
    import psycopg2

    try:
        conn = connect(url, application_name=f"edgekd promote {name}")
    except psycopg2.Error as e:
        raise PromotionError(
            f"the promotion guard's database {redact(url)} could not be reached: {str(e).strip()}; nothing was changed"
        ) from None
    try:
        with conn.cursor() as cur:
            _acquire(cur, name, timeout, f"PostgreSQL advisory lock on {redact(url)}")
            try:
                yield
            finally:
                cur.execute("SELECT pg_advisory_unlock(%s)", (lock_key(name),))
    finally:
        conn.close()


def _acquire(cur, name: str, timeout: float, where: str) -> None:
    deadline, waited = time.monotonic() + timeout, False
    while True:
        cur.execute("SELECT pg_try_advisory_lock(%s)", (lock_key(name),))
        if cur.fetchone()[0]:
            return
        if time.monotonic() > deadline:
            raise PromotionError(_busy(name, timeout, where))
        if not waited:
            _waiting(name, timeout)
            waited = True
        time.sleep(0.2)
