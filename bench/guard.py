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
    """One case at one concurrency: the points of every service, keyed by its label ("new", old hashes)."""

    case: str
    conc: int
    points: dict[str, list[R.Point]] = field(default_factory=dict)

    def cpu(self, label: str) -> float:
        pts = self.points.get(label, [])
        n = sum(p.requests for p in pts)
        return sum(p.cpu_us * p.requests for p in pts) / n if n else 0.0

    def change(self, old: str) -> float:
        base = self.cpu(old)
        return self.cpu("new") / base - 1 if base else 0.0

    def p50(self, label: str) -> float:
        v = sorted(p.p50_ms for p in self.points.get(label, []))
        return v[len(v) // 2] if v else 0.0


@dataclass
class Side:
    """A service under the guard: this tree ("new") or an --old worktree, and the bodies it is sent."""

    label: str
    code: Path
    server: procs.Server | None = None
    bodies: dict[str, R.Body] = field(default_factory=dict)


def short_hash(tree: Path) -> str:
    r = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    return r.stdout.strip() or tree.name


def old_label(old: Path) -> str:
    r = subprocess.run(
        ["git", "-C", str(old), "log", "-1", "--format=%h %s"], capture_output=True, text=True, check=False
    )
    return r.stdout.strip()[:80] or str(old)


def old_bodies(old: Path, now: datetime, new: dict[str, R.Body], label: str) -> dict[str, R.Body]:
    """The guard bodies built by the old tree's builder (same `now`), beside this tree's."""
    out_dir = R.RAW / f"bodies-{label}"
    subprocess.run(
        [str(old / ".venv" / "bin" / "python"), "-c", _OLD_BODIES, now.isoformat(), str(out_dir)],
        cwd=old,
        check=True,
        timeout=120,
    )
    bodies: dict[str, R.Body] = {}
    for name in GUARD_CASES:
        f = out_dir / f"{name}.json"
        bodies[name] = R.Body(f"{name}-{label}", "POST", new[name].path, f, f.stat().st_size)
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


def compare(sides: list[Side], duration: float, warmup: float, rounds: int) -> list[Comparison]:
    """Every case and c on every side in turn, `rounds` times, the order rotated every round."""
    rows: list[Comparison] = []
    for case in GUARD_CASES:
        for side in sides:
            assert side.server is not None
            R.warm(side.server, side.bodies[case], warmup)
        for c in (1, 8):
            row = Comparison(case, c)
            for k in range(rounds):
                turn = k % len(sides)
                for side in sides[turn:] + sides[:turn]:
                    assert side.server is not None
                    p = R.measure(
                        side.server, side.bodies[case], f"{case} {side.label} r{k + 1}", c, duration
                    )
                    row.points.setdefault(side.label, []).append(p)
            rows.append(row)
    return rows


def run_old_beside_new(
    olds: list[Path],
    now: datetime,
    bodies: dict[str, R.Body],
    duration: float,
    warmup: float,
    rounds: int,
    prefer_own: bool = False,
) -> str:
    new = Side("new", R.ROOT, bodies=bodies)
    sides = [Side(short_hash(old), old) for old in olds] + [new]
    notes: list[str] = []
    try:
        for side in sides:
            side.server = R.start_service(f"guard-{side.label}-w1", 1, [], code=side.code)
        for side in sides[:-1]:
            assert side.server is not None and new.server is not None
            own = old_bodies(side.code, now, bodies, side.label)
            side.bodies, side_notes = bodies_for_old(side.server, new.server, bodies, own, prefer_own)
            notes += [f"{side.label} {n}" for n in side_notes]
        for n in notes:
            print(f"  guard body {n}", flush=True)
        rows = compare(sides, duration, warmup, rounds)
    finally:
        for side in sides:
            if side.server is not None:
                procs.stop(side.server)
    return guard_md(rows, sides, notes, duration, rounds)


def guard_md(
    rows: list[Comparison], sides: list[Side], notes: list[str], duration: float, rounds: int
) -> str:
    olds = [s for s in sides if s.label != "new"]
    first = olds[0].label
    L = ["## Performance guard: old code beside new (issue 16)\n"]
    L.append(
        "Old: "
        + "; ".join(f"`{s.code}` at {old_label(s.code)}" for s in olds)
        + f". New: this tree at {old_label(R.ROOT)}{' (with uncommitted changes)' if dirty(R.ROOT) else ''}. "
        f"1 worker each, all running; {rounds} rounds of {duration:g} s per point, the services in turn "
        "(the order rotated each round). CPU/req = the server's process-tree CPU over the replies of all "
        f"rounds. The verdict compares new with {first} (the first --old).\n"
    )
    others = olds[1:]
    head = f"| case | c | {first} CPU µs/req | new CPU µs/req | change | limit | verdict |"
    head += "".join(f" {s.label} CPU µs/req | new vs {s.label} |" for s in others)
    head += " p50 ms (" + " / ".join(s.label for s in sides) + ") |"
    L.append(head)
    L.append("|---" * (8 + 2 * len(others)) + "|")
    for r in rows:
        limit = LIMITS[r.case]
        change = r.change(first)
        errors = sum(p.errors for pts in r.points.values() for p in pts)
        line = (
            f"| {r.case} | {r.conc} | {r.cpu(first):,.0f} | {r.cpu('new'):,.0f} | {change:+.1%} | +{limit:.0%} | "
            f"{'**met**' if change <= limit else '**not met**'}{f' ({errors} errors)' if errors else ''} |"
        )
        line += "".join(f" {r.cpu(s.label):,.0f} | {r.change(s.label):+.1%} |" for s in others)
        line += " " + " / ".join(f"{r.p50(s.label):.2f}" for s in sides) + " |"
        L.append(line)
    L.append("")
    L.append(
        "Per round (CPU µs/req, "
        + " / ".join(s.label for s in sides)
        + "): "
        + "; ".join(
            f"{r.case} c={r.conc}: "
            + ", ".join("/".join(f"{r.points[s.label][k].cpu_us:,.0f}" for s in sides) for k in range(rounds))
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
        "(p50 − p50 at RTT 0, same workers and c) / RTT: at c=1 the round trips a call waits in turn (plus "
        "the CPU a call costs more after a wait); at c=8 the calls also queue for the worker's CPU (8 × the "
        "CPU per call), which that column then mixes in. FHIR reads and new connections are per hook call."
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
    olds: list[Path], now: datetime, bodies: dict[str, R.Body], fhir_base: str | None, a: Any
) -> str:
    """The sections for results.md (or bench/guard.md with --guard): old beside new, then latency."""
    parts: list[str] = []
    t0 = time.monotonic()
    if olds:
        parts.append(
            run_old_beside_new(
                olds, now, bodies, a.guard_duration, a.guard_warmup, a.guard_rounds, a.old_bodies == "own"
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
                old=olds[0] if a.latency_old and olds else None,
                workers=tuple(int(x) for x in a.latency_workers.split(",")),
                mode=a.latency_mode,
                env=dict(kv.split("=", 1) for kv in a.latency_env),
            )
        )
        print(f"  guard: latency done in {time.monotonic() - t0:.0f} s", flush=True)
    return "\n".join(parts)
