"""The device agent's HTTP(S) side: what a connection may cost it before it has shown the token.

The accept loop only accepts: it refuses a connection at once, unread, when `max_connections` are already open,
and hands every other one to a thread of its own. There the TLS handshake, the request line and the headers must
all arrive within `read_timeout` of the connection (one deadline, not one per read: a client that sends a byte at a
time gains nothing). A request without the token is answered 401 and closed: not a byte of its body is read. With
the token, the body may take until the request's whole time limit (`timeout`, which also covers its wait and its
measurement), and no read waits longer than `read_timeout`. One request per connection.
"""

from __future__ import annotations

import io
import json
import socket
import ssl
import sys
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from flows.infra.device.agent import Agent, Answer, Refused, parse

DRAIN = 16 << 20  # bytes of an oversize request's body read (with the token) so that its client reads the 413
ROUTES = "GET /v1/info, GET /v1/queue, GET /v1/requests/ID, POST /v1/measure"


class _Deadline(io.RawIOBase):
    """A connection's reads, each within `read_timeout` and all of them within `deadline` (time.monotonic())."""

    def __init__(self, sock: socket.socket, read_timeout: float, deadline: float):
        self.sock, self.read_timeout, self.deadline = sock, read_timeout, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request did not arrive within its time limit")
        self.sock.settimeout(min(self.read_timeout, left))
        return self.sock.recv_into(buf)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: AgentServer

    def __init__(self, request, client_address, server: AgentServer, started: float):
        self.agent, self.started = server.agent, started
        self.timeout = server.agent.read_timeout  # every read and write of the socket (StreamRequestHandler)
        super().__init__(request, client_address, server)

    def setup(self):
        super().setup()
        self.rfile.close()  # the socket's own reader, replaced by one with a deadline (closed, it frees the socket)
        headers_by = self.started + min(self.timeout, self.agent.timeout)
        self.reader = _Deadline(self.connection, self.timeout, headers_by)
        self.rfile = io.BufferedReader(self.reader)

    def log_message(self, format, *args):  # one line a request, never a header (the token is in one)
        print(f"{self.address_string()} {self.command} {self.path} -> {args[1] if len(args) > 1 else ''}", flush=True)

    def log_error(self, format, *args):
        print(f"{self.address_string()}: {format % args}", flush=True)

    def _answer(self, status: HTTPStatus | int, body: dict, rid: str | None = None) -> None:
        data = json.dumps(body).encode()
        self.connection.settimeout(self.timeout)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if rid:
            self.send_header("X-Request-Id", rid)
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True

    def _guard(self) -> bool:
        """The token, or a 401 and the connection closed, its body unread: a client without the token gets no
        work done here, and holds its connection no longer than it took to send its headers."""
        if self.agent.authorized(self.headers.get("Authorization")):
            return True
        self._answer(HTTPStatus.UNAUTHORIZED, {"error": "missing or wrong token"})
        return False

    def handle_expect_100(self) -> bool:  # `Expect: 100-continue`: no "go ahead" without the token
        return self._guard() and super().handle_expect_100()

    def do_GET(self):
        path = self.path
        if path not in ("/v1/info", "/v1/queue") and not path.startswith("/v1/requests/"):
            return self._answer(HTTPStatus.NOT_FOUND, {"error": f"no {path}: {ROUTES}"})
        if not self._guard():
            return
        if path == "/v1/info":
            return self._answer(HTTPStatus.OK, {"agent": "edgekd-device", "device": self.agent.facts().model_dump()})
        if path == "/v1/queue":
            running, waiting = self.agent.load()
            return self._answer(
                HTTPStatus.OK,
                {
                    "running": running,
                    "waiting": waiting,
                    "queue": self.agent.queue,
                    "connections": self.server.connections,
                    "max_connections": self.agent.max_connections,
                },
            )
        self._answer(HTTPStatus.OK, self.agent.record(path.removeprefix("/v1/requests/")).as_json())

    def do_POST(self):
        if self.path != "/v1/measure":
            return self._answer(HTTPStatus.NOT_FOUND, {"error": f"no {self.path}: {ROUTES}"})
        if not self._guard():
            return
        rid = self.headers.get("X-Request-Id") or uuid.uuid4().hex
        try:
            self.agent.admit(rid)
        except Refused as e:
            return self._answer(e.status, {"error": str(e)})
        answer = Answer(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "the agent failed; its log says why"})
        try:
            answer = self._measure(rid)
        finally:
            self.agent.finish(rid, answer)  # before answering: a client whose connection broke can still ask
        self._answer(answer.status, answer.body, rid)

    def _measure(self, rid: str) -> Answer:
        self.reader.deadline = self.started + self.agent.timeout  # the body, the wait and the measurement: one limit
        length = self.headers.get("Content-Length", "")
        length = int(length) if length.isdigit() else -1
        try:
            if length < 0:
                raise Refused(HTTPStatus.LENGTH_REQUIRED, "a measurement request states its Content-Length")
            if length > self.agent.max_bytes:
                self._drain(length)
                raise Refused(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"request of {length} bytes is over the agent's limit of {self.agent.max_bytes} bytes",
                )
            body = self.rfile.read(length)
            if len(body) < length:  # the client hung up: nothing to run, and it may send it again
                return Answer(HTTPStatus.REQUEST_TIMEOUT, {"error": f"the body ended after {len(body)} bytes"})
            raw = self.agent.measure(parse(body), rid, self.reader.deadline)
            return Answer(HTTPStatus.OK, raw.model_dump(mode="json"))
        except Refused as e:
            return Answer(e.status, {"error": str(e)})
        except TimeoutError:
            return Answer(HTTPStatus.REQUEST_TIMEOUT, {"error": "the request body did not arrive in time"})

    def _drain(self, length: int) -> None:
        """Read and drop an oversize request's body, up to DRAIN bytes and within its time limit, so that its
        client reads the 413 rather than a reset connection; past that the connection is closed on it."""
        left = min(length, DRAIN)
        try:
            while left > 0 and (chunk := self.rfile.read(min(left, 1 << 16))):
                left -= len(chunk)
        except TimeoutError:
            pass


class AgentServer(ThreadingHTTPServer):
    """The agent's server: at most `agent.max_connections` connections at once, each in its own thread, TLS
    (`tls`) negotiated there within the connection's deadline."""

    daemon_threads = True
    request_queue_size = 64  # the accept loop never blocks, so the backlog only absorbs bursts

    def __init__(self, agent: Agent, address: tuple[str, int], tls: ssl.SSLContext | None = None):
        self.agent, self.tls = agent, tls
        self._slots = threading.BoundedSemaphore(agent.max_connections)
        self._open, self._lock = 0, threading.Lock()
        super().__init__(address, Handler)

    @property
    def connections(self) -> int:
        """Connections being served now."""
        return self._open

    def _count(self, change: int) -> None:
        with self._lock:
            self._open += change

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):  # refused at once: no thread, no handshake, no read
            self.shutdown_request(request)
            print(f"{client_address[0]}: refused, {self.agent.max_connections} connections open", flush=True)
            return
        self._count(1)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._count(-1)
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._count(-1)
            self._slots.release()

    def finish_request(self, request, client_address):
        """In the connection's thread: TLS first where it is served (the handshake's deadline is the headers'),
        then the request."""
        started = time.monotonic()
        connection = request
        if self.tls:
            request.settimeout(self.agent.read_timeout)  # one deadline for the whole handshake (ssl's do_handshake)
            connection = self.tls.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
            try:
                connection.do_handshake()
            except OSError as e:  # a time-out, a client that hung up, or one that speaks no TLS
                print(f"{client_address[0]}: no TLS handshake: {e}", flush=True)
                self.shutdown_request(connection)
                return
        try:
            Handler(connection, client_address, self, started)
        finally:
            if connection is not request:
                self.shutdown_request(connection)

    def handle_error(self, request, client_address):  # one line, not a traceback (e.g. a client that hung up)
        print(f"{client_address[0]}: {sys.exc_info()[1]!r}", flush=True)


def listen(agent: Agent, host: str, port: int, cert: str | None = None, key: str | None = None) -> AgentServer:
    """An HTTP(S) server of `agent` bound to host:port (port 0: any free one), not yet serving."""
    tls = None
    if cert:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert, key)
    return AgentServer(agent, (host, port), tls)
