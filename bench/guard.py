"""Issue 16's performance guard: the old code beside the new in one run, and the no-prefetch hook over RTT.

    .venv/bin/python bench/run.py --guard --old ../bench-old    # only these cases (about 5 minutes)
    make bench ARGS="--old ../bench-old"                         # the full run plus these sections

Old beside new: both services (`cds serve`, 1 worker, CDS_AUTH=off) run at once; each case and
concurrency is measured on one, then the other, for `rounds` rounds, the order swapped every round, so a
burst of other load on the machine hits both. CPU per request is the server's process-tree CPU over the
replies it sent (bench/procs.py), summed over the rounds. `--old` is a git worktree of the older code
with its own `.venv` (`make venv` there). The bodies come from this tree's builder; the old code's
builder (its bench/bodies.py) makes its own, and those are used for the old service only when it does
not answer this tree's body with 200 and the same number of cards.

Latency: the local FHIR server (sekmet) holds the realistic patient; bench/latency_proxy.py in front of it
holds every reply for the RTT. The new service answers order-select without prefetch (every resource read
through the proxy, a new token per request so the read cache never answers), at c=1 and c=8; RTT 0 is
the FHIR server without proxy. "Round trips" = (p50 at that RTT - p50 at RTT 0) / RTT: 1 when the reads
go out at once, one per read when they go one after another.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench import bodies as B
from bench import procs
from bench import run as R

GUARD_CASES = ("select", "sign", "nonplex")
LIMITS = {"select": 0.15, "sign": 0.15, "nonplex": 0.10}  # issue 16: PLEX +15%, non-PLEX +10%
RTTS_MS = (0, 20, 50)
OWN = "each service its own builder's body"

# Run with the old tree's interpreter, cwd = the old tree: its own builder and prefetch templates.
_OLD_BODIES = """
import sys
from datetime import datetime
from pathlib import Path
sys.path.insert(0, ".")
from bench import bodies as B
from cds import demo
now, out = datetime.fromisoformat(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
p = B.realistic_patient(now)
(out / "select.json").write_bytes(B.dumps(B.hook_body(p, "order-select")))
(out / "sign.json").write_bytes(B.dumps(B.hook_body(p, "order-sign")))
mri = demo.patient("non-plex-order", now)
(out / "nonplex.json").write_bytes(B.dumps(B.hook_body(mri, "order-select")))
"""


@dataclass
class Comparison:
    case: str
    conc: int
    old: list[R.Point] = field(default_factory=list)
    new: list[R.Point] = field(default_factory=list)

    @staticmethod
    def cpu(points: list[R.Point]) -> float:
        n = sum(p.requests for p in points)
        return sum(p.cpu_us * p.requests for p in points) / n if n else 0.0

    @property
    def change(self) -> float:
        old = self.cpu(self.old)
        return self.cpu(self.new) / old - 1 if old else 0.0


def old_label(old: Path) -> str:
    r = subprocess.run(
        ["git", "-C", str(old), "log", "-1", "--format=%h %s"], capture_output=True, text=True, check=False
    )
    return r.stdout.strip()[:80] or str(old)


def old_bodies(old: Path, now: datetime, new: dict[str, R.Body]) -> dict[str, R.Body]:
    """The guard bodies built by the old tree's builder (same `now`), beside this tree's."""
    out_dir = R.RAW / "bodies-old"
    subprocess.run(
        [str(old / ".venv" / "bin" / "python"), "-c", _OLD_BODIES, now.isoformat(), str(out_dir)],
        cwd=old,
        check=True,
        timeout=120,
    )
    bodies: dict[str, R.Body] = {}
    for name in GUARD_CASES:
        f = out_dir / f"{name}.json"
        bodies[name] = R.Body(f"{name}-old", "POST", new[name].path, f, f.stat().st_size)
    return bodies


def cards(server: procs.Server, body: R.Body) -> tuple[int, int | None]:
    status, data = R.check(server, body)
    try:
        return status, len(json.loads(data).get("cards", [])) if status == 200 else None
    except ValueError:
        return status, None


def bodies_for_old(
    old_srv: procs.Server,
    new_srv: procs.Server,
    new: dict[str, R.Body],
    own: dict[str, R.Body],
    prefer_own: bool = False,
) -> tuple[dict[str, R.Body], list[str]]:
    """The bodies the old service gets: this tree's when it answers them 200 (the same input for both),
    else (or with `prefer_own`: each service the prefetch its own templates ask for) its own builder's."""
    chosen: dict[str, R.Body] = {}
    notes: list[str] = []
    for name in GUARD_CASES:
        same = own[name].file.read_bytes() == new[name].file.read_bytes()  # type: ignore[union-attr]
        want = cards(new_srv, new[name])
        if want[0] != 200:
            raise RuntimeError(f"the new service answered the {name} body with {want[0]}")
        got = cards(old_srv, own[name] if prefer_own else new[name])
        if got[0] != 200 and not prefer_own:
            got = cards(old_srv, own[name])
            prefer = True
        else:
            prefer = prefer_own
        if got[0] != 200:
            raise RuntimeError(f"the old service answered the {name} body with {got[0]}")
        chosen[name] = own[name] if prefer else new[name]
        sizes = f"new {new[name].size:,} bytes" + (
            "" if same else f", the old builder's {own[name].size:,} bytes"
        )
        notes.append(
            f"{name}: {OWN if prefer else 'one body for both'} ({sizes}); cards new {want[1]}, old {got[1]}"
        )
    return chosen, notes


def compare(
    old_srv: procs.Server,
    new_srv: procs.Server,
    old_b: dict[str, R.Body],
    new_b: dict[str, R.Body],
    duration: float,
    warmup: float,
    rounds: int,
    concs: tuple[int, ...] = (1, 8),
) -> list[Comparison]:
    rows: list[Comparison] = []
    for case in GUARD_CASES:
        R.warm(old_srv, old_b[case], warmup)
        R.warm(new_srv, new_b[case], warmup)
        for c in concs:
            row = Comparison(case, c)
            for k in range(rounds):
                order = [("old", old_srv, old_b), ("new", new_srv, new_b)]
                for side, srv, b in order if k % 2 == 0 else order[::-1]:
                    p = R.measure(srv, b[case], f"{case} {side} r{k + 1}", c, duration)
                    (row.old if side == "old" else row.new).append(p)
            rows.append(row)
    return rows


def run_old_beside_new(
    old: Path,
    now: datetime,
    bodies: dict[str, R.Body],
    duration: float,
    warmup: float,
    rounds: int,
    prefer_own: bool = False,
) -> str:
    started: list[procs.Server] = []
    try:
        new_srv = R.start_service("guard-new-w1", 1, [])
        started.append(new_srv)
        old_srv = R.start_service("guard-old-w1", 1, [], code=old)
        started.append(old_srv)
        own = old_bodies(old, now, bodies)
        old_b, notes = bodies_for_old(old_srv, new_srv, bodies, own, prefer_own)
        for n in notes:
            print(f"  guard body {n}", flush=True)
        rows = compare(old_srv, new_srv, old_b, bodies, duration, warmup, rounds)
    finally:
        for s in started:
            procs.stop(s)
    return guard_md(rows, old, notes, duration, rounds)


def guard_md(rows: list[Comparison], old: Path, notes: list[str], duration: float, rounds: int) -> str:
    new_label = old_label(R.ROOT)
    L = ["## Performance guard: old code beside new (issue 16)\n"]
    L.append(
        f"Old: `{old}` at {old_label(old)}. New: this tree at {new_label}"
        f"{' (with uncommitted changes)' if dirty(R.ROOT) else ''}. 1 worker each, both running; "
        f"{rounds} rounds of {duration:g} s per point, old and new alternating (order swapped each round). "
        "CPU/req = the server's process-tree CPU over the replies of all rounds.\n"
    )
    L.append(
        "| case | c | old CPU µs/req | new CPU µs/req | change | limit | verdict | old p50 ms | new p50 ms |"
    )
    L.append("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        limit = LIMITS[r.case]
        ok = r.change <= limit
        p50 = [sorted(p.p50_ms for p in side)[len(side) // 2] for side in (r.old, r.new)]
        errors = sum(p.errors for p in r.old + r.new)
        L.append(
            f"| {r.case} | {r.conc} | {Comparison.cpu(r.old):,.0f} | {Comparison.cpu(r.new):,.0f} | "
            f"{r.change:+.1%} | +{limit:.0%} | {'**met**' if ok else '**not met**'}"
            f"{f' ({errors} errors)' if errors else ''} | {p50[0]:.2f} | {p50[1]:.2f} |"
        )
    L.append("")
    L.append(
        "Per round (CPU µs/req, old / new): "
        + "; ".join(
            f"{r.case} c={r.conc}: "
            + ", ".join(f"{o.cpu_us:,.0f}/{n.cpu_us:,.0f}" for o, n in zip(r.old, r.new))
            for r in rows
        )
        + ".\n"
    )
    L.append("Bodies: " + "; ".join(notes) + ".\n")
    return "\n".join(L)


def dirty(root: Path) -> bool:
    r = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain"], capture_output=True, text=True, check=False
    )
    return bool(r.stdout.strip())


# ---------------------------------------------------------------- latency


@dataclass
class Proxy:
    rtt_ms: float
    base: str  # the FHIR base URL through the proxy
    root: str  # http://127.0.0.1:<port>
    mode: str
    proc: subprocess.Popen[str]

    def stats(self) -> dict[str, int]:
        """Connections accepted and requests answered so far (replay mode; zeros in tcp mode)."""
        if self.mode != "replay":
            return {"connections": 0, "requests": 0}
        status, data = procs.http_get(self.root + "/_latency_proxy/stats", timeout=5)
        return json.loads(data) if status == 200 else {"connections": 0, "requests": 0}


def start_proxy(fhir_base: str, rtt_ms: float, mode: str) -> Proxy:
    u = urlsplit(fhir_base)
    argv = [R.PY, str(R.BENCH / "latency_proxy.py"), "--upstream", f"{u.hostname}:{u.port}"]
    proc = subprocess.Popen(
        [*argv, "--rtt-ms", str(rtt_ms), "--mode", mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("LISTENING "):
        proc.kill()
        raise RuntimeError(f"latency proxy did not start: {line!r}")
    root = f"http://127.0.0.1:{int(line.split()[1])}"
    return Proxy(rtt_ms, root + u.path, root, mode, proc)


def stop_proxy(p: Proxy) -> None:
    if p.proc.poll() is None:
        p.proc.terminate()
        try:
            p.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.proc.kill()
            p.proc.wait()


@dataclass
class LatencyPoint:
    service: str  # "new" or "old"
    workers: int
    rtt_ms: float
    case: str  # "cold" or "warm"
    point: R.Point
    reads: float | None  # FHIR requests per hook call (replay mode)
    connects: float | None  # new FHIR connections per hook call (replay mode)


def latency_bodies(now: datetime, base: str, rtt: float) -> dict[str, R.Body]:
    p = B.realistic_patient(now)
    tag = f"rtt{rtt:g}"
    cold = B.hook_body(p, "order-select", prefetch=False, fhir_server=base, token="@@TOKEN@@")
    wsel = B.hook_body(p, "order-select", prefetch=False, fhir_server=base, token=f"bench-warm-{tag}")
    wsign = B.hook_body(p, "order-sign", prefetch=False, fhir_server=base, token=f"bench-warm-{tag}")
    return {
        "cold": R.write_body(f"latency-cold-{tag}", R.SELECT, cold),
        "warm-select": R.write_body(f"latency-warm-select-{tag}", R.SELECT, wsel),
        "warm": R.write_body(f"latency-warm-{tag}", R.SIGN, wsign),
    }


def measure_through(
    srv: procs.Server, px: Proxy, body: R.Body, label: str, case: str, conc: int, duration: float
) -> LatencyPoint:
    R.settle(srv)  # the warm-up's last requests finish before the proxy's counters are read
    s0 = px.stats()
    p = R.measure(srv, body, f"{case} rtt{px.rtt_ms:g} {label}", conc, duration)
    s1 = px.stats()
    n = max(1, p.requests)
    reads = (s1["requests"] - s0["requests"]) / n if px.mode == "replay" else None
    conns = (s1["connections"] - s0["connections"]) / n if px.mode == "replay" else None
    return LatencyPoint(label, srv.workers, px.rtt_ms, case, p, reads, conns)


def latency_on(
    srv: procs.Server, label: str, proxies: list[Proxy], now: datetime, duration: float, warmup: float
) -> list[LatencyPoint]:
    pts: list[LatencyPoint] = []
    for px in proxies:
        bodies = latency_bodies(now, px.base, px.rtt_ms)
        status, data = R.check(srv, bodies["cold"])
        print(
            f"  latency check {label} w={srv.workers} rtt={px.rtt_ms:g} ms: {status} {len(data)} bytes",
            flush=True,
        )
        R.warm(srv, bodies["cold"], warmup / 2)
        for c in (1, 8):
            pts.append(measure_through(srv, px, bodies["cold"], label, "cold", c, duration))
        if label == "new":
            R.warm(srv, bodies["warm-select"], warmup / 2)
            pts.append(measure_through(srv, px, bodies["warm"], label, "warm", 8, duration))
    return pts


def run_latency(
    now: datetime,
    fhir_base: str,
    duration: float,
    warmup: float,
    *,
    old: Path | None = None,
    workers: tuple[int, ...] = (1, 2),
    mode: str = "replay",
    rtts: tuple[float, ...] = RTTS_MS,
    env: dict[str, str] | None = None,
) -> str:
    proxies: list[Proxy] = []
    pts: list[LatencyPoint] = []
    try:
        proxies = [start_proxy(fhir_base.rstrip("/"), float(rtt), mode) for rtt in rtts]
        allow = [px.base for px in proxies]
        codes: list[tuple[str, Path]] = [("new", R.ROOT)] + ([("old", old)] if old is not None else [])
        for w in workers:
            for label, code in codes:
                srv = R.start_service(f"latency-{label}-w{w}", w, allow, code=code, **(env or {}))
                try:
                    pts.extend(latency_on(srv, label, proxies, now, duration, warmup))
                finally:
                    procs.stop(srv)
    finally:
        for px in proxies:
            stop_proxy(px)
    return latency_md(pts, duration, mode, env or {})


def latency_md(pts: list[LatencyPoint], duration: float, mode: str, env: dict[str, str]) -> str:
    def at_zero(lp: LatencyPoint) -> R.Point | None:
        for q in pts:
            if (q.service, q.workers, q.rtt_ms, q.case, q.point.conc) == (
                lp.service,
                lp.workers,
                0.0,
                lp.case,
                lp.point.conc,
            ):
                return q.point
        return None

    how = (
        "answered from the replies the proxy stored (the FHIR server's own time is out of the figures)"
        if mode == "replay"
        else "forwarded to the live sekmet server"
    )
    L = ["## No-prefetch hook over a FHIR server with injected latency (issue 16)\n"]
    L.append(
        f"order-select without prefetch; the realistic patient on the local sekmet server behind "
        f"`bench/latency_proxy.py --mode {mode}` (every read {how}, each reply held for the RTT); "
        f"{duration:g} s per point. cold: a new access token per request (the service's read cache never "
        "answers); warm: order-sign with the token of a preceding order-select (its read cache answers). "
        "Target at c=8: p50 ≤ RTT + 10 ms and p99 ≤ 2 × RTT; limit: one round trip. Round trips = "
        "(p50 − p50 at RTT 0, same workers and c) / RTT. FHIR reads and new connections are per hook call."
        + (
            f" Service environment besides the defaults: {', '.join(f'`{k}={v}`' for k, v in env.items())}."
            if env
            else ""
        )
        + "\n"
    )
    L.append(
        "| service | workers | case | RTT ms | c | req/s | p50 ms | p99 ms | round trips (p50) | FHIR reads "
        "| new connections | CPU µs/req | errors | target (c=8) |"
    )
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for lp in pts:
        p = lp.point
        zero = at_zero(lp)
        trips = f"{(p.p50_ms - zero.p50_ms) / lp.rtt_ms:.2f}" if lp.rtt_ms > 0 and zero is not None else "-"
        target = "-"
        if lp.rtt_ms > 0 and p.conc == 8 and lp.case == "cold":
            ok = p.p50_ms <= lp.rtt_ms + 10 and p.p99_ms <= 2 * lp.rtt_ms and p.errors == 0
            target = (
                f"p50 ≤ {lp.rtt_ms + 10:g}, p99 ≤ {2 * lp.rtt_ms:g}: {'**met**' if ok else '**not met**'}"
            )
        L.append(
            f"| {lp.service} | {lp.workers} | {lp.case} | {lp.rtt_ms:g} | {p.conc} | {p.rps:,.0f} | "
            f"{p.p50_ms:.2f} | {p.p99_ms:.2f} | {trips} | {R.fmt(lp.reads, 1)} | {R.fmt(lp.connects, 2)} | "
            f"{p.cpu_us:,.0f} | {p.errors} | {target} |"
        )
    L.append("")
    return "\n".join(L)


def run_guard(
    old: Path | None, now: datetime, bodies: dict[str, R.Body], fhir_base: str | None, a: Any
) -> str:
    """The sections for results.md (or bench/guard.md with --guard): old beside new, then latency."""
    parts: list[str] = []
    t0 = time.monotonic()
    if old is not None:
        parts.append(
            run_old_beside_new(
                old, now, bodies, a.guard_duration, a.guard_warmup, a.guard_rounds, a.old_bodies == "own"
            )
        )
        print(f"  guard: old beside new done in {time.monotonic() - t0:.0f} s", flush=True)
    if fhir_base:
        parts.append(
            run_latency(
                now,
                fhir_base,
                a.latency_duration,
                a.guard_warmup,
                old=old if a.latency_old else None,
                workers=tuple(int(x) for x in a.latency_workers.split(",")),
                mode=a.latency_mode,
                env=dict(kv.split("=", 1) for kv in a.latency_env),
            )
        )
        print(f"  guard: latency done in {time.monotonic() - t0:.0f} s", flush=True)
    return "\n".join(parts)
