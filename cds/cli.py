"""Command line: `cds serve` (the service under uvicorn) and `cds demo` (fire a demo hook, print the cards).

TCP_NODELAY: uvicorn's multi-worker mode hands each worker a socket rebuilt from a file descriptor,
whose `proto` is 0, so asyncio no longer sets TCP_NODELAY on accepted connections (uvicorn #3149; a
44 ms p50 was measured here). We therefore serve with `NoDelayHTTP`, uvicorn's own HTTP protocol with
one addition: it sets TCP_NODELAY on every accepted socket in `connection_made`. That works the same
with one worker or many, whatever created the listening socket, and needs no process manager.

Several workers: uvicorn's supervisor hands every worker the same listening socket, and on Linux the
worker that happens to be awake takes nearly every connection (one worker took 97-100% of the CPU in
bench/results.md). `ReusePortMultiprocess` keeps uvicorn's supervisor (health checks, restarts, signals)
but gives each worker its own `SO_REUSEPORT` listening socket on the same address, so the kernel
spreads connections across workers. The parent closes its copy once the worker has it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
from datetime import UTC
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol
from uvicorn.supervisors import Multiprocess

log = logging.getLogger("cds.cli")


class NoDelayHTTP(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    """uvicorn's HTTP protocol (httptools or h11, as uvicorn picks) with TCP_NODELAY on each connection."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        set_nodelay(transport)
        super().connection_made(transport)


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


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


class ReusePortMultiprocess(Multiprocess):
    """uvicorn's Multiprocess supervisor, but every worker it starts gets a fresh SO_REUSEPORT socket.

    uvicorn builds each worker as `Process(self.config, self.sockets)` (at start, on restart, on a
    dead worker, on SIGTTIN), so `sockets` is a property that binds a new socket per read; after each
    supervisor step the parent closes the sockets it handed out (the started worker holds its own fd),
    so no listening socket is left in the parent where the kernel would queue connections nobody takes.
    """

    def __init__(self, config: Any, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._handed_out: list[socket.socket] = []
        super().__init__(config, sockets=[])

    @property
    def sockets(self) -> list[socket.socket]:
        sock = reuseport_socket(self._host, self._port)
        self._port = sock.getsockname()[1]  # port 0: every worker on the port the first one got
        self._handed_out.append(sock)
        return [sock]

    @sockets.setter
    def sockets(self, value: list[socket.socket]) -> None:
        pass  # one socket per worker, made on demand

    def _close_handed_out(self) -> None:
        while self._handed_out:
            self._handed_out.pop().close()

    def init_processes(self) -> None:
        try:
            super().init_processes()
        finally:
            self._close_handed_out()
        log.info(
            "%d workers listening on %s:%d, one SO_REUSEPORT socket each",
            self.processes_num,
            self._host,
            self._port,
        )

    def keep_subprocess_alive(self) -> None:
        try:
            super().keep_subprocess_alive()
        finally:
            self._close_handed_out()

    def restart_all(self) -> None:
        try:
            super().restart_all()
        finally:
            self._close_handed_out()

    def handle_ttin(self) -> None:
        try:
            super().handle_ttin()
        finally:
            self._close_handed_out()


def _serve(args: argparse.Namespace) -> int:
    from cds.log import configure_logging
    from cds.metrics import prepare_multiprocess
    from cds.settings import Settings

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
    prepare_multiprocess(workers, settings.state_dir)
    if settings.demo:
        log.info("demo page: http://%s:%d/demo", host, port)
    return run_server(
        "cds.app:create_app", host=host, port=port, workers=workers, log_level=settings.log_level
    )


def check_replay_store(settings: Any, workers: int) -> None:
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
    import uvicorn

    from cds.log import logging_config

    options: dict[str, Any] = {
        "factory": True,
        "host": host,
        "port": port,
        "workers": workers,
        "http": NoDelayHTTP,
        "log_level": log_level.lower(),
        "log_config": logging_config(log_level),
        "access_log": False,
        "proxy_headers": False,
        "server_header": False,
    }
    if workers > 1 and hasattr(socket, "SO_REUSEPORT"):
        config = uvicorn.Config(factory, **options)
        try:
            ReusePortMultiprocess(config, host, port).run()
        except OSError as exc:
            print(f"cds serve: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
            return 3
        return 0
    uvicorn.run(factory, **options)
    return 0


_SERVICE_FOR_HOOK = {"order-select": "pml-plex-select", "order-sign": "pml-plex-sign"}


def _demo(args: argparse.Namespace) -> int:
    from datetime import datetime

    import httpx

    from cds import demo
    from cds.settings import Settings

    names = demo.scenarios()
    if args.patient not in names:
        print(f"unknown demo patient {args.patient!r}; choose one of: {', '.join(names)}", file=sys.stderr)
        return 2
    patient = demo.patient(args.patient, datetime.now(UTC))
    body = demo.hook_request(patient, args.hook, prefetch=True, settings=Settings())
    url = f"{args.url.rstrip('/')}/cds-services/{_SERVICE_FOR_HOOK[args.hook]}"
    try:
        resp = httpx.post(url, json=body, timeout=10)
    except httpx.HTTPError as exc:
        print(f"cannot reach {url}: {type(exc).__name__}", file=sys.stderr)
        return 1
    if resp.status_code != 200:
        print(f"HTTP {resp.status_code} from {url}: {resp.text[:500]}", file=sys.stderr)
        return 1
    cards: list[dict[str, Any]] = resp.json().get("cards", [])
    print(f"{args.hook} for demo patient {args.patient} ({patient.title}): {len(cards)} card(s)")
    for card in cards:
        print(f"[{card.get('indicator', '?'):8}] {card.get('summary', '')}")
        for s in card.get("suggestions", []):
            print(f"           suggestion: {s.get('label', '')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cds", description="CDS Hooks service for PLEX in natalizumab PML")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the CDS Hooks service")
    serve.add_argument("--host", help="bind address (default CDS_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default CDS_PORT or 8080)")
    serve.add_argument("--workers", type=int, help="worker processes (default CDS_WORKERS or 1)")
    serve.set_defaults(func=_serve)
    dem = sub.add_parser("demo", help="send a demo hook to a running service and print the cards")
    dem.add_argument("--url", default="http://127.0.0.1:8080", help="service base URL")
    dem.add_argument("--patient", default="high-level", help="demo scenario name")
    dem.add_argument("--hook", default="order-select", choices=sorted(_SERVICE_FOR_HOOK))
    dem.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
