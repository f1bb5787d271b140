"""A TCP listener that records every connection and the bytes sent to it: proof that no request (and no
token) left the service for an address it must not call.

    with tripwire() as wire:                      # 127.0.0.1; tripwire("127.0.0.2") for another host
        ... fhirServer = wire.url ...
        assert wire.connections == 0 and b"secret" not in wire.received

It answers each request `200 {}` so a caller that does reach it is not left hanging.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_REPLY = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class Tripwire:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.connections = 0
        self.received = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """A FHIR base URL on the tripwire."""
        return f"http://{self.host}:{self.port}/fhir"

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.settimeout(0.5)
            try:
                self.received += conn.recv(65536)
                conn.sendall(_REPLY)
            except OSError:
                pass
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


@contextmanager
def tripwire(host: str = "127.0.0.1") -> Iterator[Tripwire]:
    t = Tripwire(host)
    try:
        yield t
    finally:
        t.close()
