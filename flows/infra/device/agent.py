"""The device agent: a small HTTP server on the edge box that times what the host sends it, as the host times its own.

A request carries the models (ONNX, or ExecuTorch `.pte` where ExecuTorch is installed; each with its sha256), a
batch (.npy, no pickles) and the measurement settings. The agent checks the token (constant time), the size, the
format and every hash, writes the files to a temporary folder, runs the same children as the host
(components.timing: interleaved rounds pinned to its CPUs, then peak memory per model) and answers with the rounds,
the peaks and the device's facts. The folder is gone before the answer leaves. One measurement runs at a time; up to
`queue` more wait, and past that a request is told "busy".

It imports the standard library, numpy, onnxruntime and pydantic only: `pip install "edgekd[device]"` is enough. With
`executorch` installed beside it (which brings torch, into the measuring children only) it also times `.pte` programs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import json
import os
import platform
import shutil
import ssl
import tempfile
import threading
import zipfile
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from components import timing

ROOT = Path(__file__).resolve().parents[3]
FORMATS = tuple(timing.formats())  # what this agent can time
PICKLE_PROTOCOL_2_PLUS = b"\x80"
DRAIN = 16 << 20  # bytes of a refused request's body read before answering
FOLDER = "edgekd-agent-"  # a request's temporary folder: FOLDER + the agent's pid + "-" + a random part


class Refused(Exception):
    """A request the agent will not run, with the HTTP status that says why."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Agent:
    """What the agent enforces and how it measures: the token, `threads` (None: the host's setting) and `cpus`
    to pin to, the largest request in bytes, how many requests may wait, the time limit of one request in seconds,
    where its temporary files go, and how a slower device is emulated (stated in its facts)."""

    token: str
    threads: int | None = None
    cpus: tuple[int, ...] | None = None
    max_bytes: int = 64 << 20
    queue: int = 4
    timeout: float = 300.0
    work_dir: str | None = None
    emulation: str = "none"
    _running: threading.Lock = field(default_factory=threading.Lock)
    _count: threading.Lock = field(default_factory=threading.Lock)
    _waiting: int = 0

    def authorized(self, header: str | None) -> bool:
        scheme, _, given = (header or "").partition(" ")
        return scheme == "Bearer" and hmac.compare_digest(given.encode(), self.token.encode())

    def facts(self) -> timing.DeviceFacts:
        """The device as the answer states it: CPU, cores, OS, runtime versions, how it measures. ONNX Runtime is
        loaded by the measuring children only (it leaves a file in TMPDIR), so its version is read from its
        package's metadata."""
        from importlib.metadata import version

        return timing.DeviceFacts(
            cpu=_cpu_model(),
            cores=os.cpu_count(),
            machine=platform.machine(),
            os=platform.platform(),
            python=platform.python_version(),
            onnxruntime=version("onnxruntime"),
            numpy=np.__version__,
            formats=list(FORMATS),
            threads=self.threads,
            cpus=list(self.cpus) if self.cpus else None,
            max_bytes=self.max_bytes,
            queue=self.queue,
            timeout_s=self.timeout,
            emulation=self.emulation,
            rapl=timing.RAPL.exists(),
        )

    def measure(self, job: Job) -> timing.Raw:
        """Run one checked request, waiting for the one before it; refuse it when too many wait already."""
        with self._count:
            if self._waiting >= self.queue + 1:
                raise Refused(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    f"busy: one measurement is running and {self.queue} wait (the agent's --queue); try again later",
                )
            self._waiting += 1
        try:
            if not self._running.acquire(timeout=self.timeout):
                raise Refused(HTTPStatus.SERVICE_UNAVAILABLE, f"busy: waited {self.timeout:.0f} s for the agent")
            try:
                return self._measure(job)
            finally:
                self._running.release()
        finally:
            with self._count:
                self._waiting -= 1

    def _measure(self, job: Job) -> timing.Raw:
        s = job.settings
        settings = timing.Settings(self.threads or s.threads, s.warmup_runs, s.timed_runs, s.rounds, self.cpus)
        with tempfile.TemporaryDirectory(prefix=f"{FOLDER}{os.getpid()}-", dir=self.work_dir) as tmp:
            batch = Path(tmp) / "batch.npy"
            batch.write_bytes(job.batch)
            paths = []
            for i, (name, data) in enumerate(job.models.items()):
                paths.append(str(Path(tmp) / f"{i}.{job.formats[name]}"))
                Path(paths[-1]).write_bytes(data)
            start = paths[list(job.models).index(job.start)]
            try:
                raw = timing.run(paths, str(batch), settings, start, timeout=self.timeout, cwd=ROOT)
            except timing.MeasurementTimeout as e:
                raise Refused(HTTPStatus.GATEWAY_TIMEOUT, f"{e}: over the agent's time limit") from e
            except RuntimeError as e:
                raise Refused(HTTPStatus.UNPROCESSABLE_ENTITY, f"this agent cannot run the model(s): {e}") from e
        return raw.model_copy(update={"cpus": list(self.cpus) if self.cpus else None, "device": self.facts()})


def sweep(work_dir: str | None) -> list[Path]:
    """Remove the request folders that agents killed mid-measurement left (SIGKILL skips clean-up): those whose
    agent's process is gone. Returns what it removed."""
    removed = []
    for folder in Path(work_dir or tempfile.gettempdir()).glob(f"{FOLDER}*-*"):
        pid = folder.name[len(FOLDER) :].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def pickled(data: bytes) -> bool:
    """A pickle (protocol 2 and later start with 0x80) or a torch.save zip (a data.pkl inside)."""
    if data[:1] == PICKLE_PROTOCOL_2_PLUS:
        return True
    if data[:2] == b"PK":
        try:
            return any(n.endswith(".pkl") for n in zipfile.ZipFile(io.BytesIO(data)).namelist())
        except zipfile.BadZipFile:
            return False
    return False


@dataclass(frozen=True)
class Job:
    """A checked measurement request: the models' bytes and formats by name, the one that opens the runtime, the
    batch (.npy bytes) and the settings."""

    models: dict[str, bytes]
    formats: dict[str, str]
    start: str
    batch: bytes
    settings: timing.Settings


def parse(body: bytes) -> Job:
    """A measurement request, decoded and checked: every model's format, content and sha256, and the batch.
    Raises Refused naming what is wrong; nothing is written before it passes."""
    try:
        req = json.loads(body)
        models = [{**m, "bytes": base64.b64decode(m["data"], validate=True)} for m in req["models"]]
        batch = base64.b64decode(req["batch"], validate=True)
        s = {k: int(req["settings"][k]) for k in ("threads", "warmup_runs", "timed_runs", "rounds")}
        if min(s.values()) < 0 or min(s["threads"], s["timed_runs"], s["rounds"]) < 1:
            raise ValueError(f"settings out of range: {s}")
    except (ValueError, KeyError, TypeError, binascii.Error) as e:
        raise Refused(HTTPStatus.BAD_REQUEST, f"malformed measurement request: {e!r}") from e
    if not models or req.get("start") not in [m.get("name") for m in models]:
        raise Refused(HTTPStatus.BAD_REQUEST, "a request names its models and one of them as `start`")
    for m in models:
        _check(m)
    try:
        np.load(io.BytesIO(batch), allow_pickle=False)
    except ValueError as e:
        raise Refused(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"the batch is not a plain .npy array: {e}") from e
    return Job(
        {m["name"]: m["bytes"] for m in models},
        {m["name"]: m["format"] for m in models},
        req["start"],
        batch,
        timing.Settings(**s),
    )


def _check(m: dict) -> None:
    """One model of a request: a format this agent runs, no pickle, and bytes that hash to its sha256."""
    if m.get("format") not in FORMATS:
        raise Refused(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            f"model {m.get('name')!r}: format {m.get('format')!r} cannot run here (this agent runs "
            f"{', '.join(FORMATS)})",
        )
    if pickled(m["bytes"]):
        raise Refused(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"model {m['name']!r} is pickled: refused, never loaded")
    got = hashlib.sha256(m["bytes"]).hexdigest()
    if not hmac.compare_digest(got, str(m.get("sha256"))):
        raise Refused(
            HTTPStatus.UNPROCESSABLE_ENTITY, f"model {m['name']!r}: sha256 {got} does not match {m.get('sha256')}"
        )


class Handler(BaseHTTPRequestHandler):
    agent: Agent  # set on the class `serve` builds
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # one line a request, never a header (the token is in one)
        print(f"{self.address_string()} {self.command} {self.path} -> {args[1] if len(args) > 1 else ''}", flush=True)

    def _answer(self, status: HTTPStatus, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True

    def _guard(self) -> bool:
        if not self.agent.authorized(self.headers.get("Authorization")):
            self._drain()
            self._answer(HTTPStatus.UNAUTHORIZED, {"error": "missing or wrong token"})
            return False
        return True

    def _drain(self) -> None:
        """Read and drop a refused request's body, up to DRAIN bytes, so that its client reads the answer rather
        than a reset connection; past that the connection is closed on it."""
        left = min(int(self.headers.get("Content-Length") or 0), DRAIN)
        self.connection.settimeout(10)
        while left > 0 and (chunk := self.rfile.read(min(left, 1 << 16))):
            left -= len(chunk)

    def do_GET(self):
        if self.path != "/v1/info":
            return self._answer(HTTPStatus.NOT_FOUND, {"error": f"no {self.path}: GET /v1/info, POST /v1/measure"})
        if self._guard():
            self._answer(HTTPStatus.OK, {"agent": "edgekd-device", "device": self.agent.facts().model_dump()})

    def do_POST(self):
        if self.path != "/v1/measure":
            return self._answer(HTTPStatus.NOT_FOUND, {"error": f"no {self.path}: GET /v1/info, POST /v1/measure"})
        if not self._guard():
            return
        try:
            length = int(self.headers.get("Content-Length", "-1"))
            if length < 0:
                raise Refused(HTTPStatus.LENGTH_REQUIRED, "a measurement request states its Content-Length")
            if length > self.agent.max_bytes:
                self._drain()
                raise Refused(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"request of {length} bytes is over the agent's limit of {self.agent.max_bytes} bytes",
                )
            self.connection.settimeout(self.agent.timeout)
            raw = self.agent.measure(parse(self.rfile.read(length)))
            self._answer(HTTPStatus.OK, raw.model_dump(mode="json"))
        except Refused as e:
            self._answer(e.status, {"error": str(e)})
        except TimeoutError:
            self._answer(HTTPStatus.REQUEST_TIMEOUT, {"error": "the request body did not arrive in time"})


def server(agent: Agent, host: str, port: int, cert: str | None = None, key: str | None = None) -> ThreadingHTTPServer:
    """An HTTP(S) server of `agent` bound to host:port (port 0: any free one), not yet serving."""
    handler = type("AgentHandler", (Handler,), {"agent": agent})
    httpd = ThreadingHTTPServer((host, port), handler)
    httpd.daemon_threads = True
    if cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    return httpd
