"""Issue 18 defect 7 (keep-alive part): after a 500 the connection is closed, so the 500 must say
`Connection: close`; otherwise a keep-alive client's next request on it gets a read error.

The real app under real uvicorn, on a raw socket; the 500 comes from a route added to the app that
raises, standing in for any fault of ours."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from cds.app import create_app
from cds.settings import Settings
from tests.support.servers import serve_asgi


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    app = create_app(Settings(auth="off", state_dir=tmp_path_factory.mktemp("ka"), _env_file=None))  # type: ignore[call-arg]

    async def boom() -> None:
        raise RuntimeError("a fault of ours")

    app.add_api_route("/boom", boom, include_in_schema=False)
    with serve_asgi(app) as url:
        yield url


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response head: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside a response body")
        body += chunk
    return int(lines[0].split()[1]), headers, body


def _get(path: str, host: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\n\r\n".encode()


def test_a_500_says_connection_close_or_keeps_the_connection_usable(base: str) -> None:
    host = base.removeprefix("http://")
    addr, port = host.split(":")
    with socket.create_connection((addr, int(port)), timeout=10) as sock:
        sock.sendall(_get("/boom", host))
        status, headers, body = _read_response(sock)
        assert status == 500
        assert b"OperationOutcome" in body
        if "close" in headers.get("connection", "").lower():
            return  # the client knows not to reuse it
        sock.sendall(_get("/healthz", host))  # otherwise the connection must still serve
        status, _, _ = _read_response(sock)
        assert status == 200


def test_httpx_keep_alive_client_survives_a_500(base: str) -> None:
    with httpx.Client(timeout=10) as client:
        for _ in range(5):
            assert client.get(base + "/boom").status_code == 500
            assert client.get(base + "/healthz").status_code == 200
