"""A bounded load test of `cds serve` as a real process: 32 concurrent callers on loopback for
CDS_LOAD_SECONDS (default 120), a mix of valid and invalid requests, JWT on (real ES384 keys served by
a loopback JWKS server, a fresh `jti` per request, so the replay store works throughout).

Asserts correctness under load, not speed (throughput and latency belong to bench/): zero 5xx, every
request answered with the status its kind calls for, zero lost feedback rows (every item acknowledged
with 200 is in the SQLite store afterwards), and resident memory of the server that does not grow by
more than 10% between the first and the last minute (medians of VmRSS samples every 2 s, after a short
warm-up of the same traffic). Prints its figures. Stops by itself; loopback only."""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from cds import demo
from cds.settings import Settings
from cds.store import open_store
from tests.security.procs import service_process
from tests.support.jwks import JwksServer, SigningKey

pytestmark = pytest.mark.slow

SECONDS = float(os.environ.get("CDS_LOAD_SECONDS", "120"))
# mixed load before the measured SECONDS (counted in every assertion but in no memory window): the first
# window should not be the service's start-up, lazy imports and first cache entries
WARMUP_SECONDS = float(os.environ.get("CDS_LOAD_WARMUP_SECONDS", "10"))
CALLERS = 32
SAMPLE_EVERY_S = 2.0
MAX_RSS_GROWTH = 0.10
TOKEN_LIFETIME_S = 5
MAX_BODY = 256 * 1024  # CDS_MAX_BODY_BYTES for the run: the largest demo request is ~15 kB
ISS = "https://ehr.load.example"
PUBLIC = "https://cds.load.example"
SERVICES = {"order-select": "pml-plex-select", "order-sign": "pml-plex-sign"}

# kind -> (weight, expected status)
MIX: dict[str, tuple[int, int]] = {
    "hook": (40, 200),
    "feedback": (20, 200),
    "discovery": (5, 200),
    "malformed-json": (5, 400),
    "wrong-hook": (5, 400),
    "unknown-service": (4, 404),
    "oversize": (2, 413),
    "wrong-content-type": (5, 415),
    "bad-token": (14, 401),
}
BAD_TOKENS = ("replayed", "wrong-aud", "expired", "garbage", "missing", "hs256", "unknown-kid", "wrong-iss")


def rss_kib(pid: int) -> int:
    """VmRSS of `pid` and its children (uvicorn runs in-process with one worker; children if more)."""
    total = 0
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        pids += [int(c) for c in children]
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)
    by_kind: dict[str, Counter[int | str]] = field(default_factory=lambda: defaultdict(Counter))
    latencies: list[float] = field(default_factory=list)
    unexpected: list[tuple[str, int | str, str]] = field(default_factory=list)
    transport_errors: Counter[str] = field(default_factory=Counter)
    acked: list[str] = field(default_factory=list)
    sent_feedback: int = 0


class Caller:
    def __init__(
        self, n: int, base: str, key: SigningKey, jku: str, bodies: list[tuple[str, str, bytes]]
    ) -> None:
        self.rng = random.Random(1000 + n)
        self.base = base
        self.key = key
        self.jku = jku
        self.bodies = bodies
        self.used_token: str | None = None
        self.other = SigningKey.generate("ES384", kid=key.kid)  # same kid, key unknown to the issuer

    def token(self, path: str, **kw: Any) -> str:
        # short-lived, as EHR tokens are: the replay store keeps each jti until exp + skew, so with
        # 5 s tokens and no skew it is full within the warm-up and what grows after it is a leak
        kw.setdefault("lifetime_s", TOKEN_LIFETIME_S)
        return self.key.token(iss=ISS, aud=PUBLIC + path, jku=self.jku, **kw)

    def bad_token(self, path: str) -> tuple[str, str | None]:
        what = self.rng.choice(BAD_TOKENS)
        if what == "replayed" and self.used_token:
            return what, self.used_token
        if what == "wrong-aud":
            return what, self.token("/cds-services/elsewhere")
        if what == "expired":
            return what, self.token(path, now=time.time() - 3600, lifetime_s=60)
        if what == "missing":
            return what, None
        if what == "hs256":
            return what, self.key.token(iss=ISS, aud=PUBLIC + path, jku=self.jku, alg="HS256", key="s" * 32)
        if what == "unknown-kid":
            return what, self.other.token(iss=ISS, aud=PUBLIC + path, jku=self.jku)
        if what == "wrong-iss":
            return what, self.key.token(iss="https://other.example", aud=PUBLIC + path, jku=self.jku)
        return "garbage", "eyJhbGciOiJFUzM4NCJ9.e30." + uuid.uuid4().hex

    def hook_body(self) -> tuple[str, str, bytes]:
        hook, service, raw = self.rng.choice(self.bodies)
        return hook, service, raw.replace(b"@HOOK-INSTANCE@", str(uuid.uuid4()).encode())

    def feedback_body(self) -> tuple[list[str], bytes]:
        items, cards = [], []
        for _ in range(self.rng.randint(1, 3)):
            card = str(uuid.uuid4())
            cards.append(card)
            item: dict[str, Any] = {
                "card": card,
                "outcome": "overridden",
                "outcomeTimestamp": datetime.now(UTC)
                .isoformat(timespec="milliseconds")
                .replace("+00:00", "Z"),
            }
            if self.rng.random() < 0.5:
                item["outcome"] = "accepted"
                item["acceptedSuggestions"] = [{"id": str(uuid.uuid4())}]
            else:
                item["overrideReason"] = {"reason": {"code": "not-relevant"}, "userComment": "load test"}
            items.append(item)
        return cards, json.dumps({"feedback": items}).encode()

    def request(self) -> tuple[str, str, str, dict[str, str], bytes, list[str]]:
        """(kind, method, path, headers, body, feedback cards) of the next request."""
        kinds = list(MIX)
        kind = self.rng.choices(kinds, weights=[MIX[k][0] for k in kinds])[0]
        headers = {"Content-Type": "application/json"}
        cards: list[str] = []
        hook, service, body = self.hook_body()
        path = f"/cds-services/{service}"
        method = "POST"
        if kind == "feedback":
            path += "/feedback"
            cards, body = self.feedback_body()
        elif kind == "discovery":
            method, path, body = "GET", "/cds-services", b""
            headers = {}
        elif kind == "malformed-json":
            body = body[: self.rng.randint(1, len(body) - 1)]
        elif kind == "wrong-hook":
            # a hook name the service does not answer: an order-select/order-sign mismatch is answered
            # as the service's own hook (the CDS Hooks Sandbox sends one, issue 17), any other is a 400
            body = body.replace(f'"hook": "{hook}"'.encode(), b'"hook": "patient-view"', 1)
        elif kind == "unknown-service":
            path = f"/cds-services/nope-{self.rng.randint(0, 999)}"
        elif kind == "oversize":
            body = b'{"pad": "' + b"x" * (MAX_BODY + 1024) + b'"}'
        elif kind == "wrong-content-type":
            headers = {"Content-Type": self.rng.choice(["text/plain", "application/x-www-form-urlencoded"])}
        if kind == "bad-token":
            what, tok = self.bad_token(path)
            kind = f"bad-token:{what}"
        else:
            tok = self.token(path)
        if tok is not None:
            headers["Authorization"] = f"Bearer {tok}"
        return kind, method, path, headers, body, cards


async def run_caller(
    caller: Caller, client: httpx.AsyncClient, tally: Tally, deadline: float, lock: threading.Lock
) -> None:
    while time.monotonic() < deadline:
        kind, method, path, headers, body, cards = caller.request()
        expected = MIX[kind.split(":")[0]][1]
        started = time.perf_counter()
        try:
            r = await client.request(method, path, headers=headers, content=body or None)
        except httpx.HTTPError as exc:
            tally.transport_errors[f"{kind}: {type(exc).__name__}"] += 1
            tally.by_kind[kind]["transport-error"] += 1
            continue
        elapsed = time.perf_counter() - started
        with lock:
            tally.latencies.append(elapsed)
            tally.statuses[r.status_code] += 1
            tally.by_kind[kind][r.status_code] += 1
            if r.status_code != expected:
                tally.unexpected.append((kind, r.status_code, r.text[:200]))
            if kind == "feedback":
                tally.sent_feedback += len(cards)
                if r.status_code == 200:
                    tally.acked.extend(cards)
        if r.status_code == 200 and kind == "hook" and "Authorization" in headers:
            caller.used_token = headers["Authorization"].removeprefix("Bearer ")


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def test_load_mixed_traffic_no_5xx_no_lost_feedback_bounded_memory(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    bodies: list[tuple[str, str, bytes]] = []
    for name in demo.scenarios():
        p = demo.patient(name, now)
        for hook, service in SERVICES.items():
            body = demo.hook_request(p, hook)  # type: ignore[arg-type]
            body["hookInstance"] = "@HOOK-INSTANCE@"
            bodies.append((hook, service, json.dumps(body).encode()))
    assert max(len(b) for _, _, b in bodies) < MAX_BODY

    keys = JwksServer()
    key = keys.add_key("ehr", "ES384")
    state = tmp_path / "state"
    with keys.serve():
        jku = keys.url("ehr")
        env = {
            "CDS_AUTH": "jwt",
            "CDS_PUBLIC_BASE_URL": PUBLIC,
            "CDS_STATE_DIR": str(state),
            "CDS_LOG_LEVEL": "WARNING",
            "CDS_MAX_BODY_BYTES": str(MAX_BODY),
            "CDS_JWT_ISSUERS": json.dumps({ISS: {"jwks_url": jku, "allowed_jku": [jku]}}),
            # the chart-link store holds each link and its pages for 15 minutes (about 16 KiB each, up to
            # CDS_CHART_MAX_ENTRIES): a small cap lets it fill during the warm-up, so the growth measured
            # after it is growth beyond the designed bounds
            "CDS_CHART_MAX_ENTRIES": "300",
            # same clock on both sides; with the default 60 s skew every jti would stay 65 s, and the
            # replay store grow through the first measured minute (about 10 MB at this rate)
            "CDS_JWT_CLOCK_SKEW_S": "0",
        }
        log = tmp_path / "service.log"
        with service_process(env, log) as svc:
            pid = svc.proc.pid
            tally = Tally()
            lock = threading.Lock()
            samples: list[tuple[float, int]] = []

            async def main() -> float:
                # idle connections are dropped before uvicorn's 5 s keep-alive timeout closes them, or a
                # request sent on a connection the server is closing fails in transit (an HTTP/1.1 race)
                limits = httpx.Limits(
                    max_connections=CALLERS, max_keepalive_connections=CALLERS, keepalive_expiry=2.0
                )
                async with httpx.AsyncClient(base_url=svc.base, timeout=30, limits=limits) as client:
                    # every scenario and hook once: all answer 200 (and lazy imports, the first JWKS fetch
                    # and the first store writes happen before the callers start)
                    warm = Caller(999, svc.base, key, jku, bodies)
                    for hook, service, raw in bodies:
                        path = f"/cds-services/{service}"
                        hdr = {
                            "Content-Type": "application/json",
                            "Authorization": f"Bearer {warm.token(path)}",
                        }
                        r = await client.post(
                            path,
                            content=raw.replace(b"@HOOK-INSTANCE@", str(uuid.uuid4()).encode()),
                            headers=hdr,
                        )
                        assert r.status_code == 200, r.text[:300]

                    began = time.monotonic()
                    start = began + WARMUP_SECONDS  # the measured run
                    deadline = start + SECONDS

                    async def sampler() -> None:
                        await asyncio.sleep(WARMUP_SECONDS)
                        while time.monotonic() < deadline:
                            samples.append((time.monotonic() - start, rss_kib(pid)))
                            await asyncio.sleep(SAMPLE_EVERY_S)
                        samples.append((time.monotonic() - start, rss_kib(pid)))

                    callers = [Caller(i, svc.base, key, jku, bodies) for i in range(CALLERS)]
                    tasks: list[Awaitable[Any]] = [
                        run_caller(c, client, tally, deadline, lock) for c in callers
                    ]
                    await asyncio.gather(sampler(), *tasks)
                    return time.monotonic() - began

            elapsed = asyncio.run(main())
            assert svc.proc.poll() is None, "the service died under load"
            still_ready = httpx.get(svc.base + "/readyz", timeout=5).status_code
        server_log = log.read_text(errors="replace")

    async def stored() -> set[str]:
        store = open_store(Settings(_env_file=None, state_dir=state, database_url=None))
        await store.start()
        try:
            return {row["card"] for row in await store.feedback()}
        finally:
            await store.close()

    rows = asyncio.run(stored())
    lost = [c for c in tally.acked if c not in rows]

    total = sum(tally.statuses.values())
    window = min(60.0, SECONDS / 2)
    first = [kib for t, kib in samples if t <= window]
    last = [kib for t, kib in samples if t >= elapsed - WARMUP_SECONDS - window]
    first_med, last_med = statistics.median(first), statistics.median(last)
    growth = (last_med - first_med) / first_med
    five_xx = sum(n for s, n in tally.statuses.items() if s >= 500)

    print(
        f"\nload: {CALLERS} callers, {elapsed:.1f} s ({WARMUP_SECONDS:.0f} s warm-up + {SECONDS:.0f} s measured), "
        f"{total} requests, {total / elapsed:.0f} req/s"
    )
    print(
        f"status histogram: {dict(sorted(tally.statuses.items()))}; transport errors: {dict(tally.transport_errors)}"
    )
    for kind in sorted(tally.by_kind):
        print(f"  {kind:28s} {dict(tally.by_kind[kind])}")
    print(
        f"latency: p50 {_pct(tally.latencies, 0.5) * 1000:.1f} ms, p99 {_pct(tally.latencies, 0.99) * 1000:.1f} ms, "
        f"max {max(tally.latencies) * 1000:.1f} ms"
    )
    print(
        f"feedback: {tally.sent_feedback} items sent, {len(tally.acked)} acknowledged, {len(rows)} rows stored, "
        f"{len(lost)} lost"
    )
    print(f"RSS (MiB) every {SAMPLE_EVERY_S:.0f} s: " + " ".join(f"{kib / 1024:.0f}" for _, kib in samples))
    print(
        f"RSS median first {window:.0f} s {first_med / 1024:.1f} MiB, last {window:.0f} s {last_med / 1024:.1f} MiB, "
        f"growth {growth * 100:+.1f}% (limit {MAX_RSS_GROWTH * 100:.0f}%)"
    )

    assert five_xx == 0, f"{five_xx} responses were 5xx"
    assert "Traceback" not in server_log, server_log[-4000:]
    assert still_ready == 200
    assert not tally.transport_errors, f"transport errors: {dict(tally.transport_errors)}"
    assert not tally.unexpected, f"{len(tally.unexpected)} unexpected statuses, e.g. {tally.unexpected[:5]}"
    assert tally.acked, "no feedback was acknowledged"
    assert not lost, f"{len(lost)} acknowledged feedback items are not in the store"
    assert len(first) >= 3 and len(last) >= 3, samples
    assert growth <= MAX_RSS_GROWTH, f"RSS grew {growth * 100:.1f}% between the first and the last window"
