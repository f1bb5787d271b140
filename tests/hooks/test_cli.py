"""`cds serve` (multi-worker, TCP_NODELAY kept) and `cds demo` against it, as real processes."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cds.cli import build_parser, set_nodelay
from tests.support.servers import free_port, wait_until_healthy


async def test_accepted_sockets_get_tcp_nodelay() -> None:
    """The multi-worker case: a listening socket rebuilt from an fd has proto 0 (uvicorn #3149)."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.bind(("127.0.0.1", 0))
    raw.listen()
    rebuilt = socket.fromfd(raw.fileno(), socket.AF_INET, socket.SOCK_STREAM)  # as uvicorn's workers get it
    seen: list[int] = []

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
            sock = transport.get_extra_info("socket")
            seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            set_nodelay(transport)
            seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    loop = asyncio.get_running_loop()
    server = await loop.create_server(Probe, sock=rebuilt)
    _, writer = await asyncio.open_connection(*raw.getsockname())
    for _ in range(100):
        if len(seen) == 2:
            break
        await asyncio.sleep(0.01)
    writer.close()
    server.close()
    raw.close()
    assert seen[1] != 0, seen


def test_parser() -> None:
    args = build_parser().parse_args(["serve", "--host", "0.0.0.0", "--port", "9000", "--workers", "2"])
    assert (args.host, args.port, args.workers) == ("0.0.0.0", 9000, 2)
    args = build_parser().parse_args(["demo"])
    assert (args.url, args.patient, args.hook) == (None, "high-level", "order-select")  # URL from CDS_PORT


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env.update(CDS_AUTH="off", CDS_DEMO="1", CDS_STATE_DIR=str(tmp_path_factory.mktemp("cli-state")))
    proc = subprocess.Popen(
        [sys.executable, "-m", "cds", "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, proc, 60, "cds serve")
        yield url
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        served.log = out  # type: ignore[attr-defined]


def test_serve_multi_worker_and_demo(served: str) -> None:
    assert httpx.get(f"{served}/cds-services").status_code == 200
    assert httpx.get(f"{served}/demo/patients").json()
    cds_bin = Path(sys.executable).with_name("cds")
    cmd = [str(cds_bin)] if cds_bin.exists() else [sys.executable, "-m", "cds"]
    r = subprocess.run(
        [*cmd, "demo", "--url", served, "--patient", "brainstem-pml", "--hook", "order-sign"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert "3 card(s)" in r.stdout and "Raised risk of severe PML-IRIS" in r.stdout
    r = subprocess.run(
        [*cmd, "demo", "--url", served, "--patient", "nobody"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode != 0


def test_demo_exits_nonzero_on_http_error() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "cds", "demo", "--url", f"http://127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 1 and "cannot reach" in r.stderr


def test_serve_refuses_jwt_auth_without_an_issuer() -> None:
    """Auth is on by default; with no trusted EHR configured the service must not start and must say why."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env["CDS_AUTH"] = "jwt"
    proc = subprocess.run(
        [sys.executable, "-m", "cds", "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "no issuer is configured" in proc.stderr and "CDS_JWT_ISSUERS" in proc.stderr


def _listening_sockets(port: int) -> int:
    """Listening TCP sockets on `port` (IPv4, from /proc/net/tcp: state 0A = LISTEN)."""
    n = 0
    with open("/proc/net/tcp", encoding="ascii") as f:
        next(f)
        for line in f:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                n += 1
    return n


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="Linux /proc needed")
def test_each_worker_has_its_own_reuseport_socket(served: str) -> None:
    """--workers 2: two SO_REUSEPORT listening sockets (one per worker), so the kernel balances them."""
    port = int(served.rsplit(":", 1)[1])
    assert _listening_sockets(port) == 2
    for _ in range(20):  # new connection each time: all answered
        assert httpx.get(f"{served}/healthz", timeout=5).status_code == 200


def test_reuseport_socket_shares_a_port() -> None:
    from cds.cli import reuseport_socket

    a = reuseport_socket("127.0.0.1", 0)
    b = reuseport_socket("127.0.0.1", a.getsockname()[1])
    try:
        a.listen(8)
        b.listen(8)
        assert a.getsockname() == b.getsockname()
    finally:
        a.close()
        b.close()
