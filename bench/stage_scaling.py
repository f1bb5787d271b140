"""Is the hook's work linear in the prefetch size? Each stage timed alone, per KB of body, at 10/100/1000
Observations, beside the whole call in-process and the memory the parsed request holds.

    .venv/bin/python bench/stage_scaling.py

A stage timed alone runs on data hot in the CPU caches (best of 5 repeats), so its µs per KB shows the
algorithm: flat or falling means linear or better. The whole call (bench/inproc.py's way: the ASGI app,
no socket) also pays for data that no longer fits in the caches; the last column is how much memory the
parsed body and the slim copies take, to compare with the machine's L2/L3 sizes (`lscpu`).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import timeit
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CASES = (("obs10", 400), ("obs100", 100), ("obs1000", 10))  # (body, timeit number): about 0.1 s each


def _best_us(fn: Any, number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def _resources(prefetch: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    for value in prefetch.values():
        if isinstance(value, dict) and value.get("resourceType") == "Bundle":
            out += [e.get("resource") for e in value.get("entry", []) if isinstance(e, dict)]
        elif isinstance(value, dict):
            out.append(value)
    return out


async def _whole_call_us(app: Any, method: str, path: str, data: bytes, calls: int) -> float:
    from bench.inproc import Asgi

    a = Asgi(app)
    await a.startup()
    try:
        for _ in range(3):
            await a.call(method, path, data)
        c0 = time.process_time()
        for i in range(calls):
            await a.call(method, path, data.replace(b"9b1d7b2e", f"{i:08x}".encode()))
        return (time.process_time() - c0) / calls * 1e6
    finally:
        await a.shutdown()


def main() -> None:
    from bench.run import build_bodies, concrete
    from cds.app import create_app
    from cds.fhir.facts import parse_resources
    from cds.hooks.models import HookRequest
    from cds.middleware import json_depth_exceeds
    from cds.settings import Settings

    logging.getLogger().setLevel(logging.WARNING)
    settings = Settings(auth="off", state_dir=str(ROOT / "bench" / "raw" / "state-stage-scaling"))
    bodies = build_bodies(datetime.now(UTC), None)
    app = create_app(settings)
    print(
        "| body | KB | depth check µs/KB | HookRequest.from_body µs/KB | parse_resources µs/KB "
        "| whole call in-process µs/KB | parsed request + slim copies MB |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, number in CASES:
        b = bodies[name]
        data = concrete(b)
        kb = len(data) / 1000
        hook = HookRequest.from_body(data)
        resources = _resources(hook.prefetch or {})
        pid = hook.context.patientId
        depth = _best_us(lambda d=data: json_depth_exceeds(d), number)
        parse = _best_us(lambda d=data: HookRequest.from_body(d), number)
        read = _best_us(lambda r=resources, p=pid: parse_resources(r, settings, patient_id=p), number)
        whole = asyncio.run(_whole_call_us(app, b.method, b.path, data, number * 3))
        tracemalloc.start()
        held = HookRequest.from_body(data)
        parsed = parse_resources(_resources(held.prefetch or {}), settings, patient_id=pid)
        size, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        del held, parsed
        print(
            f"| {name} | {kb:,.0f} | {depth / kb:.2f} | {parse / kb:.2f} | {read / kb:.2f} | "
            f"{whole / kb:.1f} | {size / 1e6:.1f} |"
        )


if __name__ == "__main__":
    main()
