"""In-process cost of one hook call: the ASGI app called directly (no socket, no uvicorn), N times.

    .venv/bin/python bench/inproc.py [--case select] [-n 300] [--cprofile]

Reports CPU per request (time.process_time) for the whole ASGI app, and optionally a cProfile table
(deterministic: call counts show repeated work; per-call overhead inflates small functions).
Used to check a proposed fix quickly: CPU per request here is comparable before/after in one process.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class Asgi:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.lifespan_state: dict[str, Any] = {}

    async def startup(self) -> None:
        q: asyncio.Queue = asyncio.Queue()
        await q.put({"type": "lifespan.startup"})
        self._done = asyncio.Event()
        self._lq = q

        async def send(msg: dict[str, Any]) -> None:
            if msg["type"].startswith("lifespan.startup"):
                self._done.set()
            if msg["type"] == "lifespan.startup.failed":
                raise RuntimeError(msg)

        self._task = asyncio.create_task(
            self.app(
                {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self.lifespan_state}, q.get, send
            )
        )
        await self._done.wait()

    async def shutdown(self) -> None:
        await self._lq.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(self._task, 10)

    async def call(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"127.0.0.1"),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8080),
            "state": dict(self.lifespan_state),
        }
        sent = False
        status = 0
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(msg: dict[str, Any]) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
            elif msg["type"] == "http.response.body":
                chunks.append(msg.get("body", b""))

        await self.app(scope, receive, send)
        return status, b"".join(chunks)


async def measure(case: str, n: int, prof: bool, settings_kw: dict[str, Any], dump: str = "") -> None:
    import logging

    from bench.run import build_bodies, concrete
    from cds.app import create_app
    from cds.settings import Settings

    logging.disable(logging.NOTSET)
    bodies = build_bodies(datetime.now(UTC), None)
    b = bodies[case]
    data = concrete(b) if b.file else b""
    settings = Settings(auth="off", state_dir=str(ROOT / "bench" / "raw" / "state-inproc"), **settings_kw)
    a = Asgi(create_app(settings))
    await a.startup()
    status, out = await a.call(b.method, b.path, data)
    print(f"{case}: status {status}, {len(out)} bytes", file=sys.stderr)
    for _ in range(30):
        await a.call(b.method, b.path, data)
    pr = cProfile.Profile() if prof else None
    t0 = time.process_time()
    if pr:
        pr.enable()
    for i in range(n):
        await a.call(b.method, b.path, data.replace(b"9b1d7b2e", f"{i:08x}".encode()))
    if pr:
        pr.disable()
    cpu = (time.process_time() - t0) / n * 1e6
    await a.shutdown()
    print(
        f"{case}: {cpu:.0f} us CPU per request in-process ({n} requests){' (under cProfile)' if pr else ''}"
    )
    if pr:
        s = io.StringIO()
        pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(35)
        print(s.getvalue())
        if dump:
            pr.dump_stats(dump)  # for pstats: print_callers / print_callees


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", default="select")
    ap.add_argument("-n", type=int, default=300)
    ap.add_argument("--cprofile", action="store_true")
    ap.add_argument("--dump", default="", help="with --cprofile: write the raw profile to this file")
    ap.add_argument("--strict", action="store_true")
    a = ap.parse_args()
    asyncio.run(measure(a.case, a.n, a.cprofile, {"strict_fhir": True} if a.strict else {}, a.dump))


if __name__ == "__main__":
    main()
