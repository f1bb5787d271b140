"""Serve bench/baseline_app.py the way `cds serve` serves the service (or the service itself).

    python bench/serve.py --app baseline --host 127.0.0.1 --port P --workers N [--reply-bytes B]
    python bench/serve.py --app service ...   (only used when `cds serve` is not there)

The same call as `cds serve`: `cds.cli.run_server` (factory per worker, the service's `NoDelayHTTP`
protocol with TCP_NODELAY on every accepted socket, one SO_REUSEPORT socket per worker, the service's
log configuration and level, no access log, no proxy headers, no Server header), so the baseline and
the service differ only in the app. With a cds.cli older than run_server (a worktree of old code), plain
`uvicorn.run` with those options but the shared socket; without cds.cli at all, the listening socket
is created with proto=IPPROTO_TCP instead, which keeps TCP_NODELAY with workers too.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _tcp_bind_socket(self):  # type: ignore[no-untyped-def]
    """uvicorn Config.bind_socket with proto=IPPROTO_TCP (asyncio sets TCP_NODELAY only then)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((self.host, self.port))
    sock.set_inheritable(True)
    return sock


def service_factory():  # type: ignore[no-untyped-def]
    from cds.app import create_app
    from cds.settings import Settings

    return create_app(Settings())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--reply-bytes", type=int, default=None)
    ap.add_argument("--app", choices=["baseline", "service"], default="baseline")
    ap.add_argument("--log-level", default=os.environ.get("CDS_LOG_LEVEL", "INFO"))
    a = ap.parse_args()
    if a.reply_bytes is not None:
        os.environ["BENCH_BASELINE_BYTES"] = str(a.reply_bytes)

    factory = "bench.baseline_app:app_factory" if a.app == "baseline" else "bench.serve:service_factory"
    try:
        from cds.cli import run_server
        from cds.log import configure_logging
    except ImportError:
        pass
    else:
        configure_logging(a.log_level)
        sys.exit(run_server(factory, host=a.host, port=a.port, workers=a.workers, log_level=a.log_level))

    import uvicorn
    import uvicorn.config

    kwargs: dict[str, Any] = {
        "proxy_headers": False,
        "server_header": False,
        "log_level": a.log_level.lower(),
    }
    try:
        from cds.cli import NoDelayHTTP

        kwargs["http"] = NoDelayHTTP
    except ImportError:
        uvicorn.config.Config.bind_socket = _tcp_bind_socket  # type: ignore[method-assign]
    uvicorn.run(
        factory,
        factory=True,
        host=a.host,
        port=a.port,
        workers=a.workers,
        **kwargs,
    )


if __name__ == "__main__":
    main()
