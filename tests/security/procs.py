"""Processes for whole-service tests: the service (`python -m cds serve`) and the misbehaving FHIR server."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            httpx.get(url, timeout=0.5)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up: {log.read_text()[-2000:]}")


@dataclass
class Proc:
    base: str
    proc: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


@contextlib.contextmanager
def service_process(env: dict[str, str], log: Path, port: int | None = None) -> Iterator[Proc]:
    """`python -m cds serve` with only the given CDS_* settings; stdout and stderr go to `log`."""
    port = port or free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    full = {**clean, "PYTHONPATH": str(ROOT), **env}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cds", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=full,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=str(ROOT),
        )
    p = Proc(f"http://127.0.0.1:{port}", proc, log)
    try:
        _wait_http(p.base + "/healthz", proc, log)
        yield p
    finally:
        p.stop()


@contextlib.contextmanager
def fake_fhir_process(patient: Any, tmp: Path) -> Iterator[str]:
    """tests.security.fake_fhir in its own process; yields its base URL (modes are the first segment)."""
    data = tmp / "fake-fhir.json"
    data.write_text(json.dumps({"resources": patient.resources, "patient_id": patient.patient_id}))
    port = free_port()
    log = tmp / "fake-fhir.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.security.fake_fhir", str(port), str(data)],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=str(ROOT),
        )
    p = Proc(f"http://127.0.0.1:{port}", proc, log)
    try:
        _wait_http(p.base + "/ok/fhir/metadata", proc, log)
        yield p.base
    finally:
        p.stop()
