"""cds/transport.py over real loopback sockets: what the FHIR reader relies on from its httpx client
(errors told apart as httpx errors, timeouts, gzip, the query sent as written, connections reused)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import unquote

import httpx
import pytest

from cds.transport import FhirTransport, http_transport, no_cookies

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[tuple[str, list[int]]]:
    """A raw HTTP/1.1 server on a free loopback port; yields its base URL and the peer ports seen."""
    peers: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peername")[1])
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await handler(reader, writer)
        writer.close()

    srv = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", peers
    finally:
        srv.close()


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def client(timeout: float = 2.0) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)
    return httpx.AsyncClient(transport=FhirTransport(limits=limits), timeout=httpx.Timeout(timeout))


async def test_a_refused_connection_is_a_connect_error_not_a_timeout() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once the socket is closed
    async with client() as c:
        with pytest.raises(httpx.ConnectError) as caught:
            await c.get(f"http://127.0.0.1:{port}/fhir/Observation")
    assert not isinstance(caught.value, httpx.TimeoutException)


async def test_a_silent_server_is_a_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        await asyncio.sleep(5)

    async with server(silent) as (base, _), client(timeout=0.3) as c:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(httpx.TimeoutException):
            await c.get(f"{base}/fhir/Observation")
        assert loop.time() - started < 2


async def test_a_body_cut_short_is_an_httpx_error() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nContent-Length: 1000\r\n\r\n{"
        )
        await writer.drain()

    async with server(cut) as (base, _), client() as c:
        with pytest.raises(httpx.HTTPError) as caught:
            async with c.stream("GET", f"{base}/fhir/Observation") as r:
                assert r.status_code == 200
                async for _ in r.aiter_bytes():
                    pass
    assert not isinstance(caught.value, httpx.TimeoutException)


async def test_gzip_query_and_keep_alive() -> None:
    body = b'{"resourceType":"Bundle","type":"searchset","total":0}'
    packed = gzip.compress(body)
    paths: list[bytes] = []

    async def ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await read_head(reader)
            paths.append(head.split(b" ")[1])
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nContent-Encoding: gzip\r\n"
                b"Content-Length: " + str(len(packed)).encode() + b"\r\n\r\n" + packed
            )
            await writer.drain()

    query = "/fhir/Observation?patient=p1&code=http://loinc.org|731-0,http://loinc.org|26474-7&_count=100"
    async with server(ok) as (base, peers), client() as c:
        for _ in range(3):
            r = await c.get(base + query, headers={"Accept": "application/fhir+json"})
            assert r.status_code == 200 and r.content == body
    # sent as written, up to percent-encoding (aiohttp writes "|" as %7C; servers decode both alike)
    assert [unquote(p.decode()) for p in paths] == [query] * 3
    assert len(peers) == 1  # one connection, reused


def test_a_proxy_in_the_environment_keeps_httpx_transports(monkeypatch: pytest.MonkeyPatch) -> None:
    limits = httpx.Limits(max_connections=4)
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert isinstance(http_transport(limits), FhirTransport)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    assert http_transport(limits) is None
    c = httpx.AsyncClient(transport=http_transport(limits))
    assert not isinstance(c._transport_for_url(httpx.URL("https://ehr.example.org/fhir")), FhirTransport)


@pytest.mark.parametrize("with_proxy_fallback", [False, True], ids=["aiohttp", "httpx-transport"])
async def test_no_cookie_rides_along_to_the_next_read(with_proxy_fallback: bool) -> None:
    """One client serves every user and patient: a cookie a FHIR server sets is never sent back."""
    cookies_seen: list[bytes] = []

    async def sets_cookie(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await read_head(reader)
            lines = head.split(b"\r\n")
            cookies_seen.append(b"".join(ln for ln in lines if ln.lower().startswith(b"cookie:")))
            writer.write(
                b"HTTP/1.1 200 OK\r\nSet-Cookie: session=for-the-first-token; Path=/\r\n"
                b"Content-Type: application/fhir+json\r\nContent-Length: 2\r\n\r\n{}"
            )
            await writer.drain()

    limits = httpx.Limits(max_connections=4)
    transport = None if with_proxy_fallback else FhirTransport(limits=limits)
    client = httpx.AsyncClient(transport=transport, cookies=no_cookies(), trust_env=False)
    async with server(sets_cookie) as (base, _), client as c:
        for token in ("first", "second"):
            r = await c.get(f"{base}/fhir/Patient/p1", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200
    assert cookies_seen == [b"", b""]
