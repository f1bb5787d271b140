"""A FHIR server with a fixed round-trip time: a proxy in front of the local one (issue 16's latency guard).

    .venv/bin/python bench/latency_proxy.py --upstream 127.0.0.1:8090 --rtt-ms 20 [--mode replay|tcp]

Prints `LISTENING <port>` once it accepts connections. Each request/response exchange costs one RTT on
top of the FHIR server's own time, as over a link with that round trip. Opening a connection is not
delayed (a real new TCP connection costs one more RTT, TLS more): the figures are exact for a service
that reuses its connections and a lower bound for one that opens them during a hook call; the replay
mode counts both, so the report can say which.

- `replay` (default): HTTP/1.1. The first GET of a URL is sent to the upstream and its reply (status,
  Content-Type, body with the upstream's base URL rewritten to the proxy's, so paging links come back
  here) is kept; every request is answered from that store after the RTT. The FHIR server then costs no
  CPU during the measurement: on 2 shared cores, a Python FHIR server answering 9 reads per hook call
  is otherwise the bottleneck at c=8, and the figures would measure it, not the service.
  `GET /_latency_proxy/stats` answers `{"connections": N, "requests": M}` (without delay).
- `tcp`: below HTTP; every byte from the upstream is held for the RTT after it arrived, then passed on
  in order; bytes towards the upstream pass at once. Nothing is parsed: keep-alive, chunked replies
  and paging pass unchanged, and the live FHIR server answers every read.

bench/run.py (`--guard`, or the latency cases of a full run) starts one per RTT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

_CHUNK = 65536


async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Client to upstream, without delay."""
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            writer.write_eof()


async def _delayed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rtt: float) -> None:
    """Upstream to client: each chunk leaves `rtt` seconds after it arrived, in arrival order."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def receive() -> None:
        try:
            while data := await reader.read(_CHUNK):
                queue.put_nowait((time.monotonic() + rtt, data))
        except (ConnectionError, OSError):
            pass
        queue.put_nowait((time.monotonic() + rtt, b""))  # end of stream, delayed like the data

    receiver = asyncio.create_task(receive())
    try:
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receiver
        writer.close()


async def _serve_one(
    client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, host: str, port: int, rtt: float
) -> None:
    try:
        up_r, up_w = await asyncio.open_connection(host, port)
    except OSError:
        client_w.close()
        return
    to_upstream = asyncio.create_task(_forward(client_r, up_w))
    try:
        await _delayed(up_r, client_w, rtt)
    finally:
        to_upstream.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await to_upstream
        up_w.close()


@dataclass
class Replay:
    """The replies of the upstream, one per method and path, with its base URL rewritten to ours."""

    upstream: str  # http://host:port
    own: str = ""  # http://127.0.0.1:<our port>, set once listening
    store: dict[bytes, bytes] = field(default_factory=dict)
    connections: int = 0
    requests: int = 0

    def fetch(self, target: str) -> bytes:
        """The whole HTTP/1.1 reply to `GET target` as the upstream gives it (blocking; run in a thread)."""
        try:
            with urllib.request.urlopen(self.upstream + target, timeout=30) as r:
                status, ctype, body = r.status, r.headers.get("Content-Type", ""), r.read()
        except urllib.error.HTTPError as e:
            status, ctype, body = e.code, e.headers.get("Content-Type", ""), e.read()
        body = body.replace(self.upstream.encode(), self.own.encode())
        head = f"HTTP/1.1 {status} -\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
        return head.encode() + body

    async def reply(self, method: bytes, target: bytes) -> bytes:
        if target == b"/_latency_proxy/stats":
            body = json.dumps({"connections": self.connections, "requests": self.requests}).encode()
            return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
                len(body),
                body,
            )
        self.requests += 1
        key = method + b" " + target
        if key not in self.store:
            if method != b"GET":
                return b"HTTP/1.1 405 -\r\nContent-Length: 0\r\n\r\n"
            self.store[key] = await asyncio.to_thread(self.fetch, target.decode())
        return self.store[key]


async def _replay_one(r: asyncio.StreamReader, w: asyncio.StreamWriter, replay: Replay, rtt: float) -> None:
    """Requests on one connection, in order (no pipelining from HTTP clients): read, wait RTT, answer."""
    replay.connections += 1
    try:
        while True:
            head = await r.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            method, target, _ = lines[0].split(b" ", 2)
            headers = {
                k.strip().lower(): v.strip() for k, _, v in (ln.partition(b":") for ln in lines[1:] if ln)
            }
            length = int(headers.get(b"content-length", b"0") or 0)
            if length:
                await r.readexactly(length)
            data = await replay.reply(method, target)
            if not target.startswith(b"/_latency_proxy/"):
                await asyncio.sleep(rtt)
            w.write(data)
            await w.drain()
            if headers.get(b"connection", b"").lower() == b"close":
                break
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, OSError, ValueError):
        pass
    finally:
        w.close()


async def serve(listen_port: int, upstream: str, rtt_ms: float, mode: str = "replay") -> None:
    host, _, port = upstream.rpartition(":")
    rtt = rtt_ms / 1000.0
    replay = Replay(f"http://{host or '127.0.0.1'}:{port}")

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if mode == "replay":
            await _replay_one(r, w, replay, rtt)
        else:
            await _serve_one(r, w, host or "127.0.0.1", int(port), rtt)

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    bound = server.sockets[0].getsockname()[1]
    replay.own = f"http://127.0.0.1:{bound}"
    print(f"LISTENING {bound}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--upstream", required=True, help="host:port of the FHIR server")
    ap.add_argument("--rtt-ms", type=float, required=True, help="round-trip time added to every exchange")
    ap.add_argument("--port", type=int, default=0, help="port to listen on (0: a free one, printed)")
    ap.add_argument("--mode", choices=("replay", "tcp"), default="replay")
    a = ap.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(a.port, a.upstream, a.rtt_ms, a.mode))
    return 0


if __name__ == "__main__":
    sys.exit(main())
