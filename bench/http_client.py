"""CPU per FHIR GET of the app's one httpx client (cds.outbound.http_client), against the local FHIR
server loaded with the bench patient.

    .venv/bin/python bench/http_client.py [--rounds 40] [--repeats 2]

Each round reads the searches a hook without prefetch makes, one at a time and then all at once,
`--repeats` times. Client-side CPU only (time.process_time of this process); the FHIR server's own
CPU is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


async def measure(urls: list[str], rounds: int) -> dict[int, float]:
    from cds.outbound import http_client
    from cds.settings import Settings

    out: dict[int, float] = {}
    async with http_client(Settings(auth="off", fhir_timeout_s=10)) as c:
        for u in urls:  # warm: connections open, every answer a 200
            r = await c.get(u, headers={"Accept": "application/fhir+json"})
            r.raise_for_status()
        for together in (1, len(urls)):
            t0 = time.process_time()
            for _ in range(rounds):
                if together == 1:
                    for u in urls:
                        await c.get(u)
                else:
                    await asyncio.gather(*(c.get(u) for u in urls))
            out[together] = (time.process_time() - t0) / rounds / len(urls) * 1e6
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()

    from bench import bodies as B
    from bench import run as R
    from cds.hooks.services import definitions
    from cds.settings import Settings

    fhir = R.start_fhir()
    if fhir is None:
        sys.exit("no local FHIR server")
    base, state = fhir
    try:
        R.load_fhir(base, B.realistic_patient(datetime.now(UTC)).resources)
        templates = definitions(Settings(auth="off"))[0].prefetch
        urls = [
            f"{base}/{t.replace('{{context.patientId}}', B.BENCH_PID)}"
            for key, t in templates.items()
            if key != "patient"
        ]
        for _ in range(a.repeats):
            got = asyncio.run(measure(urls, a.rounds))
            print(
                f"CPU per GET: {got[1]:6,.0f} µs one at a time, {got[len(urls)]:6,.0f} µs {len(urls)} at once",
                flush=True,
            )
    finally:
        R.stop_fhir(state)


if __name__ == "__main__":
    main()
