"""A local `prefect server start` for schedules: Prefect's temporary server runs flows but schedules nothing."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@contextmanager
def prefect_server(port: int, startup_timeout: float = 180.0):
    """Use PREFECT_API_URL if set; otherwise start a local server (database in PREFECT_HOME) for the block."""
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    url = f"http://127.0.0.1:{port}/api"
    log = open(os.path.join(os.environ.get("PREFECT_HOME", "."), "server.log"), "ab")
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                             str(port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + startup_timeout
        while not _healthy(url):
            if proc.poll() is not None:
                raise RuntimeError(f"prefect server exited with {proc.returncode}; see {log.name}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"prefect server not healthy on {url} after {startup_timeout:.0f} s; see {log.name}")
            time.sleep(1)
        os.environ["PREFECT_API_URL"] = url
        print(f"Prefect server and UI on {url.removesuffix('/api')} (log: {log.name})")
        yield url
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
