"""Issue 18 defect 6: after a SIGKILL of `cds serve`'s supervisor its workers exit (they used to keep
serving through SO_REUSEPORT), and a new generation never shares the port with an old one silently.

Real processes: `cds serve --workers 2`, killed with SIGKILL; workers found through /proc."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.security.procs import ROOT, service_process
from tests.support.servers import free_port

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="Linux /proc needed")


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    return {"CDS_AUTH": "off", "CDS_STATE_DIR": str(tmp), "CDS_WORKERS": "2", **extra}


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper no longer serves)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _workers(supervisor: int) -> list[int]:
    """The supervisor's worker processes (multiprocessing spawn children, not its resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == supervisor and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def _wait_workers(supervisor: int, n: int) -> list[int]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pids = _workers(supervisor)
        if len(pids) >= n:
            return pids
        time.sleep(0.1)
    raise AssertionError(f"{n} workers did not start")


def _serve(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cds", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env={**clean, "PYTHONPATH": str(ROOT), **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=str(ROOT),
        )


def test_workers_exit_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    port = free_port()
    with service_process(_env(tmp_path, CDS_DEMO="1"), tmp_path / "old.log", port=port) as old:
        workers = _wait_workers(old.proc.pid, 2)
        old.kill()  # SIGKILL: no chance to stop its workers
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
            time.sleep(0.1)
        orphans = [pid for pid in workers if _alive(pid)]
        for pid in orphans:  # do not leave them behind for other tests
            os.kill(pid, signal.SIGKILL)
        assert not orphans, f"{len(orphans)} workers kept running after their supervisor was killed"

    # the port is free again: a new generation (demo off) serves every request alone
    with service_process(_env(tmp_path), tmp_path / "new.log", port=port) as new:
        _wait_workers(new.proc.pid, 2)
        answers = []
        for _ in range(200):
            with httpx.Client(timeout=5) as client:  # a new connection each time
                answers.append(client.get(new.base + "/demo").status_code)
        assert answers.count(404) == 200, f"{200 - answers.count(404)} of 200 answered by the old generation"


def test_a_second_generation_refuses_a_port_in_use(tmp_path: Path) -> None:
    port = free_port()
    with service_process(_env(tmp_path), tmp_path / "first.log", port=port):
        second = _serve(_env(tmp_path), port, tmp_path / "second.log")
        try:
            code = second.wait(timeout=30)
        except subprocess.TimeoutExpired:
            second.terminate()
            second.wait(timeout=30)
            pytest.fail("a second cds serve started on a port the first one serves (SO_REUSEPORT)")
        assert code == 3
        assert "cannot listen" in (tmp_path / "second.log").read_text()


def test_sigterm_stops_supervisor_and_workers(tmp_path: Path) -> None:
    port = free_port()
    with service_process(_env(tmp_path), tmp_path / "svc.log", port=port) as svc:
        workers = _wait_workers(svc.proc.pid, 2)
        svc.proc.terminate()
        assert svc.proc.wait(timeout=30) == 0
    assert not any(_alive(pid) for pid in workers)
