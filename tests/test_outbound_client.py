"""The app's one outbound client (cds.outbound.http_client) over real loopback sockets: what the FHIR
reader relies on (errors told apart as httpx errors, timeouts, gzip, the query sent as written,
connections reused) and what it must never do (follow a redirect, keep a cookie, skip TLS checks,
ignore the environment's proxy)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from cds.outbound import http_client
from cds.settings import Settings

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
    return http_client(Settings(_env_file=None, fhir_timeout_s=timeout))


@pytest.fixture(autouse=True)
def no_proxy_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


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
    # sent as written, up to percent-encoding (servers decode "|" and %7C alike)
    assert [unquote(p.decode()) for p in paths] == [query] * 3
    assert len(peers) == 1  # one connection, reused


async def test_a_proxy_in_the_environment_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where egress needs a proxy, HTTP_PROXY / HTTPS_PROXY name it and the client goes through it."""
    heads: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await read_head(reader))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()

    async with server(proxy) as (proxy_url, _):
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        async with client() as c:
            r = await c.get("http://ehr.example.org/fhir/metadata")
    assert r.status_code == 200
    assert heads and heads[0].startswith(b"GET http://ehr.example.org/fhir/metadata HTTP/1.1")


async def test_a_redirect_is_not_followed() -> None:
    """A FHIR server's redirect could send the bearer token elsewhere: the reader sees the 3xx itself."""
    paths: list[bytes] = []

    async def redirects(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            paths.append((await read_head(reader)).split(b" ")[1])
            writer.write(b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()

    async with server(redirects) as (base, _), client() as c:
        r = await c.get(f"{base}/fhir/Patient/p1")
    assert r.status_code == 302 and paths == [b"/fhir/Patient/p1"]


async def test_no_cookie_rides_along_to_the_next_read() -> None:
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

    async with server(sets_cookie) as (base, _), client() as c:
        for token in ("first", "second"):
            r = await c.get(f"{base}/fhir/Patient/p1", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200
    assert cookies_seen == [b"", b""]


def _tls_files(tmp: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, cert.pem, key.pem)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def build(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, signer: Any, ca: bool) -> Any:
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            b = b.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        return b.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = build("test CA", ca_key, ca_name, ca_key, True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = build("127.0.0.1", key, ca_name, ca_key, False)
    paths = tmp / "ca.pem", tmp / "cert.pem", tmp / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


async def test_tls_is_verified_and_ssl_cert_file_is_honoured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An https FHIR server whose certificate no trusted CA signed is refused (a connection error,
    not a timeout); trusting its CA through SSL_CERT_FILE lets it in."""
    import ssl

    ca, cert, key = _tls_files(tmp_path)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)

    async def ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            await ok(reader, writer)
        writer.close()

    srv = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=served)
    url = f"https://127.0.0.1:{srv.sockets[0].getsockname()[1]}/fhir/metadata"
    try:
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        monkeypatch.delenv("SSL_CERT_DIR", raising=False)
        async with client(timeout=5) as c:
            with pytest.raises(httpx.ConnectError) as caught:
                await c.get(url)
        assert not isinstance(caught.value, httpx.TimeoutException)
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))
        async with client(timeout=5) as c:
            assert (await c.get(url)).status_code == 200
    finally:
        srv.close()
