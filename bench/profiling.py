"""Profile the PLEX hook with full prefetch: the real server (`cds serve`, 1 worker) sampled by py-spy.

    .venv/bin/python bench/profiling.py [--seconds 8] [--case select|sign|nonplex|large]

The service is started exactly as bench/run.py starts it, warmed up, then driven by wrk at c=8 while
py-spy samples it from outside (`py-spy record --nonblocking --function --format raw`, 1000 Hz; no
code runs inside the server, so the shares are not skewed by the profiler). py-spy drops idle samples
(waiting in epoll), so every sample is busy time. When py-spy is missing the script installs it from
PyPI into the venv; if that fails it falls back to pyinstrument in-process (which costs a lot per
Python call and so over-weights call-heavy code; its numbers are labelled as such).

Outputs: bench/raw/profile-<case>.folded (collapsed stacks: open in speedscope or flamegraph.pl),
bench/raw/profile-<case>.json (aggregates), and a markdown section returned to run.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def py_spy() -> str | None:
    exe = Path(sys.executable).parent / "py-spy"
    if exe.exists():
        return str(exe)
    if shutil.which("py-spy"):
        return shutil.which("py-spy")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "py-spy"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return str(exe) if r.returncode == 0 and exe.exists() else None


def _short(path: str) -> str:
    for marker in ("site-packages/", str(ROOT) + "/"):
        if marker in path:
            return path.split(marker, 1)[1]
    if "/lib/python3." in path:
        return "stdlib/" + path.split("/lib/python3.", 1)[1].split("/", 1)[-1]
    return path


def parse_folded(text: str) -> dict[str, Any]:
    """Aggregate py-spy raw (collapsed) stacks: self and inclusive samples per function."""
    self_n: dict[tuple[str, str], int] = {}
    incl_n: dict[tuple[str, str], int] = {}
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        seen: set[tuple[str, str]] = set()
        frames = stack.split(";")
        keys = []
        for fr in frames:
            name, _, where = fr.partition(" (")
            where = where.rstrip(")")
            path = where.rsplit(":", 1)[0] if ":" in where else where
            keys.append((name.strip(), _short(path)))
        for k in keys:
            if k not in seen:
                incl_n[k] = incl_n.get(k, 0) + n
                seen.add(k)
        if keys:
            self_n[keys[-1]] = self_n.get(keys[-1], 0) + n
    return {
        "total": total,
        "self": sorted(([k[0], k[1], v] for k, v in self_n.items()), key=lambda r: -r[2])[:80],
        "incl": sorted(([k[0], k[1], v] for k, v in incl_n.items()), key=lambda r: -r[2])[:300],
    }


# Functions that only pass control down (frameworks' call chains); left out of the inclusive table.
_PASS_THROUGH = (
    "stdlib/asyncio/",
    "uvicorn/",
    "anyio/",
    "<frozen",
    "stdlib/contextlib",
    "stdlib/threading",
    "stdlib/selectors",
    "starlette/middleware/",
    "fastapi/middleware/",
    "fastapi/telemetry/",
    "fastapi/_body_limit",
    "starlette/_exception_handler",
    "starlette/routing",
    "starlette/applications",
    "fastapi/applications",
    "cds/middleware.py",
    "bin/cds",
    "cds/cli.py",
)


def markdown(
    agg: dict[str, Any], requests: int, label: str, tool: str, n_self: int = 15, n_incl: int = 22
) -> str:
    total = agg["total"] or 1
    L = [
        f"### {label}\n",
        f"{tool}; {agg['total']:,} busy samples over {requests:,} requests. Shares are of busy (non-idle) time.\n",
        "Top functions by self time:\n",
        "| self % | function | file |",
        "|---|---|---|",
    ]
    for fn, path, n in agg["self"][:n_self]:
        L.append(f"| {100 * n / total:.1f} | `{fn}` | {path} |")
    L.append("\nTop functions by inclusive time (framework pass-through frames left out):\n")
    L.append("| incl % | function | file |")
    L.append("|---|---|---|")
    shown = 0
    for fn, path, n in agg["incl"]:
        if any(s in path for s in _PASS_THROUGH) or fn in ("<module>", "run", "main"):
            continue
        L.append(f"| {100 * n / total:.1f} | `{fn}` | {path} |")
        shown += 1
        if shown >= n_incl:
            break
    return "\n".join(L) + "\n"


def run_profile(
    body: Any,
    seconds: float,
    raw: Path,
    case: str = "select",
    label: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> str:
    """Start `cds serve` (1 worker), drive it with wrk c=8 while py-spy samples; return markdown."""
    from bench import procs
    from bench.run import start_service, warm, wrk

    label = label or f"Profile: {case}, full prefetch, 1 worker, c=8"
    spy = py_spy()
    if spy is None:
        return _run_pyinstrument(body, seconds, raw, case, label)
    srv = start_service(f"profile-{case}", 1, [], **(extra_env or {}))
    folded = raw / f"profile-{case}.folded"
    folded.unlink(missing_ok=True)
    try:
        warm(srv, body, 2.0)
        spy_proc = subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(srv.pid),
                "--rate",
                "1000",
                "--duration",
                str(round(seconds)),
                "--nonblocking",
                "--function",
                "--format",
                "raw",
                "-o",
                str(folded),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(0.3)
        s = wrk(srv.url, body, 8, seconds + 1, f"profile-{case}")
        try:
            _, err = spy_proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            spy_proc.send_signal(signal.SIGINT)
            _, err = spy_proc.communicate(timeout=10)
    finally:
        procs.stop(srv)
    if not folded.exists():
        raise RuntimeError(f"py-spy wrote nothing: {err[-500:]}")
    agg = parse_folded(folded.read_text())
    (raw / f"profile-{case}.json").write_text(json.dumps(agg, indent=1))
    print(f"  profile {case}: {s['requests']} requests, {agg['total']} busy samples; {folded}", flush=True)
    return markdown(agg, s["requests"], label, "py-spy 1000 Hz, --nonblocking, sampled from outside")


# ---------------------------------------------------------------- fallback: pyinstrument in-process


def _pyinstrument_child(port: int, out: Path) -> None:
    import uvicorn
    from pyinstrument import Profiler

    from cds.app import create_app
    from cds.settings import Settings

    settings = Settings()
    kwargs: dict[str, Any] = {
        "proxy_headers": False,
        "server_header": False,
        "log_level": settings.log_level.lower(),
    }
    try:
        from cds.cli import NoDelayHTTP

        kwargs["http"] = NoDelayHTTP
    except ImportError:
        pass
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, **kwargs))
    profiler = Profiler(interval=0.0005, async_mode="disabled")
    signal.signal(signal.SIGUSR1, lambda *_: None if profiler.is_running else profiler.start())
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises the SIGINT it captured, after a graceful shutdown
        pass
    if profiler.is_running:
        session = profiler.stop()
        lines: dict[str, int] = {}

        def walk(fr: Any, stack: list[str]) -> None:
            if fr.is_synthetic:
                return
            here = stack + [f"{fr.function} ({fr.file_path or '?'}:{fr.line_no or 0})"]
            self_ms = round(fr.total_self_time * 1000)
            if self_ms and not (
                fr.function in ("select", "poll") and (fr.file_path or "").endswith("selectors.py")
            ):
                key = ";".join(here)
                lines[key] = lines.get(key, 0) + self_ms
            for c in fr.children:
                walk(c, here)

        walk(session.root_frame(), [])
        (out / "profile-pyinstrument.folded").write_text(
            "\n".join(f"{k} {v}" for k, v in lines.items()) + "\n"
        )


def _run_pyinstrument(body: Any, seconds: float, raw: Path, case: str, label: str) -> str:
    from bench import procs
    from bench.run import service_env, warm, wrk

    port = procs.free_port()
    state = raw / "state-profile"
    state.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--pyinstrument-child",
        "--port",
        str(port),
        "--out",
        str(raw),
    ]
    srv = procs.start(
        "profile", argv, service_env(1, state, []), f"http://127.0.0.1:{port}", "/cds-services", raw, 1
    )
    try:
        warm(srv, body, 1.5)
        os.kill(srv.pid, signal.SIGUSR1)
        s = wrk(srv.url, body, 8, seconds, f"profile-{case}")
        os.kill(srv.pid, signal.SIGINT)
        srv.proc.wait(timeout=60)
    finally:
        procs.stop(srv)
    agg = parse_folded((raw / "profile-pyinstrument.folded").read_text())
    return markdown(agg, s["requests"], label, "pyinstrument in-process (ms; heavy per-call overhead)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pyinstrument-child", action="store_true")
    ap.add_argument("--port", type=int)
    ap.add_argument("--out", default=str(ROOT / "bench" / "raw"))
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--case", default="select")
    a = ap.parse_args()
    if a.pyinstrument_child:
        _pyinstrument_child(a.port, Path(a.out))
        return
    from datetime import UTC, datetime

    from bench.run import RAW, build_bodies

    RAW.mkdir(parents=True, exist_ok=True)
    bodies = build_bodies(datetime.now(UTC), None)
    md = run_profile(bodies[a.case], a.seconds, Path(a.out), a.case)
    (Path(a.out) / f"profile-{a.case}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
