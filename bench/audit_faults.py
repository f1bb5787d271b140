"""The audit-trail fault probes of issue 18, as figures: run it on this tree and on an older one.

    .venv/bin/python -m bench.audit_faults [--root PATH]   # PATH: a checkout to serve (default: this one)

Each probe serves `python -m cds serve` (one worker, auth off) from `--root` on a PostgreSQL server of
its own (initdb as the postgres user, a free loopback port; the shared one is never touched) and prints:
1. 600 hook calls, 5 of them with a NUL in hookInstance: answers by status, audit rows missing.
2. A 12 s pause (SIGSTOP) of PostgreSQL under load, with readyz polled every second (as a kubelet
   does) and 4 EHRs sending feedback every second: rows missing, rows counted lost, feedback answers
   (status and seconds), RSS.
3. SIGTERM with 100 rows queued while PostgreSQL is paused: time to exit (SIGKILL after 40 s, as a
   pod's grace ends), rows missing, and the service's own log line about them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))

from bench.procs import rss_mb
from cds import demo
from tests.deploy.own_postgres import OwnPostgres, own_postgres
from tests.deploy.stores import fresh_database
from tests.support.servers import free_port

SELECT = "/cds-services/pml-plex-select"


@contextmanager
def serve(root: Path, dsn: str, log: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env.update(
        PYTHONPATH=str(root), CDS_AUTH="off", CDS_DATABASE_URL=dsn, CDS_STATE_DIR=str(log.parent / "state")
    )
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cds", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=str(root),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("service did not start: " + log.read_text()[-2000:])
        time.sleep(0.1)
    try:
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def hook_body() -> dict[str, Any]:
    return demo.hook_request(demo.patient("high-level", datetime.now(UTC)), "order-select")


async def hook_calls(base: str, instances: list[str], concurrency: int = 8) -> Counter[int]:
    body = hook_body()
    statuses: Counter[int] = Counter()
    todo = iter(instances)
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:

        async def worker() -> None:
            for instance in todo:
                r = await http.post(SELECT, json={**body, "hookInstance": instance})
                statuses[r.status_code] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


def audited(dsn: str, instances: list[str]) -> int:
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT count(DISTINCT hook_instance) FROM cds_audit WHERE hook_instance = ANY(%s)", (instances,)
        ).fetchone()
    return int(row[0]) if row else 0


def lost_metric(base: str) -> str:
    try:
        text = httpx.get(base + "/metrics", timeout=2).text
    except httpx.HTTPError:
        return "?"
    found = re.findall(r'^cds_audit_rows_lost_total\{reason="([^"]+)"\} (\S+)', text, re.MULTILINE)
    if found:
        return ", ".join(f"{r}={float(v):.0f}" for r, v in found)
    return "none" if "cds_audit_rows_lost" in text else "no such metric"


def terminate(proc: subprocess.Popen[bytes], grace_s: float) -> tuple[float, bool]:
    proc.send_signal(signal.SIGTERM)
    began = time.monotonic()
    try:
        proc.wait(timeout=grace_s)
        return time.monotonic() - began, True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return time.monotonic() - began, False


def probe_nul(root: Path, pg: OwnPostgres, work: Path) -> None:
    with fresh_database(pg.dsn, "cds_probe") as dsn, serve(root, dsn, work / "nul.log") as (base, proc):
        good = [str(uuid.uuid4()) for _ in range(595)]
        bad = [f"nul\x00{i}" for i in range(5)]
        calls = list(good)
        for i, b in enumerate(bad):
            calls.insert(60 + i * 110, b)
        statuses = asyncio.run(hook_calls(base, calls))
        time.sleep(2)
        terminate(proc, 40)  # a clean stop writes what is queued
        missing = len(good) - audited(dsn, good)
    print(
        f"1. 600 hook calls, 5 with NUL in hookInstance: answers {dict(sorted(statuses.items()))};"
        f" audit rows of the 595 others missing: {missing} ({missing / 595:.0%})"
    )


def probe_pause(root: Path, pg: OwnPostgres, work: Path) -> None:
    log = work / "pause.log"
    with fresh_database(pg.dsn, "cds_probe") as dsn, serve(root, dsn, log) as (base, proc):
        answered: list[str] = []
        feedback: Counter[str] = Counter()
        readyz: Counter[int] = Counter()
        stop = asyncio.Event()

        async def load() -> None:
            body = hook_body()
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:

                async def worker() -> None:
                    while not stop.is_set():
                        instance = str(uuid.uuid4())
                        r = await http.post(SELECT, json={**body, "hookInstance": instance})
                        if r.status_code == 200:
                            answered.append(instance)

                async def poll() -> None:  # a kubelet's readiness probe, 1/s
                    while not stop.is_set():
                        with_timeout = httpx.Timeout(1.0)
                        try:
                            readyz[(await http.get("/readyz", timeout=with_timeout)).status_code] += 1
                        except httpx.HTTPError:
                            readyz[0] += 1
                        await asyncio.sleep(1)

                async def feedback_calls() -> None:
                    url = SELECT + "/feedback"
                    while not stop.is_set():
                        item = {
                            "card": str(uuid.uuid4()),
                            "outcome": "overridden",
                            "outcomeTimestamp": "2026-01-05T10:00:00Z",
                        }
                        began = time.monotonic()
                        try:
                            r = await http.post(url, json={"feedback": [item]}, timeout=20)
                            key = f"{r.status_code}"
                        except httpx.HTTPError as exc:
                            key = type(exc).__name__
                        feedback[f"{key} in {time.monotonic() - began:.0f} s"] += 1
                        await asyncio.sleep(1)

                await asyncio.gather(
                    *(worker() for _ in range(6)), poll(), *(feedback_calls() for _ in range(4))
                )

        async def run() -> tuple[float, float]:
            task = asyncio.create_task(load())
            await asyncio.sleep(4)
            rss_before = rss_mb(proc.pid)
            await asyncio.to_thread(pg.pause)
            await asyncio.sleep(12)
            rss_during = rss_mb(proc.pid)
            await asyncio.to_thread(pg.resume)
            await asyncio.sleep(4)
            stop.set()
            await task
            return rss_before, rss_during

        try:
            rss_before, rss_during = asyncio.run(run())
        finally:
            pg.resume()
        time.sleep(12)  # readyz and flushes waiting on the pool time out (old code: up to 10 s)
        counted = lost_metric(base)
        terminate(proc, 40)
        missing = len(answered) - audited(dsn, answered)
    print(
        f"2. 12 s PostgreSQL pause under load: {len(answered)} hook calls answered 200, audit rows missing"
        f" {missing}, counted lost ({counted}); feedback answers {dict(feedback)}; readyz {dict(readyz)};"
        f" RSS {rss_before:.0f} -> {rss_during:.0f} MB during the pause"
    )


def probe_sigterm(root: Path, pg: OwnPostgres, work: Path) -> None:
    log = work / "sigterm.log"
    with fresh_database(pg.dsn, "cds_probe") as dsn, serve(root, dsn, log) as (base, proc):
        asyncio.run(hook_calls(base, [str(uuid.uuid4()) for _ in range(20)]))
        time.sleep(1.5)
        queued = [str(uuid.uuid4()) for _ in range(100)]
        pg.pause()
        try:
            asyncio.run(hook_calls(base, queued))
            took, clean = terminate(proc, 40)
        finally:
            pg.resume()
        time.sleep(1)
        missing = len(queued) - audited(dsn, queued)
    lines = [ln for ln in log.read_text().splitlines() if "audit" in ln and ("lost" in ln or "flush" in ln)]
    print(
        f"3. SIGTERM with 100 audit rows queued, PostgreSQL paused: {'exited' if clean else 'SIGKILLed'} after"
        f" {took:.1f} s; rows missing {missing}; log: {lines[-1][-160:] if lines else 'nothing about them'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=HERE, help="the checkout to serve")
    parser.add_argument("--only", choices=["nul", "pause", "sigterm"], action="append")
    args = parser.parse_args()
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"cds-audit-probe-{os.getpid()}"
    work.mkdir(parents=True)
    print(f"serving {args.root.resolve()} (logs in {work})")
    with own_postgres() as pg:
        for name, probe in (("nul", probe_nul), ("pause", probe_pause), ("sigterm", probe_sigterm)):
            if not args.only or name in args.only:
                probe(args.root.resolve(), pg, work)


if __name__ == "__main__":
    main()
