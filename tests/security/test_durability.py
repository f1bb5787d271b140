"""Feedback durability: SIGKILL `cds serve` during a feedback burst, restart it on the same state, and
every feedback item that got a 200 is in the store."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx

from cds.settings import Settings
from cds.store import open_store
from tests.security.procs import service_process
from tests.support.servers import free_port

PATH = "/cds-services/pml-plex-select/feedback"


def test_acknowledged_feedback_survives_sigkill(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {"CDS_AUTH": "off", "CDS_STATE_DIR": str(state)}
    port = free_port()
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def burst(base: str) -> None:
        with httpx.Client(timeout=5) as client:
            while not stop.is_set():
                card = str(uuid.uuid4())
                item = {
                    "card": card,
                    "outcome": "overridden",
                    "outcomeTimestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
                try:
                    r = client.post(base + PATH, json={"feedback": [item]})
                except httpx.HTTPError:
                    return  # the server is gone
                if r.status_code == 200:
                    with lock:
                        acked.append(card)

    with service_process(env, tmp_path / "first.log", port=port) as svc:
        workers = [threading.Thread(target=burst, args=(svc.base,)) for _ in range(8)]
        for w in workers:
            w.start()
        time.sleep(1.5)
        svc.kill()  # SIGKILL mid-burst: no shutdown hook runs
        stop.set()
        for w in workers:
            w.join(timeout=10)
    assert len(acked) > 50, f"the burst was too small to mean anything ({len(acked)})"

    with service_process(env, tmp_path / "second.log", port=port) as svc:
        assert httpx.get(svc.base + "/readyz").status_code == 200

        async def stored() -> set[str]:
            store = open_store(Settings(_env_file=None, state_dir=state))
            await store.start()
            try:
                return {row["card"] for row in await store.feedback()}
            finally:
                await store.close()

        cards = asyncio.run(stored())
    lost = [c for c in acked if c not in cards]
    print(f"feedback acknowledged before SIGKILL: {len(acked)}, lost: {len(lost)}")
    assert not lost
