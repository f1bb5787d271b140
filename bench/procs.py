"""Server processes for the benchmark: start, wait until ready, CPU and memory counters, stop.

CPU time comes from /proc/<pid>/stat (utime + stime, fields 14 and 15) summed over the server's whole
process tree (the uvicorn supervisor and its workers), read just before and just after a load run.
Resident memory is VmRSS from /proc/<pid>/status, per worker process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        rest = raw[raw.rfind(b")") + 2 :].split()
        kids.setdefault(int(rest[1]), []).append(int(entry))
    return kids


def tree(pid: int) -> list[int]:
    """pid and all its descendants that are alive now."""
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the given processes, in seconds (live processes only)."""
    ticks = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        rest = raw[raw.rfind(b")") + 2 :].split()
        ticks += int(rest[11]) + int(rest[12])  # fields 14, 15 (1-based) after pid and comm
    return ticks / CLK_TCK


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@dataclass
class Server:
    name: str
    url: str
    proc: subprocess.Popen
    log: Path
    workers: int
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pids(self) -> list[int]:
        return tree(self.pid)

    def worker_pids(self) -> list[int]:
        """The processes that serve requests: the leaves running Python, not helpers."""
        pids = self.pids()
        if self.workers <= 1:
            return [self.pid]
        out = [p for p in pids if p != self.pid and "resource_tracker" not in cmdline(p)]
        return out or [self.pid]

    def cpu(self) -> float:
        return cpu_seconds(self.pids())

    def worker_rss(self) -> list[float]:
        return [round(rss_mb(p), 1) for p in self.worker_pids()]

    def alive(self) -> bool:
        return self.proc.poll() is None


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def http_post(url: str, body: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def start(
    name: str,
    argv: list[str],
    env: dict[str, str],
    url: str,
    ready_path: str,
    log_dir: Path,
    workers: int,
    timeout_s: float = 60.0,
) -> Server:
    """Start a server in its own session (so it and its workers can be stopped together); wait for it."""
    log = log_dir / f"server-{name}.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            argv,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = Server(name, url, proc, log, workers)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"{name} exited with {proc.returncode}; see {log}:\n{log.read_text()[-2000:]}")
        try:
            status, _ = http_get(url + ready_path, timeout=1.0)
            if status == 200 and len(server.worker_pids()) >= workers:
                return server
        except OSError:
            pass
        time.sleep(0.1)
    stop(server)
    raise RuntimeError(f"{name} not ready after {timeout_s:.0f} s; see {log}")


def stop(server: Server, timeout_s: float = 15.0) -> None:
    """SIGTERM to the server's own process group (it was started in a new session), then SIGKILL."""
    if not server.alive():
        return
    try:
        os.killpg(server.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        server.proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.proc.wait(timeout=5)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
