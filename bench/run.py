"""Benchmark suite (`make bench`): the CDS service under wrk on loopback, against a same-run baseline.

    .venv/bin/python bench/run.py            # full run (about 10 minutes), writes bench/results.md
    .venv/bin/python bench/run.py --quick    # short points, 10k-request soak (about 2 minutes)
    .venv/bin/python bench/run.py --soak     # only the memory soak (100,000 requests)
    .venv/bin/python bench/run.py --guard --old ../bench-old   # issue 16's guard only (bench/guard.py)

See bench/README.md for what each column means. Raw wrk output, server logs and bodies go to bench/raw/.
Everything runs on 127.0.0.1; every load run is bounded by wrk's -d and a subprocess timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import bodies as B
from bench import procs

BENCH = ROOT / "bench"
RAW = BENCH / "raw"
LUA = BENCH / "hook.lua"
PY = sys.executable
SELECT = "/cds-services/pml-plex-select"
SIGN = "/cds-services/pml-plex-sign"


# ---------------------------------------------------------------- load runs


@dataclass
class Point:
    workers: int
    case: str
    conc: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    cpu_us: float  # server CPU (process tree utime+stime) per request
    rss_mb: list[float]  # per worker, after the run
    requests: int
    errors: int  # socket errors + non-2xx
    duration_s: float
    note: str = ""
    ratio_rps: float | None = None
    ratio_cpu: float | None = None


@dataclass
class Body:
    name: str
    method: str
    path: str
    file: Path | None
    size: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


FLOORS = {  # body -> the case name of the baseline that also parses that body
    "select": "floor: baseline + orjson.loads of the select body",
    "nonplex": "floor: baseline + orjson.loads of the nonplex body",
}


def floor_body(body: Body) -> Body:
    """`body` sent to the baseline's parse-only route (bench/baseline_app.py): the floor of that body."""
    return replace(body, name=f"{body.name}-json-parse", path="/cds-services/json-parse")


_salt = [int(time.time()) % 100000]


def wrk(
    url: str, body: Body, conc: int, duration: float, tag: str, max_requests: int = 0, on_line: Any = None
) -> dict[str, Any]:
    """One wrk run (1 thread, `conc` connections); returns the BENCHJSON summary."""
    _salt[0] += 1
    argv = [
        "wrk",
        "-t1",
        f"-c{conc}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        url,
        "--",
        body.method,
        body.path,
        str(body.file) if body.file else "-",
        str(max_requests),
        str(_salt[0]),
    ]
    out_file = RAW / f"wrk-{tag}.txt"
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + duration + 60
    assert proc.stdout is not None
    timer = threading.Timer(duration + 60, lambda: proc.poll() is None and proc.kill())
    timer.start()
    try:
        for line in proc.stdout:
            lines.append(line)
            if on_line:
                on_line(line, proc)
            if time.monotonic() > deadline:
                break
        proc.wait(timeout=30)
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out_file.write_text(" ".join(argv) + "\n" + "".join(lines))
    for line in lines:
        if line.startswith("BENCHJSON "):
            return json.loads(line[len("BENCHJSON ") :])
    raise RuntimeError(f"wrk gave no summary; see {out_file}:\n{''.join(lines)[-1500:]}")


def settle(server: procs.Server, max_s: float = 5.0) -> None:
    """Wait until the server is idle: wrk stops at -d with requests still in flight, and the server
    works them off after it. Without this, the next point's CPU and first latencies carry that work
    (8 bodies of 1000 Observations are about 0.1 s of CPU, and queue the first requests behind them)."""
    end = time.monotonic() + max_s
    last = server.cpu()
    while time.monotonic() < end:
        time.sleep(0.1)
        now = server.cpu()
        if now - last <= 1.0 / procs.CLK_TCK:  # at most one clock tick in 0.1 s: idle
            return
        last = now


def measure(server: procs.Server, body: Body, case: str, conc: int, duration: float, note: str = "") -> Point:
    settle(server)
    wpids = server.worker_pids() if server.workers > 1 else []
    w0 = [procs.cpu_seconds([p]) for p in wpids]
    cpu0 = server.cpu()
    s = wrk(server.url, body, conc, duration, f"{server.name}-{case}-c{conc}")
    cpu1 = server.cpu()
    if wpids:  # how the kernel spread the connections over the workers (shared listening socket)
        dw = [procs.cpu_seconds([p]) - t for p, t in zip(wpids, w0)]
        tot = sum(dw) or 1.0
        note = (
            (note + " " if note else "")
            + "(worker CPU split "
            + "/".join(f"{100 * d / tot:.0f}" for d in dw)
            + "%)"
        )

    n = max(1, s["requests"])
    errors = s["connect_errors"] + s["read_errors"] + s["write_errors"] + s["status_errors"] + s["timeouts"]
    if s["requests"] == 0:
        note = (note + " " if note else "") + "(no reply within the point)"
    p = Point(
        server.workers,
        case,
        conc,
        s["requests"] / (s["duration_us"] / 1e6),
        s["p50_us"] / 1000,
        s["p95_us"] / 1000,
        s["p99_us"] / 1000,
        (cpu1 - cpu0) / n * 1e6,
        server.worker_rss(),
        s["requests"],
        errors,
        s["duration_us"] / 1e6,
        note,
    )
    print(
        f"  {server.name:<16} {case:<22} c={conc:<3} {p.rps:8.0f} req/s  p50 {p.p50_ms:6.2f}  p99 {p.p99_ms:7.2f} ms"
        f"  cpu {p.cpu_us:7.0f} us/req  rss {p.rss_mb}  err {errors}",
        flush=True,
    )
    return p


def warm(server: procs.Server, body: Body, seconds: float) -> None:
    if seconds > 0:
        wrk(server.url, body, 8, seconds, f"{server.name}-warmup-{body.name}")


# ---------------------------------------------------------------- servers


def service_env(workers: int, state: Path, allow: list[str], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env.update(
        {
            "CDS_AUTH": "off",
            "CDS_WORKERS": str(workers),
            "CDS_STATE_DIR": str(state),
            "CDS_FHIR_SERVER_ALLOWLIST": json.dumps(allow),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def cds_serve_argv(port: int, workers: int, code: Path = ROOT) -> tuple[list[str], str]:
    """`cds serve` of the tree `code` (its own .venv when it is not this tree: `--old`)."""
    cds_bin = Path(PY).parent / "cds" if code == ROOT else code / ".venv" / "bin" / "cds"
    serve = [str(cds_bin), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    if code != ROOT:
        if not cds_bin.exists():
            raise RuntimeError(f"{cds_bin} is missing: run `make venv` in {code}")
        return serve, f"{cds_bin} serve"
    if cds_bin.exists() and (ROOT / "cds" / "cli.py").exists():
        return serve, "cds serve"
    return [
        PY,
        str(BENCH / "serve.py"),
        "--app",
        "service",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ], "bench/serve.py (cds serve missing)"


def start_service(name: str, workers: int, allow: list[str], code: Path = ROOT, **extra: str) -> procs.Server:
    """`cds serve` of this tree (or of `code`, another worktree with its own .venv) on a free port."""
    port = procs.free_port()
    state = RAW / f"state-{name}"
    state.mkdir(parents=True, exist_ok=True)
    argv, how = cds_serve_argv(port, workers, code)
    env = service_env(workers, state, allow, **extra)
    s = procs.start(name, argv, env, f"http://127.0.0.1:{port}", "/cds-services", RAW, workers)
    s.meta["how"] = how
    return s


def start_baseline(workers: int, reply_bytes: int) -> procs.Server:
    port = procs.free_port()
    argv = [
        PY,
        str(BENCH / "serve.py"),
        "--app",
        "baseline",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--reply-bytes",
        str(reply_bytes),
    ]
    env = dict(os.environ)
    return procs.start(
        f"baseline-w{workers}", argv, env, f"http://127.0.0.1:{port}", "/healthz", RAW, workers
    )


PG_ADMIN = os.environ.get("CDS_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def bench_database() -> str | None:
    """A new, empty database `cds_bench` on the local PostgreSQL (scripts/services.sh starts it) for
    the PostgreSQL-store points; None, and those points skipped, when there is no server."""
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as conn:
            conn.execute("DROP DATABASE IF EXISTS cds_bench")
            conn.execute("CREATE DATABASE cds_bench")
    except psycopg.Error as exc:  # only means: no PostgreSQL points in this run
        print(
            f"  no PostgreSQL at {PG_ADMIN} ({type(exc).__name__}): PostgreSQL-store points skipped",
            flush=True,
        )
        return None
    return PG_ADMIN.rsplit("/", 1)[0] + "/cds_bench"


def start_fhir(port: int | None = None, reset: bool = True) -> tuple[str, str] | None:
    """The local sekmet FHIR server (tests/fhir_server.sh) on a free port (or `port`); returns (base URL,
    state dir). `reset=False` keeps the stored data (sekmet's SQLite store persists across restarts)."""
    script = ROOT / "tests" / "fhir_server.sh"
    if not script.exists():
        print("  no tests/fhir_server.sh: fallback cases skipped", flush=True)
        return None
    state = RAW / "fhir"
    env = dict(
        os.environ,
        FHIR_SERVER="sekmet",
        FHIR_PORT=str(port or procs.free_port()),
        FHIR_STATE_DIR=str(state),
        FHIR_INSTALL_DIR=str(ROOT / ".fhir-server"),
        FHIR_RESET="1" if reset else "0",
    )
    env.pop("FHIR_TOKEN", None)
    r = subprocess.run(
        ["bash", str(script), "start"], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    if r.returncode != 0:
        print(f"  FHIR server did not start: {r.stderr[-800:]}", flush=True)
        return None
    return r.stdout.strip().splitlines()[-1], str(state)


def stop_fhir(state: str) -> None:
    env = dict(
        os.environ, FHIR_SERVER="sekmet", FHIR_STATE_DIR=state, FHIR_INSTALL_DIR=str(ROOT / ".fhir-server")
    )
    subprocess.run(
        ["bash", str(ROOT / "tests" / "fhir_server.sh"), "stop"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )


def settle_fhir(base: str, max_s: float = 30.0) -> bool:
    """Wait (bounded) until the FHIR server answers a search with 200 in under 50 ms, three times in a
    row (a refused connection is fast too: it does not count). False when it never did."""
    deadline = time.monotonic() + max_s
    good = 0
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        try:
            status, _ = procs.http_get(f"{base}/Condition?patient={B.BENCH_PID}&_count=1", timeout=5)
        except OSError:
            status = 0
        good = good + 1 if status == 200 and time.monotonic() - t0 < 0.05 else 0
        if good >= 3:
            return True
        time.sleep(0.2 if good else 0.5)
    return False


def restart_fhir(base: str, state: str) -> bool:
    """After the cold c=64 point the FHIR server still works off the requests the service gave up on
    (its deadline): restart it on the same port with its data, so the warm case starts clean."""
    stop_fhir(state)
    port = urlsplit(base).port
    again = start_fhir(port=port, reset=False)
    if again is None or again[0].rstrip("/") != base.rstrip("/"):
        print(f"  FHIR server restart failed ({again})", flush=True)
        return False
    return settle_fhir(base)


def load_fhir(base: str, resources: list[dict[str, Any]]) -> None:
    """Put the patient's resources on the FHIR server (the tests' helper when present, else PUT each)."""
    try:
        from tests.support.fhir import FhirServer, load_resources  # type: ignore[import-not-found]

        load_resources(FhirServer(kind="sekmet", base_url=base.rstrip("/")), resources)
        return
    except ImportError:
        pass
    import urllib.request

    order = {"Patient": 0}
    for r in sorted(resources, key=lambda r: order.get(r["resourceType"], 1)):
        req = urllib.request.Request(
            f"{base}/{r['resourceType']}/{r['id']}",
            data=json.dumps(r).encode(),
            method="PUT",
            headers={"Content-Type": "application/fhir+json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            if resp.status not in (200, 201):
                raise RuntimeError(f"PUT {r['resourceType']}/{r['id']}: {resp.status}")


# ---------------------------------------------------------------- bodies


def write_body(name: str, path: str, body: dict[str, Any] | None, **meta: Any) -> Body:
    d = RAW / "bodies"
    d.mkdir(parents=True, exist_ok=True)
    if body is None:
        return Body(name, "GET", path, None, 0, meta)
    f = d / f"{name}.json"
    data = B.dumps(body)
    f.write_bytes(data)
    return Body(name, "POST", path, f, len(data), meta)


def concrete(body: Body) -> bytes:
    """The body with its placeholders filled once (for sanity checks outside wrk)."""
    assert body.file is not None
    return (
        body.file.read_bytes()
        .replace(b"@@HOOK_INSTANCE@@", b"9b1d7b2e-1c3f-4a4b-8d5e-6f7a8b9c0d1e")
        .replace(b"@@TOKEN@@", b"bench-check-token")
        .replace(b"@@SEQ@@", b"0")
    )


def build_bodies(now: datetime, fhir_base: str | None) -> dict[str, Body]:
    from cds import demo

    p = B.realistic_patient(now)
    large = B.large_patient(now)
    out: dict[str, Body] = {}
    sel = B.hook_body(p, "order-select")
    out["select"] = write_body("select", SELECT, sel, prefetch=B.prefetch_counts(sel))
    sign = B.hook_body(p, "order-sign")
    out["sign"] = write_body("sign", SIGN, sign, prefetch=B.prefetch_counts(sign))
    lsel = B.hook_body(large, "order-select")
    out["large"] = write_body("large", SELECT, lsel, prefetch=B.prefetch_counts(lsel))
    mri = demo.patient("non-plex-order", now)
    nonplex = B.hook_body(mri, "order-select")
    out["nonplex"] = write_body("nonplex", SELECT, nonplex, prefetch=B.prefetch_counts(nonplex))
    out["discovery"] = write_body("discovery", "/cds-services", None)
    for n in (10, 100, 1000):
        b = B.with_n_labs(sel, n)
        out[f"obs{n}"] = write_body(f"obs{n}", SELECT, b, prefetch=B.prefetch_counts(b))
    if fhir_base:
        cold = B.hook_body(p, "order-select", prefetch=False, fhir_server=fhir_base, token="@@TOKEN@@")
        out["fallback-cold"] = write_body("fallback-cold", SELECT, cold)
        wsel = B.hook_body(p, "order-select", prefetch=False, fhir_server=fhir_base, token="bench-warm-token")
        out["fallback-warm-select"] = write_body("fallback-warm-select", SELECT, wsel)
        wsign = B.hook_body(p, "order-sign", prefetch=False, fhir_server=fhir_base, token="bench-warm-token")
        out["fallback-warm"] = write_body("fallback-warm", SIGN, wsign)
    return out


def check(server: procs.Server, body: Body) -> tuple[int, bytes]:
    if body.file is None:
        return procs.http_get(server.url + body.path)
    return procs.http_post(server.url + body.path, concrete(body))


# ---------------------------------------------------------------- soak


def soak(
    server: procs.Server, body: Body, n: int, conc: int, max_s: float, interval: float = 1.0
) -> dict[str, Any]:
    """`n` requests (or `max_s` seconds, whichever comes first) while sampling each worker's RSS."""
    samples: list[tuple[float, list[float]]] = []
    stop = threading.Event()
    t0 = time.monotonic()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.monotonic() - t0, server.worker_rss()))
            stop.wait(interval)

    def on_line(line: str, proc: subprocess.Popen) -> None:
        if line.startswith("BENCHDONE") and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # wrk prints its summary on SIGINT

    th = threading.Thread(target=sample, daemon=True)
    cpu0 = server.cpu()
    th.start()
    try:
        s = wrk(server.url, body, conc, max_s, f"{server.name}-soak", max_requests=n, on_line=on_line)
    finally:
        stop.set()
        th.join(timeout=5)
    cpu1 = server.cpu()
    samples.append((time.monotonic() - t0, server.worker_rss()))
    end = samples[-1][1]
    total_t = samples[-1][0]

    def at(frac: float) -> list[float]:
        for t, r in samples:
            if t >= frac * total_t:
                return r
        return end

    half = [(t, max(r)) for t, r in samples if t >= total_t / 2]
    slope = 0.0
    if len(half) >= 3:
        mt = sum(t for t, _ in half) / len(half)
        mr = sum(r for _, r in half) / len(half)
        den = sum((t - mt) ** 2 for t, _ in half) or 1.0
        slope = sum((t - mt) * (r - mr) for t, r in half) / den  # MB per second
    rps = s["requests"] / (s["duration_us"] / 1e6)
    errors = s["connect_errors"] + s["read_errors"] + s["write_errors"] + s["status_errors"] + s["timeouts"]
    (RAW / "soak-rss.json").write_text(json.dumps(samples))
    return {
        "requests": s["requests"],
        "errors": errors,
        "seconds": round(total_t, 1),
        "rps": round(rps),
        "p50_ms": s["p50_us"] / 1000,
        "p99_ms": s["p99_us"] / 1000,
        "cpu_us": round((cpu1 - cpu0) / max(1, s["requests"]) * 1e6),
        "rss_start": at(0.05),
        "rss_10pct": at(0.10),
        "rss_half": at(0.5),
        "rss_end": end,
        "growth_second_half_mb": round(max(end) - max(at(0.5)), 1),
        "slope_mb_per_10k": round(slope / rps * 10000, 3) if rps else 0.0,
        "samples": len(samples),
        "workers": server.workers,
        "conc": conc,
        "target_requests": n,
    }


# ---------------------------------------------------------------- report


def versions() -> dict[str, str]:
    from importlib import metadata

    v = {"python": platform.python_version()}
    for pkg in (
        "fastapi",
        "starlette",
        "uvicorn",
        "pydantic",
        "pydantic-core",
        "h11",
        "httptools",
        "uvloop",
        "orjson",
        "fhir.resources",
        "httpx",
        "httpcore",
    ):
        try:
            v[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            v[pkg] = "-"
    try:
        v["wrk"] = (
            subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
            .stdout.split("\n")[0]
            .strip()
        )
    except OSError:
        v["wrk"] = "-"
    return v


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def fmt(x: float | None, nd: int = 2) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**not met**")


def targets(points: list[Point], soak_r: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    def get(w: int, case: str, c: int) -> Point | None:
        for p in points:
            if p.workers == w and p.case == case and p.conc == c:
                return p
        return None

    rows: list[tuple[str, str, str]] = []
    for w in sorted({p.workers for p in points}):
        for name, floor_case in FLOORS.items():
            floor = get(w, floor_case, 8)
            if floor:
                rows.append(
                    (
                        f"(reference, no target) w={w}, c=8: the baseline that also parses the {name} body",
                        f"{fmt(floor.ratio_rps)}× baseline req/s, p50 {floor.p50_ms:.2f} ms, {floor.cpu_us:.0f} µs CPU",
                        f"the most a hook that reads the {name} body can reach",
                    )
                )
        for case in ("select", "sign"):
            p = get(w, case, 8)
            if p:
                rows.append(
                    (
                        f"PLEX {case}, full prefetch, w={w}, c=8: p99 ≤ 10 ms",
                        f"{p.p99_ms:.2f} ms",
                        verdict(p.p99_ms <= 10),
                    )
                )
                rows.append(
                    (
                        f"PLEX {case}, w={w}, c=8: ≥ 50% of baseline req/s",
                        f"{fmt(p.ratio_rps)}×",
                        verdict(p.ratio_rps is not None and p.ratio_rps >= 0.5),
                    )
                )
                rows.append(
                    (
                        f"PLEX {case}, w={w}, c=8: server CPU ≤ 1 ms per request",
                        f"{p.cpu_us:.0f} µs",
                        verdict(p.cpu_us <= 1000),
                    )
                )
        p1, p8 = get(w, "nonplex", 1), get(w, "nonplex", 8)
        if p1:
            rows.append(
                (f"non-PLEX order, w={w}, c=1: p50 ≤ 1 ms", f"{p1.p50_ms:.2f} ms", verdict(p1.p50_ms <= 1))
            )
        if p8:
            rows.append(
                (f"non-PLEX order, w={w}, c=8: p50 ≤ 1 ms", f"{p8.p50_ms:.2f} ms", verdict(p8.p50_ms <= 1))
            )
            rows.append(
                (
                    f"non-PLEX order, w={w}, c=8: ≥ 80% of baseline req/s",
                    f"{fmt(p8.ratio_rps)}×",
                    verdict(p8.ratio_rps is not None and p8.ratio_rps >= 0.8),
                )
            )
        for case, limit in (("fallback-cold", 150), ("fallback-warm", 10)):
            for c in (1, 8):
                p = get(w, case, c)
                if p:
                    rows.append(
                        (
                            f"{case}, w={w}, c={c}: p95 ≤ {limit} ms",
                            f"{p.p95_ms:.2f} ms",
                            verdict(p.p95_ms <= limit and p.errors == 0),
                        )
                    )
    if soak_r:
        worst = max(soak_r["rss_end"]) if soak_r["rss_end"] else 0
        rows.append(
            (
                f"memory after {soak_r['requests']:,} requests < 150 MB per worker",
                f"{worst:.1f} MB",
                verdict(worst < 150 and soak_r["requests"] >= 100000)
                if soak_r["requests"] >= 100000
                else f"{verdict(worst < 150)} (only {soak_r['requests']:,} of {soak_r.get('target_requests', 100000):,} requests within the soak's time cap; `bench/run.py --soak` runs all)",
            )
        )
        trend = abs(soak_r["growth_second_half_mb"]) < 2.0
        rows.append(
            (
                "no memory growth trend (second half of the soak: < 2 MB)",
                f"{soak_r['growth_second_half_mb']:+.1f} MB, slope {soak_r['slope_mb_per_10k']:+.3f} MB/10k req",
                verdict(trend),
            )
        )
    return rows


SCALING_CALLS = ((10, 1000), (100, 300), (1000, 60))  # (Observations, in-process calls): about 1 s each


def inprocess_cpu_us(case: str, calls: int) -> float | None:
    """CPU µs per call of the app called in-process (bench/components.py: no socket, no uvicorn)."""
    r = subprocess.run(
        [PY, str(BENCH / "components.py"), "--case", case, "-n", str(calls)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )
    m = re.search(r"calls: ([\d.]+) µs CPU", r.stdout)
    return float(m.group(1)) if m else None


def stage_scaling_table() -> str:
    """bench/stage_scaling.py's table (each stage alone, per KB of body), or "" when it fails."""
    r = subprocess.run(
        [PY, str(BENCH / "stage_scaling.py")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )
    return "\n".join(line for line in r.stdout.splitlines() if line.startswith("|"))


def write_results(
    path: Path,
    ctx: dict[str, Any],
    points: list[Point],
    scaling: list[Point],
    soak_r: dict[str, Any] | None,
    profile_md: str | None,
    bodies: dict[str, Body],
) -> None:
    v = ctx["versions"]
    L: list[str] = []
    L.append("# Benchmark results\n")
    L.append(f"Written by `{ctx['command']}` on {ctx['when']} ({ctx['elapsed']:.0f} s).  ")
    L.append(f"Machine: {os.cpu_count()} cores ({cpu_model()}), Linux {platform.release()}.  ")
    L.append("Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".  ")
    L.append(
        f"Service started with: `{ctx['service_how']}` (CDS_AUTH=off, CDS_WORKERS=N, FHIR allowlist = the "
        f"local sekmet server); baseline: `bench/serve.py --app baseline` (the same `cds.cli.run_server` call).  "
    )
    L.append(
        f"wrk: 1 thread, {ctx['duration']} s per point after a {ctx['warmup']} s warm-up per case; "
        "every request has a new `hookInstance` (and, for the cold fallback, a new access token).  "
    )
    L.append(
        "wrk runs on the same 2 cores as the server: compare figures within this run only (ratios, CPU per request).\n"
    )
    L.append("## Request bodies\n")
    L.append("| body | bytes | prefetch (entries per key) |")
    L.append("|---|---|---|")
    for name in ("select", "sign", "large", "nonplex", "fallback-cold", "fallback-warm"):
        b = bodies.get(name)
        if b:
            pf = b.meta.get("prefetch")
            L.append(
                f"| {name} | {b.size:,} | {', '.join(f'{k} {n}' for k, n in pf.items()) if pf else 'none (FHIR server)'} |"
            )
    L.append(
        f"\nBaseline reply: {ctx['reply_bytes']:,} bytes (the size of the real order-select reply for `select`).\n"
    )
    L.append("## Results\n")
    L.append(
        "× baseline = this case's req/s (or CPU per request) divided by the baseline's at the same worker count "
        "and concurrency. CPU = user+system time of the server's process tree per request. RSS = resident "
        "memory of each worker after the point. The two `floor` cases are the baseline app parsing the "
        "select or nonplex body with orjson and dropping it (`POST /cds-services/json-parse`): the most a "
        "hook that reads that body can reach on this stack, before it does any work.\n"
    )
    L.append(
        "| workers | case | c | req/s | × baseline req/s | p50 ms | p95 ms | p99 ms | CPU µs/req | × baseline CPU | RSS MB/worker | errors |"
    )
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for p in points:
        L.append(
            f"| {p.workers} | {p.case}{' ' + p.note if p.note else ''} | {p.conc} | {p.rps:,.0f} | {fmt(p.ratio_rps)} | "
            f"{p.p50_ms:.2f} | {p.p95_ms:.2f} | {p.p99_ms:.2f} | {p.cpu_us:,.0f} | {fmt(p.ratio_cpu, 1)} | "
            f"{' / '.join(f'{r:.0f}' for r in p.rss_mb)} | {p.errors} |"
        )
    L.append("")
    L.append("## Targets\n")
    L.append("| target | measured | verdict |")
    L.append("|---|---|---|")
    for t, m, ok in targets(points, soak_r):
        L.append(f"| {t} | {m} | {ok} |")
    L.append("")
    if scaling:
        L.append("## Scaling: request cost against prefetch size\n")
        L.append(
            "order-select, full prefetch of the realistic patient with the `labs` bundle holding N Observations; "
            "1 worker started for these points, c=1.\n"
        )
        L.append(
            "| Observations | body bytes | req/s | p50 ms | p99 ms | CPU µs/req | CPU µs per Observation (marginal) "
            "| in-process CPU µs/call (marginal per Observation) |"
        )
        L.append("|---|---|---|---|---|---|---|---|")
        inproc: dict[int, float | None] = ctx.get("scaling_inproc", {})
        prev: Point | None = None
        for p in scaling:
            n = int(p.case.removeprefix("obs"))
            marg, inp = "-", "-"
            if inproc.get(n) is not None:
                inp = f"{inproc[n]:,.0f}"
            if prev is not None:
                pn = int(prev.case.removeprefix("obs"))
                marg = f"{(p.cpu_us - prev.cpu_us) / (n - pn):.1f}"
                now_us, prev_us = inproc.get(n), inproc.get(pn)
                if now_us is not None and prev_us is not None:
                    inp += f" ({(now_us - prev_us) / (n - pn):.1f})"
            L.append(
                f"| {n} | {bodies[p.case].size:,} | {p.rps:,.0f} | {p.p50_ms:.2f} | {p.p99_ms:.2f} | "
                f"{p.cpu_us:,.0f} | {marg} | {inp} |"
            )
            prev = p
        if len(scaling) == 3:
            a, b, c = scaling
            m1 = (b.cpu_us - a.cpu_us) / 90
            m2 = (c.cpu_us - b.cpu_us) / 900
            lin = m2 <= max(m1, 0.1) * 1.5
            L.append(
                f"\nMarginal cost per Observation: {m1:.1f} µs (10→100), {m2:.1f} µs (100→1000): "
                f"{'linear or better' if lin else 'worse than linear'} "
                f"(cost(1000)/cost(10) = {c.cpu_us / max(a.cpu_us, 1):.1f}× for 100× the Observations).\n"
            )
            used = ctx.get("scaling_used")
            if used:
                L.append(
                    "These points run on a worker started for them. The 1000-Observation body on the long-running "
                    f"1-worker server, after all its other cases (fallback included): {used['cpu_us']:,.0f} µs "
                    f"CPU/req, p50 {used['p50_ms']:.2f} ms, {used['cpu_us'] / max(c.cpu_us, 1):.2f}× the fresh "
                    "worker's (bench/history.md, round 5).\n"
                )
            i10, i100, i1000 = (inproc.get(n) for n in (10, 100, 1000))
            if i10 is not None and i100 is not None and i1000 is not None:
                k1, k2 = (i100 - i10) / 90, (i1000 - i100) / 900
                L.append(
                    f"In-process (the app called without socket or uvicorn): {k1:.1f} µs (10→100), {k2:.1f} µs "
                    f"(100→1000) per Observation: "
                    f"{'linear or better' if k2 <= max(k1, 0.1) * 1.5 else 'worse than linear'}. Over HTTP the "
                    "server also receives the body (768 KB at 1000) while wrk runs on the same 2 cores.\n"
                )
            stages = ctx.get("scaling_stages")
            if stages:
                L.append(
                    "Each stage alone (`bench/stage_scaling.py`: best of 5 repeats on data hot in the CPU "
                    "caches), per KB of body: flat or falling is linear or better. The whole call pays "
                    "besides for data that no longer fits in the caches (L2 1 MB per core here).\n"
                )
                L.append(stages + "\n")
    if soak_r:
        L.append("## Memory soak\n")
        L.append(
            f"order-select with full prefetch, {soak_r['workers']} workers, c={soak_r['conc']}: "
            f"{soak_r['requests']:,} requests in {soak_r['seconds']} s ({soak_r['rps']:,} req/s, p50 "
            f"{soak_r['p50_ms']:.2f} ms, p99 {soak_r['p99_ms']:.2f} ms, {soak_r['cpu_us']} µs CPU/req, "
            f"{soak_r['errors']} errors); RSS per worker sampled every second ({soak_r['samples']} samples).\n"
        )
        L.append("| when | RSS MB per worker |")
        L.append("|---|---|")
        for label, key in (
            ("5% of the run", "rss_start"),
            ("10%", "rss_10pct"),
            ("50%", "rss_half"),
            ("end", "rss_end"),
        ):
            L.append(f"| {label} | {' / '.join(f'{r:.1f}' for r in soak_r[key])} |")
        L.append(
            f"\nGrowth over the second half: {soak_r['growth_second_half_mb']:+.1f} MB (largest worker); "
            f"least-squares slope over the second half: {soak_r['slope_mb_per_10k']:+.3f} MB per 10,000 requests.\n"
        )
    if profile_md:
        L.append(profile_md)
    path.write_text("\n".join(L) + "\n")


def _section(text: str, heading: str) -> tuple[int, int] | None:
    i = text.find(heading)
    if i < 0:
        return None
    j = text.find("\n## ", i + len(heading))
    return i, (j + 1 if j >= 0 else len(text))


def merge_soak(out: Path, soak_md: str, ctx: dict[str, Any]) -> None:
    """Put a separate `--soak` run's section and memory verdicts into an existing results file."""
    text = out.read_text()
    new = _section(soak_md, "## Memory soak")
    if new is None:
        return
    block = soak_md[new[0] : new[1]].rstrip("\n")
    block += f"\n\n(Soak run separately: `{ctx['command']}` on {ctx['when']}.)\n\n"
    old = _section(text, "## Memory soak")
    text = text[: old[0]] + block + text[old[1] :] if old else text.rstrip("\n") + "\n\n" + block
    rows = [ln for ln in soak_md.splitlines() if ln.startswith(("| memory after", "| no memory growth"))]
    lines = [ln for ln in text.splitlines() if not (ln.startswith(("| memory after", "| no memory growth")))]
    try:
        k = max(i for i, ln in enumerate(lines) if ln.startswith("| ") and "**" in ln and "met" in ln)
        lines[k + 1 : k + 1] = rows
    except ValueError:
        pass
    out.write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------- main


def guard_main(a: argparse.Namespace, now: datetime, t_start: float) -> int:
    """`--guard`: only issue 16's guard (old beside new with --old, the latency cases); bench/guard.md."""
    from bench import guard

    fhir = None if (a.no_fallback or a.no_latency) else start_fhir()
    try:
        bodies = build_bodies(now, None)
        if fhir:
            load_fhir(fhir[0], B.realistic_patient(now).resources)
            print(f"FHIR server {fhir[0]}: realistic patient loaded", flush=True)
        md = guard.run_guard(a.old, now, bodies, fhir[0] if fhir else None, a)
    finally:
        if fhir:
            stop_fhir(fhir[1])
    out = Path(a.out or BENCH / "guard.md")
    head = (
        "# Performance guard (issue 16)\n\n"
        f"Written by `bench/run.py {' '.join(sys.argv[1:])}` on {datetime.now(UTC):%Y-%m-%d %H:%M UTC} "
        f"({time.monotonic() - t_start:.0f} s). Machine: {os.cpu_count()} cores ({cpu_model()}); wrk shares "
        "them with the servers, so compare within this run.\n\n"
    )
    out.write_text(head + md)
    print(f"wrote {out} in {time.monotonic() - t_start:.0f} s", flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 s points, 0.5 s warm-up, 10k-request soak")
    ap.add_argument("--duration", type=float, help="seconds per point (default 4, --quick 1)")
    ap.add_argument("--warmup", type=float, help="warm-up seconds per case (default 2, --quick 0.5)")
    ap.add_argument("--concurrency", default="1,8,64")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--soak", action="store_true", help="only the memory soak")
    ap.add_argument("--soak-requests", type=int, help="default 100000 (--quick 10000)")
    ap.add_argument(
        "--soak-max-s",
        type=float,
        help="time cap of the soak (default 100 s in the full run, 1500 s with --soak, 30 s --quick)",
    )
    ap.add_argument("--no-soak", action="store_true")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--no-fallback", action="store_true")
    ap.add_argument("--out", help="default bench/results.md (--guard: bench/guard.md)")
    ap.add_argument(
        "--old",
        type=Path,
        action="append",
        default=[],
        help="a worktree of older code with its own .venv: measure the guard cases on it beside this tree "
        "(repeatable; the first is the one the verdict compares with)",
    )
    ap.add_argument(
        "--guard",
        action="store_true",
        help="only issue 16's guard: old beside new (--old) and the latency cases",
    )
    ap.add_argument("--guard-rounds", type=int, default=2, help="old/new alternations per guard point")
    ap.add_argument(
        "--old-bodies",
        choices=("same", "own"),
        default="same",
        help="same: the old service gets this tree's bodies (its own builder's only if it refuses them); "
        "own: each service gets the prefetch its own templates ask for",
    )
    ap.add_argument("--guard-duration", type=float, help="seconds per guard point (default: --duration)")
    ap.add_argument("--latency-duration", type=float, help="seconds per latency point (default: --duration)")
    ap.add_argument("--latency-old", action="store_true", help="the latency cases on the --old service too")
    ap.add_argument("--latency-workers", default="1,2", help="worker counts of the latency cases")
    ap.add_argument(
        "--latency-env",
        action="append",
        default=[],
        metavar="CDS_X=V",
        help="a setting for the latency cases' services (repeatable), e.g. CDS_FHIR_MAX_CONCURRENCY=16",
    )
    ap.add_argument(
        "--latency-mode",
        choices=("replay", "tcp"),
        default="replay",
        help="replay: the proxy answers repeated reads itself; tcp: every read goes to the live FHIR server",
    )
    ap.add_argument("--no-latency", action="store_true", help="skip the injected-latency cases")
    a = ap.parse_args()
    duration = a.duration or (1.0 if a.quick else 4.0)
    warmup = a.warmup if a.warmup is not None else (0.5 if a.quick else 2.0)
    concs = [int(x) for x in a.concurrency.split(",")]
    workers_list = [int(x) for x in a.workers.split(",")]
    soak_n = a.soak_requests or (10000 if a.quick else 100000)
    soak_max = a.soak_max_s or (30.0 if a.quick else 1500.0 if a.soak else 100.0)
    t_start = time.monotonic()
    RAW.mkdir(parents=True, exist_ok=True)
    a.guard_duration = a.guard_duration or duration
    a.latency_duration = a.latency_duration or duration
    a.guard_warmup = warmup
    a.old = [old.resolve() for old in a.old]
    for old in a.old:
        if not (old / ".venv" / "bin" / "cds").exists():
            print(f"--old {old}: no .venv/bin/cds there (run `make venv` in it)", file=sys.stderr)
            return 2

    if not shutil.which("wrk"):
        subprocess.run(["bash", str(ROOT / "scripts" / "install-system.sh")], check=False)
    if not shutil.which("wrk"):
        print(
            "wrk is not installed (Debian package `wrk`); run `bash scripts/install-system.sh`",
            file=sys.stderr,
        )
        return 2

    now = datetime.now(UTC)
    if a.guard:
        return guard_main(a, now, t_start)
    fhir = None if (a.no_fallback or a.soak) else start_fhir()
    fhir_base = fhir[0] if fhir else None
    started: list[procs.Server] = []
    points: list[Point] = []
    scaling: list[Point] = []
    scaling_inproc: dict[int, float | None] = {}
    scaling_used: Point | None = None
    scaling_stages = ""
    soak_r: dict[str, Any] | None = None
    profile_md: str | None = None
    guard_md = ""
    try:
        bodies = build_bodies(now, fhir_base)
        pg_url = None if a.soak else bench_database()
        allow = [fhir_base] if fhir_base else []
        if fhir_base:
            load_fhir(fhir_base, B.realistic_patient(now).resources)
            print(f"FHIR server {fhir_base}: realistic patient loaded", flush=True)

        # sanity: the real replies, and the size the baseline must answer with
        probe = start_service("probe", 1, allow)
        started.append(probe)
        how = probe.meta["how"]
        reply_bytes = 0
        for name, body in bodies.items():
            status, data = check(probe, body)
            cards = None
            try:
                cards = len(json.loads(data).get("cards", [])) if status == 200 and body.file else None
            except ValueError:
                pass
            body.meta.update(status=status, reply_bytes=len(data), cards=cards)
            print(f"  check {name:<22} {status}  {len(data):>7} bytes  cards={cards}", flush=True)
            if status != 200:
                print(f"    ! {name} answered {status}: {data[:300]!r}", flush=True)
            if name == "select":
                reply_bytes = len(data)
        procs.stop(probe)
        started.remove(probe)

        if a.soak:
            srv = start_service("soak-w2", 2, allow)
            started.append(srv)
            warm(srv, bodies["select"], warmup)
            print(f"soak: {soak_n} requests", flush=True)
            soak_r = soak(srv, bodies["select"], soak_n, 8, soak_max)
        else:
            for w in workers_list:
                print(f"== workers={w}", flush=True)
                base = start_baseline(w, reply_bytes)
                started.append(base)
                bl = bodies["select"]
                warm(base, bl, warmup)
                base_pts = {c: measure(base, bl, "baseline", c, duration) for c in concs}
                points.extend(base_pts.values())
                # the floor of any hook that reads these bodies: the baseline that also parses them
                for name, floor_case in FLOORS.items():
                    floor = floor_body(bodies[name])
                    warm(base, floor, warmup / 2)
                    points.extend(measure(base, floor, floor_case, c, duration) for c in concs)
                # the baseline stays up (idle) and is measured again after the cases: ratios use the mean
                # of both, so a burst of other load on the machine hits the baseline as well

                srv = start_service(f"cds-w{w}", w, allow)
                started.append(srv)
                cases = ["select", "sign", "nonplex", "discovery", "large"]
                for case in cases:
                    warm(srv, bodies[case], warmup)
                    for c in concs:
                        points.append(measure(srv, bodies[case], case, c, duration))
                if fhir_base:
                    warm(srv, bodies["fallback-cold"], warmup)
                    for c in concs:
                        points.append(measure(srv, bodies["fallback-cold"], "fallback-cold", c, duration))
                    # a c=64 cold run leaves the FHIR server a backlog of abandoned searches: restart it
                    # (same port, same data) so the warm-up's reads are answered and cached
                    settled = restart_fhir(fhir_base, fhir[1]) if fhir else False
                    print(f"  FHIR server restarted before the warm case: settled={settled}", flush=True)
                    warm(srv, bodies["fallback-warm-select"], warmup)
                    for name in ("fallback-warm-select", "fallback-warm"):  # the cache must answer now
                        t0 = time.monotonic()
                        status, _ = check(srv, bodies[name])
                        print(
                            f"  warm check {name}: {status} in {(time.monotonic() - t0) * 1000:.1f} ms",
                            flush=True,
                        )
                    for c in concs:
                        points.append(measure(srv, bodies["fallback-warm"], "fallback-warm", c, duration))
                if w == workers_list[0]:
                    # the largest body on this worker too, after all its other cases (reported beside
                    # the scaling table: after the fallback cases it costs this worker more)
                    warm(srv, bodies["obs1000"], warmup / 2)
                    scaling_used = measure(srv, bodies["obs1000"], "obs1000", 1, duration)
                procs.stop(srv)
                started.remove(srv)
                if w == workers_list[0]:
                    # the scaling run on a worker started for it, so that only the prefetch size
                    # changes between its points, not what the worker served before
                    fresh = start_service("cds-scaling", 1, allow)
                    started.append(fresh)
                    for n in (10, 100, 1000):
                        warm(fresh, bodies[f"obs{n}"], warmup / 2)
                        scaling.append(measure(fresh, bodies[f"obs{n}"], f"obs{n}", 1, duration))
                    procs.stop(fresh)
                    started.remove(fresh)
                    scaling_inproc = {n: inprocess_cpu_us(f"obs{n}", calls) for n, calls in SCALING_CALLS}
                    scaling_stages = stage_scaling_table()

                base_after = {
                    c: measure(base, bl, "baseline (again, after the cases)", c, duration) for c in concs
                }
                points.extend(base_after.values())
                procs.stop(base)
                started.remove(base)
                for c, p in base_pts.items():
                    q = base_after[c]
                    p.note = f"(mean with the second baseline: {(p.rps + q.rps) / 2:,.0f} req/s)"
                    p.rps_mean, p.cpu_mean = (p.rps + q.rps) / 2, (p.cpu_us + q.cpu_us) / 2  # type: ignore[attr-defined]

                if w == 1:
                    strict = start_service("cds-strict-w1", 1, allow, CDS_STRICT_FHIR="1")
                    started.append(strict)
                    warm(strict, bodies["select"], warmup)
                    for c in concs:
                        points.append(
                            measure(strict, bodies["select"], "select CDS_STRICT_FHIR=1", c, duration)
                        )
                    procs.stop(strict)
                    started.remove(strict)

                if pg_url:  # production's store (deploy/k8s): the same select on PostgreSQL
                    pg = start_service(f"cds-pg-w{w}", w, allow, CDS_DATABASE_URL=pg_url)
                    started.append(pg)
                    warm(pg, bodies["select"], warmup)
                    for c in concs:
                        points.append(measure(pg, bodies["select"], "select, PostgreSQL store", c, duration))
                    procs.stop(pg)
                    started.remove(pg)

                for p in points:
                    if p.workers == w and not p.case.startswith("baseline"):
                        b = base_pts.get(p.conc)
                        if b:
                            brps, bcpu = b.rps_mean, b.cpu_mean  # type: ignore[attr-defined]
                            p.ratio_rps = p.rps / brps if brps else None
                            p.ratio_cpu = p.cpu_us / bcpu if bcpu else None
                for c, p in base_pts.items():
                    p.ratio_rps = p.rps / p.rps_mean if p.rps_mean else None  # type: ignore[attr-defined]
                    p.ratio_cpu = p.cpu_us / p.cpu_mean if p.cpu_mean else None  # type: ignore[attr-defined]
                    q = base_after[c]
                    q.ratio_rps = q.rps / p.rps_mean if p.rps_mean else None  # type: ignore[attr-defined]
                    q.ratio_cpu = q.cpu_us / p.cpu_mean if p.cpu_mean else None  # type: ignore[attr-defined]

            if a.old or (fhir_base and not a.no_latency):
                from bench import guard

                if fhir and fhir_base and not a.no_latency:
                    restart_fhir(fhir_base, fhir[1])  # the cold c=64 points leave it a backlog
                guard_md = guard.run_guard(a.old, now, bodies, None if a.no_latency else fhir_base, a)
            if not a.no_profile:
                try:
                    from bench import profiling as prof

                    profile_md = "## Profile\n\n" + prof.run_profile(
                        bodies["select"], seconds=max(3.0, duration * 2), raw=RAW
                    )
                except Exception as e:  # noqa: BLE001 - any profiler failure: the table is still worth writing
                    print(f"  profile failed: {e!r}", flush=True)
                parts = []
                for case in ("select", "nonplex"):
                    r = subprocess.run(
                        [PY, str(BENCH / "components.py"), "--case", case, "-n", "100" if a.quick else "300"],
                        capture_output=True,
                        text=True,
                        timeout=300,
                        cwd=ROOT,
                        check=False,
                    )
                    if r.returncode == 0:
                        parts.append(r.stdout.strip())
                    else:
                        print(f"  components {case} failed: {r.stderr[-500:]}", flush=True)
                if parts:
                    profile_md = (
                        (profile_md or "")
                        + "\n### Where the CPU goes, per stage (bench/components.py)\n\n"
                        + "\n\n".join(parts)
                        + "\n"
                    )
                    print("  components: done", flush=True)
            if not a.no_soak:
                srv = start_service("soak-w2", 2, allow)
                started.append(srv)
                warm(srv, bodies["select"], warmup)
                print(f"soak: {soak_n} requests", flush=True)
                soak_r = soak(srv, bodies["select"], soak_n, 8, soak_max)
                procs.stop(srv)
                started.remove(srv)
    finally:
        for s in started:
            procs.stop(s)
        if fhir:
            stop_fhir(fhir[1])

    (RAW / "points.json").write_text(json.dumps([asdict(p) for p in points + scaling], indent=1))
    if soak_r:
        (RAW / "soak.json").write_text(json.dumps(soak_r, indent=1))
    cmd = "bench/run.py " + " ".join(sys.argv[1:])
    ctx = {
        "versions": versions(),
        "command": cmd.strip(),
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "elapsed": time.monotonic() - t_start,
        "service_how": how,
        "duration": duration,
        "warmup": warmup,
        "reply_bytes": reply_bytes,
        "scaling_inproc": scaling_inproc,
        "scaling_used": asdict(scaling_used) if scaling_used else None,
        "scaling_stages": scaling_stages,
    }
    out = Path(a.out or BENCH / "results.md")
    if guard_md:
        profile_md = guard_md + "\n" + (profile_md or "")
    if a.soak and out.exists():
        # merge: replace the soak section and the memory rows of the targets table in the existing results
        tmp = RAW / "results-soak.md"
        write_results(tmp, ctx, points, scaling, soak_r, profile_md, bodies)
        merge_soak(out, tmp.read_text(), ctx)
    else:
        write_results(out, ctx, points, scaling, soak_r, profile_md, bodies)
    print(f"wrote {out} in {ctx['elapsed']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
