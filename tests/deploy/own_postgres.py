"""A PostgreSQL server of a test's own, to pause (SIGSTOP), kill and restart: the machine's shared
server on 5432 is never touched. initdb refuses root, so it runs as the `postgres` user, in a data
directory under /tmp that user owns; it listens on a free loopback port only (no Unix socket)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import free_port


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


def _as_postgres(*args: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else list(args)


class OwnPostgres:
    """`start()`, `pause()` / `resume()` every process of the server, `crash()` (immediate stop) and
    `start()` again on the same data; `dsn` is the superuser's, on database `postgres`."""

    def __init__(self, bin_dir: Path, data: Path, port: int) -> None:
        self.bin = bin_dir
        self.data = data
        self.port = port
        self.dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        self.paused: list[int] = []

    def _ctl(self, *args: str, timeout: float = 30) -> None:
        subprocess.run(
            _as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", *args),
            check=True,
            timeout=timeout,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories='' -c fsync=off"
        self._ctl("-l", str(self.data / "server.log"), "-o", options, "start")

    def crash(self) -> None:
        """As a crash: no checkpoint, every connection cut at once (the next start recovers)."""
        self.resume()
        self._ctl("-m", "immediate", "stop")

    def stop(self) -> None:
        self.resume()
        with contextlib.suppress(subprocess.SubprocessError):
            self._ctl("-m", "fast", "stop")

    def pids(self) -> list[int]:
        """The postmaster and all its children (backends, checkpointer, walwriter …)."""
        head = (self.data / "postmaster.pid").read_text().split("\n", 1)[0]
        postmaster = int(head)
        pids = [postmaster]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == postmaster:  # ppid
                    pids.append(int(stat.parent.name))
        return pids

    def pause(self) -> None:
        """SIGSTOP: connections stay open and nothing answers (a hung server, not a refusing one)."""
        self.paused = self.pids()
        for pid in self.paused:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in self.paused:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self.paused = []


@contextlib.contextmanager
def own_postgres() -> Iterator[OwnPostgres]:
    bin_dir = _pg_bin()
    if bin_dir is None or shutil.which("runuser") is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    root = Path(tempfile.mkdtemp(prefix="cds-own-pg-", dir="/tmp"))
    data = root / "data"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        shutil.chown(data, "postgres", "postgres")
    subprocess.run(
        _as_postgres(
            str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"
        ),
        check=True,
        timeout=120,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = OwnPostgres(bin_dir, data, free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def wait_until(check: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout_s} s")
