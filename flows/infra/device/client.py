"""The host's side of a device agent: ask what it is, send it models to time, and say clearly when it cannot answer.

A request that does not reach the agent, or finds it busy, is tried again a bounded number of times; a refusal
(a wrong token, a hash mismatch, a format it cannot run) is final. Either way the error names the target.
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from components import timing

if TYPE_CHECKING:  # the agent's install has no config (no YAML): only the host reads params.yaml
    from components.config import TargetConfig

RETRY_DELAYS = (1.0, 2.0, 4.0)  # seconds before each retry of a request that did not get through


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


def _call(device: Device, path: str, body: dict | None, timeout: float) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(device.url.rstrip("/") + path, data=data, method="GET" if body is None else "POST")
    req.add_header("Authorization", f"Bearer {device.token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    ctx = ssl.create_default_context(cafile=device.ca_file) if device.url.startswith("https") else None
    last = ""
    for delay in (*RETRY_DELAYS, None):
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            message = _error(e)
            if e.code != 503:  # busy is worth waiting for; every other refusal is final
                raise DeviceFailed(device, f"refused ({e.code}): {message}", refused=True) from e
            last = message
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            if isinstance(reason, ssl.SSLCertVerificationError):  # a wrong certificate stays wrong: no retry
                raise DeviceFailed(device, f"its certificate is not trusted: {reason}", refused=True) from e
            last = f"{reason}"
        if delay is None:
            break
        time.sleep(delay)
    raise DeviceFailed(device, f"stopped answering after {len(RETRY_DELAYS) + 1} tries: {last}", refused=False)


def _error(e: urllib.error.HTTPError) -> str:
    try:
        return json.loads(e.read())["error"]
    except (ValueError, KeyError, OSError):
        return e.reason


def info(device: Device, timeout: float = 10.0) -> timing.DeviceFacts:
    """What the agent says it is (its device's facts)."""
    return timing.DeviceFacts.model_validate(_call(device, "/v1/info", None, timeout)["device"])


def measure(
    device: Device, paths: list[str], batch_file: str, s: timing.Settings, start: str, timeout: float
) -> timing.Raw:
    """Time `paths` on the device as timing.run times them here (`start` is one of them: the model that opens the
    runtime before peak memory is reset). Returns what the agent measured, with its CPUs and its device's facts."""
    models = [
        {
            "name": str(i),
            "format": timing.format_of(p),
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
    return timing.Raw.model_validate(_call(device, "/v1/measure", body, timeout))
