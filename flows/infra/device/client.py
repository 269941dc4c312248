"""The host's side of a device agent: ask what it is, send it models to time, and say clearly when it cannot answer.

A question (`info`) that gets no answer is asked again a bounded number of times. A measurement is sent once under
an id of its own (`X-Request-Id`): where its answer is lost (a read time-out, a connection that broke), the client
asks the agent what became of that id, and takes the answer from there, never sending the measurement a second
time while the agent may hold it. It sends it again only where the agent cannot have it: the connection was
refused, the agent answered "busy", or it says it never heard of that id (and will now refuse it if it comes). A
refusal (a wrong token, a hash mismatch, a format it cannot run) is final. Every error names the target.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import ssl
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from components import timing
from components.formats import runtime

if TYPE_CHECKING:  # the agent's install has no config (no YAML): only the host reads params.yaml
    from components.config import TargetConfig

RETRY_DELAYS = (1.0, 2.0, 4.0)  # seconds before each retry of a request that did not get through
ASK_TIMEOUT = 10.0  # seconds an agent has to say what became of a request (it answers from memory)
AGAIN = (503, 408)  # answers that say the agent did not run the request: busy, or its body did not arrive
T = TypeVar("T")


@dataclass(frozen=True)
class Device:
    """A device agent to measure on: its name in params.yaml, its URL, its token and the CA file that verifies its
    certificate (None: the system's)."""

    name: str
    url: str
    token: str
    ca_file: str | None = None

    def __repr__(self) -> str:  # never the token
        return f"Device(name={self.name!r}, url={self.url!r})"


class DeviceFailed(Exception):
    """A target that refused a request (`refused` True) or stopped answering after its retries."""

    def __init__(self, device: Device, message: str, refused: bool):
        super().__init__(f"target {device.name!r} ({device.url}): {message}")
        self.device, self.message, self.refused = device, message, refused

    def __reduce__(self):  # Prefect may keep a failed task's exception: pickled without the token
        return (DeviceFailed, (Device(self.device.name, self.device.url, ""), self.message, self.refused))


def device(name: str, target: TargetConfig) -> Device:
    """The device agent a `benchmark.targets` entry names, with its token from the variable or file it names."""
    if target.token_env:
        token = os.environ.get(target.token_env, "").strip()
        where = f"the variable {target.token_env}"
    else:
        token = Path(target.token_file).read_text().strip() if Path(target.token_file).is_file() else ""
        where = f"the file {target.token_file}"
    if not token:
        raise DeviceFailed(Device(name, target.url, ""), f"no token: {where} is unset or empty", refused=True)
    return Device(name, target.url, token, target.ca_file)


def runner(d: Device):
    """A runner for components.benchmark.measure that times on the device agent `d`."""

    def run(paths: list[str], batch_file: str, s: timing.Settings, start: str, timeout: float) -> timing.Raw:
        return measure(d, paths, batch_file, s, start, timeout)

    return run


def _call(device: Device, path: str, data: bytes | None = None, rid: str | None = None, timeout: float = 10.0) -> dict:
    """One HTTP request to the agent and its JSON answer; raises what urllib raises."""
    req = urllib.request.Request(device.url.rstrip("/") + path, data=data, method="GET" if data is None else "POST")
    req.add_header("Authorization", f"Bearer {device.token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if rid:
        req.add_header("X-Request-Id", rid)
    ctx = ssl.create_default_context(cafile=device.ca_file) if device.url.startswith("https") else None
    with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
        return json.loads(r.read())


class _NotYet(Exception):
    """A try that got no final answer (the agent is busy, or still has the request): try again after a while."""


def _tries(device: Device, attempt: Callable[[], T]) -> T:
    """`attempt()`, tried again after each of RETRY_DELAYS while it gets no final answer; a refusal is final."""
    last, answering = "", False
    for delay in (*RETRY_DELAYS, None):
        try:
            return attempt()
        except urllib.error.HTTPError as e:
            message = _error(e)
            if e.code not in AGAIN:  # busy is worth waiting for; every other refusal is final
                raise DeviceFailed(device, f"refused ({e.code}): {message}", refused=True) from e
            last, answering = message, True
        except _NotYet as e:
            last, answering = str(e), True
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            if isinstance(reason, ssl.SSLCertVerificationError):  # a wrong certificate stays wrong: no retry
                raise DeviceFailed(device, f"its certificate is not trusted: {reason}", refused=True) from e
            last, answering = f"{reason}", False
        if delay is None:
            break
        time.sleep(delay)
    what = "gave no final answer" if answering else "stopped answering"
    raise DeviceFailed(device, f"{what} after {len(RETRY_DELAYS) + 1} tries: {last}", refused=False)


@dataclass
class _Submission:
    """One measurement request to `device`: sent under a fresh id, and once sent, asked about by that id rather than
    sent again, until the agent says how it ended or that it never had it."""

    device: Device
    data: bytes
    timeout: float
    rid: str = ""
    sent: bool = False  # the agent may hold it: ask, do not send

    def attempt(self) -> timing.Raw:
        if self.sent:
            record = _call(self.device, f"/v1/requests/{self.rid}", timeout=ASK_TIMEOUT)
            if record["state"] == "done":
                return self._answered(record["status"], record["answer"])
            if record["state"] != "unknown":
                raise _NotYet(
                    f"no answer within {self.timeout:g} s; the agent has request {self.rid} {record['state']}"
                )
            self.sent = False  # it never arrived, and the agent now refuses it if it does: sending again is safe
        self.rid, self.sent = uuid.uuid4().hex, True
        try:
            return timing.Raw.model_validate(_call(self.device, "/v1/measure", self.data, self.rid, self.timeout))
        except urllib.error.HTTPError:
            self.sent = False  # answered: a busy agent did not take it, any other answer is final
            raise
        except urllib.error.URLError as e:
            if isinstance(e.reason, ConnectionRefusedError):  # the agent never saw it
                self.sent = False
            raise

    def _answered(self, status: int, answer: dict) -> timing.Raw:
        """The answer the agent kept for a request whose connection broke, as if it had arrived."""
        if status == 200:
            return timing.Raw.model_validate(answer)
        message = answer.get("error", "") if isinstance(answer, dict) else ""
        if status in AGAIN:
            self.sent = False
            raise _NotYet(message)
        raise DeviceFailed(self.device, f"refused ({status}): {message}", refused=True)


def _error(e: urllib.error.HTTPError) -> str:
    try:
        return json.loads(e.read())["error"]
    except (ValueError, KeyError, OSError):
        return e.reason


def info(device: Device, timeout: float = 10.0) -> timing.DeviceFacts:
    """What the agent says it is (its device's facts)."""
    return _tries(
        device, lambda: timing.DeviceFacts.model_validate(_call(device, "/v1/info", timeout=timeout)["device"])
    )


def measure(
    device: Device, paths: list[str], batch_file: str, s: timing.Settings, start: str, timeout: float
) -> timing.Raw:
    """Time `paths` on the device as timing.run times them here (`start` is one of them: the model that opens the
    runtime before peak memory is reset). Returns what the agent measured, with its CPUs and its device's facts."""
    models = [
        {
            "name": str(i),
            "format": runtime.format_of(p),
            "sha256": hashlib.sha256(data).hexdigest(),
            "data": base64.b64encode(data).decode(),
        }
        for i, (p, data) in enumerate((p, Path(p).read_bytes()) for p in paths)
    ]
    body = {
        "models": models,
        "start": str(paths.index(start)),
        "batch": base64.b64encode(Path(batch_file).read_bytes()).decode(),
        "settings": {k: v for k, v in asdict(s).items() if k != "cpus"},
    }
    return _tries(device, _Submission(device, json.dumps(body).encode(), timeout).attempt)
