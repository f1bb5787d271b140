"""Where one hook call's CPU goes, per stage: the ASGI app called in-process with timers around stages.

    .venv/bin/python bench/components.py [--case select] [-n 400]

Wraps the service's stage functions (looked up by name; a stage that does not exist is skipped) with
perf_counter timers, calls the app N times in-process (bench/inproc.py: no socket, no uvicorn) and
prints µs per request per stage; "framework + rest" is the remainder of the whole call. Nested stages
(R4B validation inside plex_orders or render) are shown indented and are included in their parent.
Timers cost about 0.5 µs each, so totals are within a few µs of an unwrapped run.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import inspect
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# (label, module, attribute path, depth)
STAGES = [
    ("JSON depth check (middleware)", "cds.middleware", "json_depth_exceeds", 0),
    (
        "request model: HookRequest.from_body",
        "cds.hooks.routes",
        "HookRequest.from_body",
        0,
    ),
    ("plex_orders (draft order)", "cds.fhir.orders", "plex_orders", 0),
    ("R4B validation of the draft order / strict mode (r4b_valid)", "cds.fhir.r4b", "r4b_valid", 1),
    (
        "slim-model validation, one resource at a time (validate_resource: the draft order)",
        "cds.fhir.orders",
        "validate_resource",
        1,
    ),
    ("FhirReader.load (prefetch → PatientFacts)", "cds.fhir_io", "FhirReader.load", 0),
    (
        "slim-model validation, all entries at once (ALL_MODELS)",
        "cds.fhir.shapes",
        "ALL_MODELS.validate_python",
        1,
    ),
    ("engine: pk.estimate_remaining", "cds.engine.pk", "estimate_remaining", 0),
    ("engine: iris.assess_iris", "cds.engine.iris", "assess_iris", 0),
    ("engine: dmt.advise_dmt", "cds.engine.dmt", "advise_dmt", 0),
    ("keep_chart_link (link store entry)", "cds.views.chart_links", "keep_chart_link", 0),
    ("cards.render", "cds.hooks.cards", "render", 0),
    ("R4B validation of emitted resources (validate_emitted)", "cds.hooks.cards", "validate_emitted", 1),
    ("CdsResponse.to_json (json_ready)", "cds.hooks.models", "CdsResponse.to_json", 0),
    ("JSONResponse.render (json.dumps)", "starlette.responses", "JSONResponse.render", 0),
    ("_finish (log line + audit)", "cds.hooks.routes", "_finish", 0),
    ("authenticate", "cds.hooks.routes", "authenticate", 0),
    ("request body read", "cds.hooks.routes", "_body", 0),
    ("metrics.count_prefetch", "cds.metrics", "count_prefetch", 0),
    ("metrics.count_cards", "cds.metrics", "count_cards", 0),
]


class Timers:
    def __init__(self) -> None:
        self.t: dict[str, float] = {}
        self.n: dict[str, int] = {}

    def wrap(self, label: str, fn: Any) -> Any:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def aw(*a: Any, **k: Any) -> Any:
                t0 = time.thread_time()
                try:
                    return await fn(*a, **k)
                finally:
                    self.t[label] = self.t.get(label, 0.0) + time.thread_time() - t0
                    self.n[label] = self.n.get(label, 0) + 1

            return aw

        @functools.wraps(fn)
        def w(*a: Any, **k: Any) -> Any:
            t0 = time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                self.t[label] = self.t.get(label, 0.0) + time.thread_time() - t0
                self.n[label] = self.n.get(label, 0) + 1

        return w


def install(timers: Timers) -> list[str]:
    missing = []
    for label, mod, attr, _ in STAGES:
        try:
            m = importlib.import_module(mod)
        except ImportError:
            missing.append(label)
            continue
        owner: Any = m
        parts = attr.split(".")
        for p in parts[:-1]:
            owner = getattr(owner, p, None)
        raw = inspect.getattr_static(owner, parts[-1], None) if owner is not None else None
        if raw is None:
            missing.append(label)
            continue
        if not isinstance(owner, type) and not inspect.ismodule(owner):  # an instance: wrap its bound method
            setattr(owner, parts[-1], timers.wrap(label, getattr(owner, parts[-1])))
        elif isinstance(raw, classmethod):
            fn = getattr(owner, parts[-1])
            setattr(owner, parts[-1], staticmethod(timers.wrap(label, fn)))
        elif isinstance(raw, staticmethod):
            setattr(owner, parts[-1], staticmethod(timers.wrap(label, raw.__func__)))
        else:
            setattr(owner, parts[-1], timers.wrap(label, raw))
    return missing


async def run(case: str, n: int) -> str:
    import logging

    from bench.inproc import Asgi
    from bench.run import build_bodies, concrete

    timers = Timers()
    missing = install(timers)
    from cds.app import create_app
    from cds.settings import Settings

    logging.getLogger().setLevel(logging.WARNING)
    bodies = build_bodies(datetime.now(UTC), None)
    b = bodies[case]
    data = concrete(b) if b.file else b""
    a = Asgi(create_app(Settings(auth="off", state_dir=str(ROOT / "bench" / "raw" / "state-components"))))
    await a.startup()
    for _ in range(40):
        status, _ = await a.call(b.method, b.path, data)
    timers.t.clear()
    timers.n.clear()
    t0 = time.thread_time()
    c0 = time.process_time()
    for i in range(n):
        await a.call(b.method, b.path, data.replace(b"9b1d7b2e", f"{i:08x}".encode()))
    wall = (time.thread_time() - t0) / n * 1e6
    cpu = (time.process_time() - c0) / n * 1e6
    await a.shutdown()
    L = [
        (
            f"In-process, `{case}` ({b.size:,}-byte body, status {status}), {n} calls: {cpu:.0f} µs CPU, "
            f"{wall:.0f} µs CPU of the event-loop thread per call (no socket, no uvicorn).\n"
        ),
        "| stage | µs per request | calls per request |",
        "|---|---|---|",
    ]
    top = 0.0
    for label, _, _, depth in STAGES:
        if label not in timers.t:
            continue
        us = timers.t[label] / n * 1e6
        if depth == 0:
            top += us
        L.append(f"| {'  ↳ ' if depth else ''}{label} | {us:.0f} | {timers.n[label] / n:g} |")
    L.append(
        f"| framework + rest (ASGI layers, routing, the hook's own lines, freeing the request's objects) | {max(0.0, wall - top):.0f} | |"
    )
    if missing:
        L.append(f"\n(not found, not timed: {', '.join(missing)})")
    return "\n".join(L) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", default="select")
    ap.add_argument("-n", type=int, default=400)
    a = ap.parse_args()
    print(asyncio.run(run(a.case, a.n)))


if __name__ == "__main__":
    main()
