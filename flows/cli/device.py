"""`edgekd device serve|check`: the agent that measures on the edge box itself (flows/infra/device), and a check
from the host that it answers. Neither imports torch, Prefect or MLflow: the agent installs with
`pip install "edgekd[device]"`."""

from __future__ import annotations

import ipaddress
import os
import stat
import sys
from pathlib import Path

from flows.cli.common import error
from flows.cli.exits import Exit


def add_parser(sub) -> None:
    device = sub.add_parser("device", help="measure on the edge device itself: serve the agent there, check it here")
    dsub = device.add_subparsers(dest="device_command", required=True)
    s = dsub.add_parser("serve", help="serve the device agent on this machine (the edge box) until stopped")
    s.add_argument("--port", type=int, required=True, help="TCP port to listen on (0: any free one, printed)")
    s.add_argument("--token-file", required=True, help="file holding the token clients must send (keep it 0600)")
    s.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 to be reachable from others)"
    )
    s.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: the host's)")
    s.add_argument("--cpus", default=None, help="CPUs to pin the timing to, e.g. 0 or 2,3 (default: not pinned)")
    s.add_argument("--tls-cert", default=None, help="certificate (PEM) to serve HTTPS with; needs --tls-key")
    s.add_argument("--tls-key", default=None, help="the certificate's private key (PEM)")
    s.add_argument(
        "--cpu-quota",
        type=float,
        default=None,
        help="emulate a slower device: limit the agent to this share of one CPU (0 < Q <= 1) with a cgroup",
    )
    s.add_argument("--max-mb", type=float, default=64.0, help="largest request accepted, MiB (default 64)")
    s.add_argument("--queue", type=int, default=4, help="requests that may wait behind the running one (default 4)")
    s.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="time limit of one whole request: its body, its wait in the queue and its measurement, seconds "
        "(default 300)",
    )
    s.add_argument(
        "--read-timeout",
        type=float,
        default=10.0,
        help="time a connection has for its TLS handshake, request line and headers, and the longest silence "
        "while its body arrives, seconds (default 10)",
    )
    s.add_argument(
        "--max-connections",
        type=int,
        default=16,
        help="connections served at once; past that a new one is closed at once (default 16)",
    )
    s.set_defaults(fn=cmd_serve)
    c = dsub.add_parser("check", help="whether a device agent answers, and what device it runs on")
    c.add_argument("url", help="the agent's URL, e.g. http://raspberrypi.local:8765")
    c.add_argument("--token-file", default=None, help="file holding the token (default: $EDGEKD_DEVICE_TOKEN)")
    c.add_argument(
        "--ca-file", default=None, help="CA certificate that verifies an HTTPS agent (default: the system's)"
    )
    c.add_argument("--json", action="store_true", help="print the agent's facts as JSON")
    c.set_defaults(fn=cmd_check)


def read_token(path: str) -> str:
    """The token in `path`; warns when others may read the file."""
    p = Path(path)
    token = p.read_text().strip()
    if not token:
        raise ValueError(f"token file {path} is empty")
    if p.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(f"warning: token file {path} can be read by others; chmod 600 it", file=sys.stderr)
    return token


def _fail(message: str, code: Exit = Exit.ERROR) -> int:
    error(message)
    return code


def _cpus(text: str | None) -> tuple[int, ...] | None:
    return tuple(int(c) for c in text.split(",")) if text else None


def cmd_serve(args) -> int:
    from flows.infra.device.agent import Agent, sweep
    from flows.infra.device.emulate import limit_cpu
    from flows.infra.device.server import listen

    if bool(args.tls_cert) != bool(args.tls_key):
        return _fail("--tls-cert and --tls-key go together")
    try:
        token = read_token(args.token_file)
        cpus = _cpus(args.cpus)
        agent = Agent(
            token=token,
            threads=args.threads,
            cpus=cpus,
            max_bytes=int(args.max_mb * (1 << 20)),
            queue=args.queue,
            timeout=args.timeout,
            read_timeout=args.read_timeout,
            max_connections=args.max_connections,
        )
        agent.emulation = limit_cpu(args.cpu_quota) if args.cpu_quota is not None else "none"
    except (OSError, ValueError, RuntimeError) as e:
        return _fail(str(e))
    for folder in sweep(agent.work_dir):
        print(f"removed {folder}, left by an agent that was killed mid-measurement", file=sys.stderr)
    httpd = listen(agent, args.host, args.port, args.tls_cert, args.tls_key)
    scheme = "https" if args.tls_cert else "http"
    host, port = httpd.server_address[:2]
    if not args.tls_cert and not ipaddress.ip_address(host).is_loopback:
        print("warning: serving plain HTTP beyond this machine: the token crosses the network in clear; use --tls-cert")
    print(
        f"edgekd device agent at {scheme}://{host}:{port} (pid {os.getpid()}; emulation: {agent.emulation})", flush=True
    )
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
    return Exit.OK


def cmd_check(args) -> int:
    from flows.infra.device.client import Device, DeviceFailed, info
    from flows.infra.environment import DEVICE_TOKEN

    try:
        token = read_token(args.token_file) if args.token_file else DEVICE_TOKEN.get()
    except (OSError, ValueError) as e:
        return _fail(str(e))
    if not token:
        return _fail(f"no token: give --token-file or set {DEVICE_TOKEN.name}")
    try:
        facts = info(Device("check", args.url, token, args.ca_file))
    except DeviceFailed as e:
        return _fail(str(e), Exit.DEVICE)
    if args.json:
        print(facts.model_dump_json(indent=2))
        return Exit.OK
    d = facts
    print(
        f"{args.url} answers: {d.cpu}, {d.cores} cores, {d.os}; ONNX Runtime {d.onnxruntime}, formats "
        f"{', '.join(d.formats)}; threads {d.threads or 'as asked'}, CPUs {d.cpus or 'not pinned'}; "
        f"emulation {d.emulation}"
    )
    return Exit.OK
