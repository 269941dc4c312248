"""flows/infra/signals.py on real processes: the first SIGTERM raises where the main thread was and the command
unwinds; a command that does not end by itself is ended, with what it started, STOP_WITHIN_S after the signal; a
second signal ends it at once."""

import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from flows.infra.signals import EXIT_OFFSET, STOP_WITHIN_S

pytestmark = pytest.mark.unit

# A command: it starts a child (in a session of its own, as the servers are), says so, then works until stopped.
# STUBBORN: it swallows the interrupt and goes on (a drain retrying a server that is gone, a cluster slow to close).
SCRIPT = """
import subprocess, sys, time
from flows.infra import signals
signals.install()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
try:
    print("child", child.pid, flush=True)
    while True:
        time.sleep(0.05)
except KeyboardInterrupt as e:
    print("unwound:", e, flush=True)
    if STUBBORN:
        while True:
            time.sleep(0.05)
    child.terminate()
    child.wait()
    sys.exit(e.exit_code)
"""


def command(repo, stubborn: bool) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", f"STUBBORN = {stubborn}\n" + textwrap.dedent(SCRIPT)],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    line = proc.stdout.readline()
    assert line.startswith("child"), line + proc.stdout.read()
    return proc, int(line.split()[1])


def gone(pid: int, timeout: float = 5) -> bool:
    try:
        psutil.Process(pid).wait(timeout)
    except psutil.NoSuchProcess:
        return True
    except psutil.TimeoutExpired:
        return False
    return True


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_first_signal_unwinds_the_command(repo, sig):
    proc, child = command(repo, stubborn=False)
    proc.send_signal(sig)
    assert proc.wait(timeout=10) == EXIT_OFFSET + sig
    out = proc.stdout.read()
    assert f"{signal.Signals(sig).name} received: stopping" in out and f"unwound: stopped by {sig.name}" in out
    assert gone(child)


def test_a_command_that_does_not_end_is_ended_with_its_children_after_the_deadline(repo):
    proc, child = command(repo, stubborn=True)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=STOP_WITHIN_S + 5) == EXIT_OFFSET + signal.SIGTERM
    took = time.monotonic() - t0
    assert STOP_WITHIN_S <= took < 10, took
    assert f"still running {STOP_WITHIN_S:.0f} s after the signal: ending now" in proc.stdout.read()
    assert gone(child)  # in a session of its own, so only the hard exit's reaping ended it


def test_a_second_signal_ends_the_command_at_once(repo):
    proc, child = command(repo, stubborn=True)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=5) == EXIT_OFFSET + signal.SIGINT
    assert time.monotonic() - t0 < 3
    assert "a second signal: ending now" in proc.stdout.read()
    assert gone(child)
