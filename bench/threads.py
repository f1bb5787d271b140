"""CPU per request of each thread of a real `cds serve` worker under wrk: where a worker's time goes
between the event loop and its helper threads (the audit flush runs in asyncio's thread pool).

    .venv/bin/python bench/threads.py [--case select] [-c 8] [-d 5] [--after large,fallback-cold] [--env K=V]

Starts one worker as bench/run.py does (CDS_AUTH=off, state in bench/raw/), warms it with --after's cases
and then the case itself (c=8, 2 s each), waits until it is idle, runs wrk for -d seconds and prints
user and system CPU per request of every thread from /proc/<pid>/task/<tid>/stat. `fallback-*` cases
start the local FHIR server first (tests/fhir_server.sh).
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import bodies as B
from bench import procs
from bench import run as R


def thread_ticks(pids: list[int]) -> dict[tuple[int, str], tuple[int, int]]:
    """(tid, thread name) -> (utime, stime) in clock ticks, for every thread of the given processes."""
    out: dict[tuple[int, str], tuple[int, int]] = {}
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                raw = Path(f"/proc/{pid}/task/{tid}/stat").read_bytes()
            except OSError:
                continue
            name = raw[raw.find(b"(") + 1 : raw.rfind(b")")].decode(errors="replace")
            rest = raw[raw.rfind(b")") + 2 :].split()
            out[(int(tid), name)] = (int(rest[11]), int(rest[12]))
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", default="select")
    ap.add_argument("-c", type=int, default=8, help="wrk connections")
    ap.add_argument("-d", type=float, default=5.0, help="seconds of measured load")
    ap.add_argument(
        "--after", default="", help="cases to run first (comma-separated), e.g. large,fallback-cold"
    )
    ap.add_argument(
        "--env", action="append", default=[], help="KEY=VALUE for the service (CDS_DATABASE_URL=…)"
    )
    a = ap.parse_args()
    R.RAW.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    wanted = [c for c in a.after.split(",") if c] + [a.case]
    fhir = R.start_fhir() if any(c.startswith("fallback") for c in wanted) else None
    server = None
    try:
        base = fhir[0] if fhir else None
        if base:
            R.load_fhir(base, B.realistic_patient(now).resources)
        bodies = R.build_bodies(now, base)
        extra = dict(e.split("=", 1) for e in a.env)
        server = R.start_service("threads", 1, [base] if base else [], **extra)
        for case in wanted:
            R.wrk(server.url, bodies[case], 8, 2, f"threads-warm-{case}")
        R.settle(server)
        pids = procs.tree(server.pid)
        before = thread_ticks(pids)
        s = R.wrk(server.url, bodies[a.case], a.c, a.d, "threads-run")
        after = thread_ticks(pids)
    finally:
        if server is not None:
            procs.stop(server)
        if fhir:
            R.stop_fhir(fhir[1])
    n = max(1, s["requests"])
    per = 1e6 / procs.CLK_TCK / n
    total_user = total_sys = 0.0
    print(
        f"{a.case}, c={a.c}, {a.d:g} s after {', '.join(wanted)}: {s['requests']} requests, "
        f"p50 {s['p50_us'] / 1000:.2f} ms, p99 {s['p99_us'] / 1000:.2f} ms"
    )
    for key in sorted(after):
        u0, s0 = before.get(key, (0, 0))
        u1, s1 = after[key]
        du, ds = (u1 - u0) * per, (s1 - s0) * per
        total_user += du
        total_sys += ds
        if du + ds >= 1:
            print(f"  thread {key[0]} ({key[1]}): user {du:.0f}, sys {ds:.0f} µs per request")
    print(
        f"  all threads: user {total_user:.0f}, sys {total_sys:.0f}, total {total_user + total_sys:.0f} µs per request"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
