"""Issue 18 defect 5: request heads are bounded (CDS_MAX_HEADER_BYTES) and so is the time a client may
take to send its head (CDS_HEADER_TIMEOUT_S) and body (CDS_BODY_TIMEOUT_S).

Real sockets against the real server (`cds serve` in its own process). The deadlines are set to 1 s
here; each test only checks that the server closes the connection long before the client would stop."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.security.procs import Proc, service_process

LIMIT = 65536
DEADLINE_S = 1.0
PATIENCE_S = 8.0  # the client keeps trying this long; the server must have closed well before


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("slow")
    env = {
        "CDS_AUTH": "off",
        "CDS_STATE_DIR": str(tmp),
        "CDS_MAX_HEADER_BYTES": str(LIMIT),
        "CDS_HEADER_TIMEOUT_S": str(DEADLINE_S),
        "CDS_BODY_TIMEOUT_S": str(DEADLINE_S),
    }
    with service_process(env, tmp / "svc.log") as proc:
        yield proc


def _connect(svc: Proc) -> socket.socket:
    host, port = svc.base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=PATIENCE_S)
    return sock


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


ANSWERS: dict[int, bytes] = {}  # id(socket) -> what the server answered on it


def _closed(sock: socket.socket) -> bool:
    """True when the server has closed (EOF or reset); keeps whatever it answered first in ANSWERS."""
    sock.settimeout(0.05)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
            ANSWERS[id(sock)] = ANSWERS.get(id(sock), b"") + data
    except TimeoutError:
        return False
    except OSError:
        return True


def _stream_header(sock: socket.socket, total: int) -> int:
    """Send one header of `total` bytes in 64 KB writes; the bytes sent before the server closed."""
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
    sent = 0
    chunk = b"a" * 65536
    try:
        while sent < total:
            sock.sendall(chunk)
            sent += len(chunk)
            if sent % (1024 * 1024) == 0 and _closed(sock):
                return sent
            sock.settimeout(PATIENCE_S)
    except OSError:
        return sent
    return sent


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux /proc needed")
def test_huge_headers_are_refused_early_and_memory_stays_flat(svc: Proc) -> None:
    rss_before = _rss_kb(svc.proc.pid)
    socks = [_connect(svc) for _ in range(4)]
    try:
        sent = [_stream_header(s, 16 * 1024 * 1024) for s in socks]
    finally:
        for s in socks:
            s.close()
    assert all(n < 4 * 1024 * 1024 for n in sent), f"the server took {sent} bytes of header"
    grew_mb = (_rss_kb(svc.proc.pid) - rss_before) / 1024
    assert grew_mb < 40, f"RSS grew {grew_mb:.0f} MB"
    assert httpx.get(svc.base + "/healthz", timeout=5).status_code == 200


def test_a_huge_header_gets_431(svc: Proc) -> None:
    with _connect(svc) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (LIMIT + 10) + b"\r\n\r\n")
        sock.settimeout(PATIENCE_S)
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:100]


def test_headers_within_the_limit_are_served(svc: Proc) -> None:
    resp = httpx.get(svc.base + "/healthz", headers={"X-Fine": "a" * (LIMIT // 2)}, timeout=5)
    assert resp.status_code == 200
    with httpx.Client(timeout=5) as client:  # keep-alive: each request's head is counted afresh
        for _ in range(5):
            assert (
                client.get(svc.base + "/healthz", headers={"X-Fine": "a" * (LIMIT // 2)}).status_code == 200
            )


def _closed_within(sock: socket.socket, trickle: bytes, patience_s: float = PATIENCE_S) -> float | None:
    """Send `trickle` a byte every 0.2 s; seconds until the server closed, None if it never did."""
    started = time.monotonic()
    for byte in trickle:
        if _closed(sock):
            return time.monotonic() - started
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return time.monotonic() - started
        time.sleep(0.2)
        if time.monotonic() - started > patience_s:
            return None
    return None


def test_slowloris_head_is_cut_off(svc: Proc) -> None:
    with _connect(svc) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        took = _closed_within(sock, b"X-Slow: " + b"a" * 200)
        assert took is not None, "a head trickled for 8 s was still being read"
        answer = ANSWERS.get(id(sock), b"")
        assert not answer or answer.startswith(b"HTTP/1.1 408"), answer[:100]


def test_silent_connection_is_closed(svc: Proc) -> None:
    with _connect(svc) as sock:
        started = time.monotonic()
        while time.monotonic() - started < PATIENCE_S:
            if _closed(sock):
                return
            time.sleep(0.1)
    pytest.fail("a connection that sent nothing was held 8 s")


def test_slow_body_is_cut_off(svc: Proc) -> None:
    with _connect(svc) as sock:
        sock.sendall(
            b"POST /cds-services/pml-plex-select HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        assert _closed_within(sock, b" " * 200) is not None, "a body trickled for 8 s was still being read"


def test_many_slow_sockets_do_not_starve_the_service(svc: Proc) -> None:
    socks = [_connect(svc) for _ in range(50)]
    try:
        for s in socks:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        assert httpx.get(svc.base + "/healthz", timeout=5).status_code == 200
        open_socks = socks
        started = time.monotonic()
        while open_socks and time.monotonic() - started < PATIENCE_S:
            time.sleep(0.2)
            open_socks = [s for s in open_socks if not _closed(s)]
        assert not open_socks, f"{len(open_socks)} of 50 slow sockets still held after {PATIENCE_S:.0f} s"
    finally:
        for s in socks:
            s.close()


def _answers(sock: socket.socket, count: int) -> list[bytes]:
    """The status lines of the next `count` responses on `sock` (each has a Content-Length)."""
    sock.settimeout(PATIENCE_S)
    buffer = b""
    lines: list[bytes] = []
    while len(lines) < count:
        head_end = buffer.find(b"\r\n\r\n")
        if head_end < 0:
            data = sock.recv(65536)
            assert data, f"closed after {lines}"
            buffer += data
            continue
        head = buffer[:head_end].split(b"\r\n")
        length = next(int(h.split(b":")[1]) for h in head if h.lower().startswith(b"content-length:"))
        while len(buffer) < head_end + 4 + length:
            buffer += sock.recv(65536)
        lines.append(head[0])
        buffer = buffer[head_end + 4 + length :]
    return lines


def test_a_body_sent_with_its_head_is_not_counted_as_head(svc: Proc) -> None:
    body = b'{"pad": "' + b"a" * (2 * LIMIT) + b'"}'
    head = (
        b"POST /cds-services/no-such-service HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    with _connect(svc) as sock:
        sock.sendall(head + body)  # one write: the head's end and the body arrive together
        assert _answers(sock, 1) == [b"HTTP/1.1 404 Not Found"]


def test_chunked_body_then_another_request_on_the_same_connection(svc: Proc) -> None:
    chunk = b'{"pad": "' + b"a" * LIMIT + b'"}'
    with _connect(svc) as sock:
        sock.sendall(
            b"POST /cds-services/no-such-service HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            + f"{len(chunk):x}\r\n".encode()
            + chunk
            + b"\r\n0\r\n\r\n"
            + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        assert _answers(sock, 2) == [b"HTTP/1.1 404 Not Found", b"HTTP/1.1 200 OK"]
        time.sleep(DEADLINE_S * 1.5)  # past the body deadline: the request was complete, nothing fires
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _answers(sock, 1) == [b"HTTP/1.1 200 OK"]
