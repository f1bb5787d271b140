"""Command line: `cds serve` (the service under uvicorn) and `cds demo` (fire a demo hook, print the cards).

The one seam with uvicorn's HTTP layer is `EdgeHTTP`, an asyncio.Protocol of our own that uvicorn makes
for every connection through its public `Config(http=EdgeHTTP)` option. It creates uvicorn's httptools
protocol with the same keyword arguments and hands it every asyncio.Protocol call (connection_made,
data_received, eof_received, connection_lost, pause_writing, resume_writing), after doing what uvicorn
does not:
  * TCP_NODELAY on every accepted socket: uvicorn's multi-worker mode hands each worker a socket
    rebuilt from a file descriptor, whose `proto` is 0, so asyncio no longer sets it (uvicorn #3149; a
    44 ms p50 was measured here);
  * the request head (request line and headers) bounded to CDS_MAX_HEADER_BYTES, counted before the
    bytes reach uvicorn (httptools keeps a header whole: 4 sockets each sending a 64 MB header took RSS
    from 94 to 410 MB): beyond it a raw 431 and close (issue 18);
  * the time to send the head bounded to CDS_HEADER_TIMEOUT_S from its first byte (or from the
    connection), and the body to CDS_BODY_TIMEOUT_S after the head (200 slowloris sockets were held for
    45 s): timers from loop.call_later; beyond them a raw 408 (in a head) or a close (in a body).
    Idle keep-alive connections keep uvicorn's own timeout.
To know where a head and a request end, it feeds the same bytes to an httptools parser of its own
(httptools' public callback interface, `_Framing`: two callbacks, a few µs per request).
CDS_MAX_CONNECTIONS is uvicorn's own `limit_concurrency` (503 beyond it).

Several workers: `Supervisor` starts each worker with its own `SO_REUSEPORT` listening socket on the
same address, so the kernel spreads connections across workers (uvicorn's shared socket let one worker
take 97-100% of the CPU, bench/results.md), restarts a worker that dies, and stops them all on SIGTERM
or SIGINT. Public APIs only: multiprocessing, uvicorn.Config and uvicorn.Server.run(sockets).
  * A worker exits when the supervisor dies (Linux PR_SET_PDEATHSIG, and a parent-pid check every
    second elsewhere): after a SIGKILL of the supervisor its workers used to keep serving.
  * The supervisor refuses to start when anything already listens on the port (e.g. an older
    generation's workers): with SO_REUSEPORT a new generation used to share the port silently, and
    119 of 200 requests were answered by the old one with the old settings.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import functools
import logging
import multiprocessing
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import TYPE_CHECKING, Any, cast

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from cds.settings import Settings

if TYPE_CHECKING:  # httpx is imported by `cds demo` only, not by the server
    import httpx

log = logging.getLogger("cds.cli")


def _raw_response(status: bytes, text: bytes) -> bytes:
    """A whole HTTP/1.1 response that closes the connection (sent before any ASGI cycle exists)."""
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: "
        + str(len(text)).encode()
        + b"\r\nconnection: close\r\n\r\n"
        + text
    )


_TOO_LARGE = _raw_response(b"431 Request Header Fields Too Large", b"request head too large\n")
_TOO_SLOW = _raw_response(b"408 Request Timeout", b"request head not received in time\n")


@dataclass(frozen=True)
class EdgeLimits:
    max_header_bytes: int
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int | None


@functools.cache
def edge_limits() -> EdgeLimits:
    """From the settings, once per process (every worker reads its own environment)."""
    s = Settings()
    return EdgeLimits(s.max_header_bytes, s.header_timeout_s, s.body_timeout_s, s.max_connections)


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


class _Framing:
    """httptools' parser callbacks for the two events the limits need: a request's head is in, and the
    whole request is in. The parser calls only the callbacks an object has (nothing per header)."""

    def __init__(self, head_done: Callable[[], None], request_done: Callable[[], None]) -> None:
        self.on_headers_complete = head_done
        self.on_message_complete = request_done


class EdgeHTTP(asyncio.Protocol):
    """TCP_NODELAY, a bounded request head and read deadlines around uvicorn's own HTTP protocol.

    uvicorn makes one per connection (`Config(http=EdgeHTTP)`) with the keyword arguments it gives
    any protocol class; they go unchanged to the uvicorn protocol this one delegates to.
    """

    def __init__(self, **uvicorn_args: Any) -> None:
        self.http = HttpToolsProtocol(**uvicorn_args)
        self.limits = edge_limits()
        self.framing: httptools.HttpRequestParser | None = httptools.HttpRequestParser(
            _Framing(self._head_done, self._request_done)
        )
        self.transport: asyncio.Transport | None = None
        self.in_head = True  # the bytes arriving belong to a request head
        self.head_bytes = 0  # of the current head so far
        self.tail = b""  # its last 3 bytes: a CRLFCRLF may be split across reads
        self.deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream transport (uvloop's is no subclass)
        set_nodelay(transport)
        self.http.connection_made(self.transport)
        self._arm(self.limits.header_timeout_s)  # a connection that never says anything

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.http.connection_lost(exc)

    def eof_received(self) -> None:
        self.http.eof_received()  # None: the transport closes itself, as for uvicorn's protocol

    def pause_writing(self) -> None:
        self.http.pause_writing()

    def resume_writing(self) -> None:
        self.http.resume_writing()

    def data_received(self, data: bytes) -> None:
        if self.in_head and self._head_too_large(data):
            self._refuse(_TOO_LARGE)
            return
        if self.framing is not None:
            try:
                self.framing.feed_data(data)  # may call _head_done / _request_done
            except httptools.HttpParserError:  # uvicorn's own parser answers it (400, or an upgrade)
                self.framing = None
                self._disarm()
        self.http.data_received(data)

    def _head_too_large(self, data: bytes) -> bool:
        if self.deadline is None:
            self._arm(self.limits.header_timeout_s)  # the first byte of a new head
        seen = self.tail + data
        end = seen.find(b"\r\n\r\n")
        self.head_bytes += len(data) if end < 0 else end + 4 - len(self.tail)
        self.tail = seen[-3:]
        return self.head_bytes > self.limits.max_header_bytes

    def _head_done(self) -> None:
        self.in_head = False
        self._arm(self.limits.body_timeout_s)  # the body, if any, within this

    def _request_done(self) -> None:
        self._disarm()  # the request is in; the app's time is not bounded here
        self.in_head, self.head_bytes, self.tail = True, 0, b""

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self.deadline = asyncio.get_running_loop().call_later(seconds, self._too_slow)

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _too_slow(self) -> None:
        self.deadline = None
        # in a head nothing has been answered yet: say 408; in a body the app may be answering
        self._refuse(_TOO_SLOW if self.in_head else b"")

    def _refuse(self, response: bytes) -> None:
        self._disarm()
        if self.transport is not None and not self.transport.is_closing():
            if response:
                self.transport.write(response)
            self.transport.close()


NoDelayHTTP = EdgeHTTP  # its former name, which bench/serve.py and bench/profiling.py import


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A bound (not yet listening) TCP socket with SO_REUSEADDR and SO_REUSEPORT, inheritable."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family=family)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def claim_port(host: str, port: int) -> int:
    """The port (port 0: a free one), after checking that nothing listens there, SO_REUSEPORT or not.

    A socket without SO_REUSEPORT cannot bind where any socket listens, so this bind fails while an
    older generation's workers still hold the port; closed again before the workers bind theirs."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family=family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers are fine
        probe.bind((host, port))
        return int(probe.getsockname()[1])


_PR_SET_PDEATHSIG = 1


def exit_with_parent(parent: int) -> None:
    """SIGTERM this process (uvicorn's graceful exit) when `parent` is no longer its parent."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the check below still runs

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(1.0)

    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(0)
    threading.Thread(target=watch, name="cds-parent-watch", daemon=True).start()


def _worker(config: uvicorn.Config, host: str, port: int, parent: int) -> None:
    """One worker process: its own SO_REUSEPORT socket, the app, until SIGTERM or its parent's death."""
    exit_with_parent(parent)
    config.configure_logging()
    sock = reuseport_socket(host, port)
    uvicorn.Server(config).run(sockets=[sock])


_STARTUP_FAILURE = 3  # uvicorn.Server exits with it when the app or the socket cannot start


class Supervisor:
    """`workers` processes serving `config`'s app on host:port; a worker that dies is restarted."""

    def __init__(
        self, config: uvicorn.Config, host: str, port: int, workers: int, stop_timeout_s: float = 30.0
    ) -> None:
        self.config = config
        self.host = host
        self.port = port
        self.workers = workers
        self.stop_timeout_s = stop_timeout_s
        self._ctx = multiprocessing.get_context("spawn")
        self._stop = threading.Event()

    def _start(self) -> BaseProcess:
        proc = self._ctx.Process(
            target=_worker, args=(self.config, self.host, self.port, os.getpid()), name="cds-worker"
        )
        proc.start()
        return proc

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._stop.set()

    def run(self) -> int:
        """Raises OSError when the port is taken (by anything, an older generation included)."""
        self.port = claim_port(self.host, self.port)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        procs = [self._start() for _ in range(self.workers)]
        log.info(
            "%d workers listening on %s:%d, one SO_REUSEPORT socket each", self.workers, self.host, self.port
        )
        try:
            while not self._stop.wait(0.5):
                for i, proc in enumerate(procs):
                    if proc.is_alive():
                        continue
                    if proc.exitcode == _STARTUP_FAILURE:
                        log.error("worker %s could not start; stopping", proc.pid)
                        return 1
                    log.warning("worker %s exited with %s; starting another", proc.pid, proc.exitcode)
                    procs[i] = self._start()
        finally:
            self._stop_all(procs)
        return 0

    def _stop_all(self, procs: list[BaseProcess]) -> None:
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        for proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()


def _serve(args: argparse.Namespace) -> int:
    from cds.log import configure_logging
    from cds.metrics import prepare_multiprocess

    settings = Settings()
    host = args.host or settings.host
    port = args.port or settings.port
    workers = args.workers or settings.workers
    configure_logging(settings.log_level)  # JSON lines; httpx's URL lines (patient ids) stay below WARNING
    from cds.auth import validate_startup

    try:
        validate_startup(settings)  # create_app checks again in each worker; say why here, once, cleanly
        check_replay_store(settings, workers)
    except RuntimeError as exc:
        print(f"cds serve: refusing to start: {exc}", file=sys.stderr)
        return 2
    default_public_base_url(settings, host, port)
    prepare_multiprocess(workers, settings.state_dir)
    if settings.demo:
        log.info("demo page: http://%s:%d/demo", host, port)
    return run_server(
        "cds.app:create_app", host=host, port=port, workers=workers, log_level=settings.log_level
    )


def check_replay_store(settings: Settings, workers: int) -> None:
    """JWT on and several workers need one jti store they all see (Redis); refuse to start without it.

    Each worker's in-memory store knows only the tokens that worker saw, so a replay sent to another
    worker was accepted (19 of 20 replays with 2 workers, issue 18)."""
    if settings.auth == "jwt" and workers > 1 and not settings.redis_url:
        raise RuntimeError(
            f"CDS_AUTH=jwt with {workers} workers needs a shared jti replay store: set CDS_REDIS_URL "
            "(or CDS_WORKERS=1); per-worker memory would accept a token replayed to another worker"
        )


def run_server(factory: str, *, host: str, port: int, workers: int, log_level: str) -> int:
    """Serve the app that `factory` ("module:function") builds, one per worker, as `cds serve` does.

    bench/serve.py serves the benchmark's baseline app through this same call, so that the baseline
    and the service differ only in the app."""

    from cds.log import logging_config

    limits = edge_limits()
    options: dict[str, Any] = {
        "factory": True,
        "host": host,
        "port": port,
        "http": EdgeHTTP,
        "log_level": log_level.lower(),
        "log_config": logging_config(log_level),
        "access_log": False,
        "proxy_headers": False,
        "server_header": False,
        "h11_max_incomplete_event_size": limits.max_header_bytes,  # if uvicorn ever serves with h11
        "limit_concurrency": limits.max_connections,
    }
    if workers > 1 and hasattr(socket, "SO_REUSEPORT"):
        config = uvicorn.Config(factory, **options)
        try:
            return Supervisor(config, host, port, workers).run()
        except OSError as exc:
            print(
                f"cds serve: cannot listen on {host}:{port}: {exc} (another process, perhaps an older "
                "cds serve's workers, holds it)",
                file=sys.stderr,
            )
            return 3
    uvicorn.run(factory, workers=workers, **options)
    return 0


def default_public_base_url(settings: Settings, host: str, port: int) -> str:
    """Links (chart, full page) and the JWT `aud` follow the address served unless CDS_PUBLIC_BASE_URL
    is set: the workers build their Settings from the environment, so it is set there before they start."""
    import os

    if "public_base_url" in settings.model_fields_set:
        return str(settings.public_base_url)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    url = f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"
    os.environ["CDS_PUBLIC_BASE_URL"] = url
    if port != 8080 or shown != "127.0.0.1":
        log.info("links use %s (set CDS_PUBLIC_BASE_URL when the service is reached by another address)", url)
    return url


_SERVICE_FOR_HOOK = {"order-select": "pml-plex-select", "order-sign": "pml-plex-sign"}


def _demo_url(args: argparse.Namespace, settings: Settings) -> str:
    if args.url:
        return str(args.url)
    if "public_base_url" in settings.model_fields_set:
        return str(settings.public_base_url)
    return f"http://127.0.0.1:{settings.port}"


def _demo_list() -> int:
    from datetime import datetime

    from cds import demo

    now = datetime.now(UTC)
    for name in demo.scenarios():
        p = demo.patient(name, now)
        print(f"{name:20} {p.title}: {p.description}")
    return 0


def _print_card(card: dict[str, Any], detail: bool) -> None:
    print(f"[{card.get('indicator', '?'):8}] {card.get('summary', '')}")
    if detail and card.get("detail"):
        for line in str(card["detail"]).splitlines():
            print(f"           {line}")
    for s in card.get("suggestions", []):
        mark = " (recommended)" if s.get("isRecommended") else ""
        print(f"           suggestion{mark}: {s.get('label', '')}")
    if detail:
        for link in card.get("links", []):
            print(f"           link: {link.get('label', '')} <{link.get('url', '')}>")


def _http_problem(resp: httpx.Response) -> str:
    """Why the service refused, in one line (a 401 has no body: say what it means here)."""
    if resp.status_code == 401:
        return (
            "HTTP 401: the service requires a signed JWT (CDS_AUTH=jwt). For the demo, run it with "
            "CDS_AUTH=off (`make run` does)"
        )
    try:
        issue = resp.json()["issue"][0]
        text = issue.get("details", {}).get("text") or issue.get("diagnostics") or ""
    except (ValueError, KeyError, IndexError, TypeError):
        text = resp.text[:300]
    return f"HTTP {resp.status_code}: {text}"


def _demo(args: argparse.Namespace) -> int:
    from datetime import datetime

    import httpx

    from cds import demo

    if args.list:
        return _demo_list()
    names = demo.scenarios()
    if args.patient not in names:
        print(f"unknown demo patient {args.patient!r}; choose one of: {', '.join(names)}", file=sys.stderr)
        return 2
    settings = Settings()
    patient = demo.patient(args.patient, datetime.now(UTC))
    body = demo.hook_request(patient, args.hook, prefetch=True, settings=settings)
    url = f"{_demo_url(args, settings).rstrip('/')}/cds-services/{_SERVICE_FOR_HOOK[args.hook]}"
    try:
        resp = httpx.post(url, json=body, timeout=10)
    except httpx.HTTPError as exc:
        print(
            f"cannot reach {url}: {type(exc).__name__} (is the service running? `make run`)", file=sys.stderr
        )
        return 1
    if resp.status_code != 200:
        print(f"{url}: {_http_problem(resp)}", file=sys.stderr)
        return 1
    cards: list[dict[str, Any]] = resp.json().get("cards", [])
    print(f"{args.hook} for demo patient {args.patient} ({patient.title}): {len(cards)} card(s)")
    for card in cards:
        _print_card(card, args.detail)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cds", description="CDS Hooks service for PLEX in natalizumab PML")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the CDS Hooks service")
    serve.add_argument("--host", help="bind address (default CDS_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default CDS_PORT or 8080)")
    serve.add_argument("--workers", type=int, help="worker processes (default CDS_WORKERS or 1)")
    serve.set_defaults(func=_serve)
    dem = sub.add_parser(
        "demo",
        help="send a demo hook to a running service and print the cards",
        epilog=_demo_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dem.add_argument(
        "--url", help="service base URL (default CDS_PUBLIC_BASE_URL, else http://127.0.0.1:CDS_PORT)"
    )
    dem.add_argument("--patient", default="high-level", help="demo patient (see --list)")
    dem.add_argument("--hook", default="order-select", choices=sorted(_SERVICE_FOR_HOOK))
    dem.add_argument("--list", action="store_true", help="list the demo patients and exit")
    dem.add_argument("--detail", action="store_true", help="print each card's detail and links too")
    dem.set_defaults(func=_demo)
    return parser


def _demo_epilog() -> str:
    from cds.demo import scenarios

    return "demo patients: " + ", ".join(scenarios())


def settings_problem(exc: Exception) -> str | None:
    """One line naming the CDS_ variable and what is wrong with it (never its value: it may be a
    secret), or None when `exc` is not a settings error."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    if isinstance(exc, ValidationError) and exc.title == "Settings":
        problems = []
        for err in exc.errors(include_input=False, include_url=False):
            loc = err.get("loc") or ("?",)
            name = "CDS_" + str(loc[0]).upper()
            where = ".".join(str(p) for p in loc[1:])
            problems.append(f"{name}{' (' + where + ')' if where else ''}: {err.get('msg', 'invalid')}")
        return "bad setting " + "; ".join(problems)
    if isinstance(exc, SettingsError):
        m = re.search(r'field "([a-z_]+)"', str(exc))
        name = "CDS_" + m.group(1).upper() if m else "a CDS_ variable"
        return f"bad setting {name}: not valid JSON (lists and maps are given as JSON)"
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except Exception as exc:
        problem = settings_problem(exc)
        if problem is None:
            raise
        print(f"cds: {problem}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
