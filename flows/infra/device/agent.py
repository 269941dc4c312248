"""The device agent: a small HTTP server on the edge box that times what the host sends it, as the host times its own.

A request carries the models (ONNX, LiteRT `.tflite`, or ExecuTorch `.pte` where ExecuTorch is installed; each with
its sha256), a
batch (.npy, no pickles) and the measurement settings. The agent checks the token (constant time), the size, the
format and every hash, writes the files to a temporary folder, runs the same children as the host
(components.timing: interleaved rounds pinned to its CPUs, then peak memory per model) and answers with the rounds,
the peaks and the device's facts. The folder is gone before the answer leaves. One measurement runs at a time; up to
`queue` more wait, and past that a request is told "busy". One time limit covers the whole request (its body, its
wait and its measurement). Each request has an id (the client's `X-Request-Id`): the agent remembers how the last
ones ended, so a client whose connection broke asks about its request instead of sending it again. The HTTP side
(TLS, time-outs, the connection cap) is server.py.

It imports the standard library, numpy, onnxruntime, the LiteRT interpreter and pydantic only: `pip install
"edgekd[device]"` is enough, on x86_64 and on a 64-bit ARM board. With `executorch` installed beside it (which brings
torch, into the measuring children only) it also times `.pte` programs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import json
import math
import os
import platform
import re
import shutil
import tempfile
import threading
import time
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path

import numpy as np

from components import timing
from components.formats import runtime

ROOT = Path(__file__).resolve().parents[3]
FORMATS = tuple(runtime.available())  # what this agent can time
PICKLE_PROTOCOL_2_PLUS = b"\x80"
REMEMBERED = 64  # finished requests whose answers the agent keeps for clients whose connection broke
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
FOLDER = "edgekd-agent-"  # a request's temporary folder: FOLDER + the agent's pid + "-" + a random part


class Refused(Exception):
    """A request the agent will not run, with the HTTP status that says why."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Answer:
    """What a request was answered: its HTTP status and its JSON body."""

    status: int
    body: dict


@dataclass
class Record:
    """A request the agent has heard of, by its id: `receiving` (its body), `waiting` (its turn), `running`, `done`
    (with its answer), or `unknown`: asked about before it arrived, so it is refused if it ever does."""

    id: str
    state: str
    answer: Answer | None = None

    def as_json(self) -> dict:
        a = self.answer
        return {"id": self.id, "state": self.state, "status": a and a.status, "answer": a and a.body}


@dataclass
class Agent:
    """What the agent enforces and how it measures: the token, `threads` (None: the host's setting) and `cpus`
    to pin to, the largest request in bytes, how many requests may wait, the time limit of one whole request in
    seconds, the time a connection has to send its request line and headers (and the longest silence while its body
    arrives), how many connections it serves at once, where its temporary files go, and how a slower device is
    emulated (stated in its facts)."""

    token: str
    threads: int | None = None
    cpus: tuple[int, ...] | None = None
    max_bytes: int = 64 << 20
    queue: int = 4
    timeout: float = 300.0
    read_timeout: float = 10.0
    max_connections: int = 16
    work_dir: str | None = None
    emulation: str = "none"
    _running: threading.Lock = field(default_factory=threading.Lock)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _records: OrderedDict[str, Record] = field(default_factory=OrderedDict)

    def __post_init__(self):
        for name, low in (("timeout", 0), ("read_timeout", 0), ("max_bytes", 0), ("max_connections", 0)):
            if not getattr(self, name) > low:
                raise ValueError(f"the agent's {name} must be over {low}, got {getattr(self, name)}")
        if self.queue < 0:
            raise ValueError(f"the agent's queue must be 0 or more, got {self.queue}")

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

    def admit(self, rid: str) -> None:
        """Take a request under the id its client gave it; refuse an id seen before (a second copy is never run)."""
        if not REQUEST_ID.fullmatch(rid):
            raise Refused(HTTPStatus.BAD_REQUEST, f"X-Request-Id must be 1-64 of A-Z a-z 0-9 . _ -, got {rid[:80]!r}")
        with self._lock:
            if rid in self._records:
                raise Refused(
                    HTTPStatus.CONFLICT,
                    f"request {rid} is already known here ({self._records[rid].state}): it is not run twice; "
                    "send a new request under a new id",
                )
            self._remember(Record(rid, "receiving"))

    def finish(self, rid: str, answer: Answer) -> None:
        with self._lock:
            self._records[rid] = Record(rid, "done", answer)

    def record(self, rid: str) -> Record:
        """What became of request `rid`. One the agent has not heard of is recorded as `unknown` and refused if it
        arrives later: the client that asked may then send it again, certain that it runs once."""
        with self._lock:
            if rid not in self._records:
                self._remember(Record(rid, "unknown"))
            return self._records[rid]

    def load(self) -> tuple[int, int]:
        """How many requests are running (0 or 1) and how many wait."""
        with self._lock:
            states = [r.state for r in self._records.values()]
        return states.count("running"), states.count("waiting")

    def _remember(self, record: Record) -> None:
        self._records[record.id] = record
        finished = [k for k, r in self._records.items() if r.state in ("done", "unknown")]
        for k in finished[: max(0, len(self._records) - REMEMBERED)]:
            del self._records[k]

    def _set(self, rid: str, state: str) -> None:
        with self._lock:
            self._records[rid].state = state

    def measure(self, job: Job, rid: str, deadline: float) -> timing.Raw:
        """Run one checked request, waiting for the one before it, all by `deadline` (time.monotonic()); refuse it
        when too many wait already."""
        with self._lock:
            if sum(r.state in ("waiting", "running") for r in self._records.values()) >= self.queue + 1:
                raise Refused(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    f"busy: one measurement is running and {self.queue} wait (the agent's --queue); try again later",
                )
            self._records[rid].state = "waiting"
        if not self._running.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise Refused(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"busy: its turn did not come within the agent's time limit of {self.timeout:g} s; not measured",
            )
        try:
            self._set(rid, "running")
            return self._measure(job, deadline)
        finally:
            self._running.release()

    def _measure(self, job: Job, deadline: float) -> timing.Raw:
        s = job.settings
        settings = timing.Settings(
            self.threads or s.threads, s.warmup_runs, s.timed_runs, s.rounds, self.cpus, memory=s.memory
        )
        with tempfile.TemporaryDirectory(prefix=f"{FOLDER}{os.getpid()}-", dir=self.work_dir) as tmp:
            batch = Path(tmp) / "batch.npy"
            batch.write_bytes(job.batch)
            paths = []
            for i, (name, data) in enumerate(job.models.items()):
                paths.append(str(Path(tmp) / f"{i}.{job.formats[name]}"))
                Path(paths[-1]).write_bytes(data)
            start = paths[list(job.models).index(job.start)]
            try:
                raw = timing.run(paths, str(batch), settings, start, math.inf, ROOT, deadline)
            except timing.MeasurementTimeout as e:
                raise Refused(
                    HTTPStatus.GATEWAY_TIMEOUT, f"{e}: over the agent's time limit of {self.timeout:g} s a request"
                ) from e
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
        memory = req["settings"].get("memory", True)  # False: rounds added to a measurement, memory taken already
        if not isinstance(memory, bool):
            raise ValueError(f"settings.memory {memory!r}: expected true or false")
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
        timing.Settings(**s, memory=memory),
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
