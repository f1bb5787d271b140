"""Measure proposed fixes to code outside bench/ without editing it: monkeypatches, in-process, A/B.

    .venv/bin/python bench/experiments.py [-n 300] [--rounds 3]

Each proposal is applied as a monkeypatch in this process only; rounds alternate "as is" and "patched"
on the same app (bench/inproc.py), so machine noise hits both alike. Prints CPU µs per order-select
call (full prefetch) for each variant and checks that the reply is byte-identical apart from card uuids.
These are demonstrations of the fixes proposed in bench/results.md, not the fixes themselves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# ---------------------------------------------------------------- A: R4B validation of emitted resources, by shape

_FHIR_ID_REF = re.compile(r"^(Patient|ServiceRequest|Practitioner)/[A-Za-z0-9\-.]{1,64}$")
_FHIR_DATETIME = re.compile(
    r"^([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])"
    r"(T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]{1,9})?)?)?(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00)?)?)?$"
)
_VOLATILE = {"authoredOn": _FHIR_DATETIME, "occurrenceDateTime": _FHIR_DATETIME}


def shape_key(resource: dict[str, Any]) -> str | None:
    """JSON of the resource with per-request values (subject reference, dates) masked after checking them
    against the FHIR regexes that R4B applies; None when a masked value does not match (validate fully)."""
    masked = dict(resource)
    for k, rx in _VOLATILE.items():
        v = masked.get(k)
        if v is not None:
            if not (isinstance(v, str) and rx.match(v)):
                return None
            masked[k] = "<dateTime>"
    subj = masked.get("subject")
    if isinstance(subj, dict) and set(subj) == {"reference"}:
        if not (isinstance(subj["reference"], str) and _FHIR_ID_REF.match(subj["reference"])):
            return None
        masked["subject"] = {"reference": subj["reference"].split("/", 1)[0] + "/<id>"}
    return json.dumps(masked, sort_keys=True, separators=(",", ":"))


STATS = {"emitted_full": 0}


def patch_validate_emitted() -> Any:
    from cds.hooks import cards

    orig = cards.validate_emitted
    valid: set[str] = set()

    def cached(resource: dict[str, Any]) -> dict[str, Any]:
        key = shape_key(resource)
        if key is not None and key in valid:
            return resource
        orig(resource)
        STATS["emitted_full"] += 1
        if key is not None and len(valid) < 4096:
            valid.add(key)
        return resource

    cards.validate_emitted = cached
    return lambda: setattr(cards, "validate_emitted", orig)


# ---------------------------------------------------------------- B: JSON depth check without the string regex

_OPEN_CLOSE = bytes.maketrans(b"[]{}", b"()()")
_KEEP = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth_exceeds_fast(body: bytes, limit: int = 64) -> bool:
    """Same answer as cds.middleware.json_depth_exceeds for any JSON text, with C-speed bytes operations:
    drop escaped characters, keep the text outside strings (split on quotes), keep only brackets, then peel
    innermost pairs; the number of peels to empty is the nesting depth."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    if b"\\" in body:
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    s = b"".join(body.split(b'"')[0::2]).translate(_OPEN_CLOSE, _KEEP)
    for _ in range(limit):
        if not s:
            return False
        s = s.replace(b"()", b"")
    return bool(s)


def patch_depth() -> Any:
    from cds import middleware

    orig = middleware.json_depth_exceeds
    middleware.json_depth_exceeds = json_depth_exceeds_fast
    return lambda: setattr(middleware, "json_depth_exceeds", orig)


# ---------------------------------------------------------------- C: CdsResponse.to_json dumps the cards once


def patch_to_json() -> Any:
    from cds.hooks import models

    orig = models.CdsResponse.to_json

    def to_json(self: Any) -> dict[str, Any]:
        out = models.prune(self.model_dump(mode="json", exclude_none=True))
        out["cards"] = out.get("cards", [])  # the one sanctioned empty value
        return out

    models.CdsResponse.to_json = to_json
    return lambda: setattr(models.CdsResponse, "to_json", orig)


PATCHES = {
    "A validate_emitted by shape": patch_validate_emitted,
    "B depth check": patch_depth,
    "C to_json once": patch_to_json,
}


def _strip_uuids(data: bytes) -> Any:
    """The reply without card/suggestion uuids and chart links, digits masked (dates and decayed levels
    move with the clock between two calls)."""
    out = json.loads(re.sub(rb"[0-9]", b"0", data))
    for c in out.get("cards", []):
        c.pop("uuid", None)
        for s in c.get("suggestions", []) or []:
            s.pop("uuid", None)
        for link in c.get("links", []) or []:
            link.pop("url", None)
    return out


async def main_async(n: int, rounds: int) -> None:
    import logging

    from bench.inproc import Asgi
    from bench.run import build_bodies, concrete
    from cds.app import create_app
    from cds.settings import Settings

    logging.getLogger().setLevel(logging.WARNING)
    b = build_bodies(datetime.now(UTC), None)["select"]
    data = concrete(b)
    a = Asgi(create_app(Settings(auth="off", state_dir=str(ROOT / "bench" / "raw" / "state-experiments"))))
    await a.startup()
    _, ref = await a.call(b.method, b.path, data)

    async def cpu() -> float:
        for _ in range(20):
            await a.call(b.method, b.path, data)
        t0 = time.process_time()
        for i in range(n):
            await a.call(b.method, b.path, data.replace(b"9b1d7b2e", f"{i:08x}".encode()))
        return (time.process_time() - t0) / n * 1e6

    variants = [("as is", [])] + [(k, [k]) for k in PATCHES] + [("A+B+C", list(PATCHES))]
    res: dict[str, list[float]] = {v: [] for v, _ in variants}
    for _ in range(rounds):
        for name, keys in variants:
            undo = [PATCHES[k]() for k in keys]
            try:
                _, out = await a.call(b.method, b.path, data)
                same = _strip_uuids(out) == _strip_uuids(ref)
                res[name].append(await cpu())
            finally:
                for u in reversed(undo):
                    u()
            if not same:
                print(f"  ! {name}: reply differs from the unpatched one", flush=True)
    await a.shutdown()
    print(f"(A: full R4B validations while patched: {STATS['emitted_full']})")
    base = min(res["as is"])
    print(f"order-select, full prefetch, in-process CPU per call (best of {rounds} rounds of {n}):\n")
    print("| variant | µs per call | saved vs as is |")
    print("|---|---|---|")
    for name, _ in variants:
        best = min(res[name])
        print(f"| {name} | {best:.0f} | {base - best:+.0f} µs ({100 * (base - best) / base:.0f}%) |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    asyncio.run(main_async(a.n, a.rounds))


if __name__ == "__main__":
    main()
