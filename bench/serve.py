"""Serve bench/baseline_app.py exactly the way `cds serve` serves the service.

    python bench/serve_baseline.py --host 127.0.0.1 --port P --workers N

It reuses the service's own serving function when it exposes one that takes an app factory (so the
baseline shares its uvicorn settings, worker handling and TCP_NODELAY fix), and otherwise runs uvicorn
with the same options: factory per worker, and listening sockets created with proto=IPPROTO_TCP so that
workers' accepted sockets keep TCP_NODELAY (uvicorn issue #3149).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _tcp_bind_socket(self):  # type: ignore[no-untyped-def]
    """uvicorn Config.bind_socket with proto=IPPROTO_TCP (asyncio sets TCP_NODELAY only then)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((self.host, self.port))
    sock.set_inheritable(True)
    return sock


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--reply-bytes", type=int, default=None)
    a = ap.parse_args()
    if a.reply_bytes is not None:
        os.environ["BENCH_BASELINE_BYTES"] = str(a.reply_bytes)

    import uvicorn
    import uvicorn.config

    uvicorn.config.Config.bind_socket = _tcp_bind_socket  # type: ignore[method-assign]
    uvicorn.run(
        "bench.baseline_app:app_factory",
        factory=True,
        host=a.host,
        port=a.port,
        workers=a.workers,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
