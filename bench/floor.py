"""How close each hook case is to the floor of parsing its body: interleaved rounds on one worker each.

    .venv/bin/python bench/floor.py [--rounds 5] [--duration 3] [-c 8]

Starts the baseline app and the service (1 worker each, as bench/run.py starts them) and runs, in each
round, wrk on: the baseline; the baseline that also parses the nonplex body, then the select body,
with orjson (`POST /cds-services/json-parse`, the floor of any hook that reads that body); the
service's nonplex and select cases. Interleaving puts every case in each burst of other load on this
shared machine, so the medians of the ratios (to the same round's baseline) hold when single points
move by ±30%. Prints one line per point and the medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import procs
from bench.run import RAW, build_bodies, check, floor_body, measure, start_baseline, start_service, warm


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("-c", type=int, default=8)
    a = ap.parse_args()
    RAW.mkdir(parents=True, exist_ok=True)
    bodies = build_bodies(datetime.now(UTC), None)
    started: list[procs.Server] = []
    try:
        srv = start_service("floor-cds", 1, [])
        started.append(srv)
        reply = len(check(srv, bodies["select"])[1])
        base = start_baseline(1, reply)
        started.append(base)
        cases = [
            ("baseline", base, bodies["select"]),
            ("floor nonplex", base, floor_body(bodies["nonplex"])),
            ("nonplex", srv, bodies["nonplex"]),
            ("floor select", base, floor_body(bodies["select"])),
            ("select", srv, bodies["select"]),
        ]
        for _, server, body in cases:
            warm(server, body, 1.0)
        ratios: dict[str, list[float]] = {name: [] for name, _, _ in cases[1:]}
        cpu: dict[str, list[float]] = {name: [] for name, _, _ in cases}
        for r in range(a.rounds):
            rps: dict[str, float] = {}
            for name, server, body in cases:
                p = measure(server, body, name, a.c, a.duration)
                rps[name] = p.rps
                cpu[name].append(p.cpu_us)
                print(
                    f"round {r + 1} {name:14s} {p.rps:8,.0f} req/s  p50 {p.p50_ms:6.2f} ms  "
                    f"cpu {p.cpu_us:6,.0f} µs/req  errors {p.errors}",
                    flush=True,
                )
            for name, values in ratios.items():
                values.append(rps[name] / rps["baseline"])
        print(f"\nmedians over {a.rounds} rounds, c={a.c}, 1 worker each:")
        print(
            f"  {'baseline':14s} 1.00× baseline req/s   cpu {statistics.median(cpu['baseline']):6,.0f} µs/req"
        )
        for name, values in ratios.items():
            print(
                f"  {name:14s} {statistics.median(values):.2f}× baseline req/s   "
                f"cpu {statistics.median(cpu[name]):6,.0f} µs/req   (ratios {min(values):.2f}–{max(values):.2f})"
            )
    finally:
        for s in started:
            procs.stop(s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
