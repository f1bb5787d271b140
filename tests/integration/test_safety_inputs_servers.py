"""Issue 15 input items on the real FHIR servers (sekmet, Medplum; a live sandbox with `make test-live`).

One patient with the adversarial records of the issue is stored on the server; the service's reader
then builds the facts twice: from the FHIR server's own search results (`fhirServer` reads, the
templates of prefetch_templates) and from a prefetch the server resolved. Both must give the same
facts, and each item's rule must hold in them: the reads, not only the parser, are under test.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from cds.fhir_io import FhirReader, LoadResult, prefetch_templates
from cds.settings import Settings
from tests.integration.service_support import FHIR_TIMEOUTS_S
from tests.support.fhir import FhirServer, load_resources, prefetch_from_server, run_suffix, with_id_suffix
from tests.support.safety_records import PID, records

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def stored(fhir_server: FhirServer) -> tuple[FhirServer, str]:
    suffix = run_suffix("safety")
    load_resources(fhir_server, with_id_suffix(records(NOW), suffix))
    return fhir_server, PID + suffix


def _settings(server: FhirServer) -> Settings:
    timeout_s, deadline_s = FHIR_TIMEOUTS_S.get(server.kind, FHIR_TIMEOUTS_S["default"])
    return Settings(
        _env_file=None,
        auth="off",
        fhir_timeout_s=timeout_s,
        fhir_deadline_s=deadline_s,
        cache_ttl_s=0,
        allow_open_fhir=not server.token,  # a sandbox without a token of ours
    )


async def _read(server: FhirServer, pid: str, prefetch: dict[str, Any] | None) -> LoadResult:
    async with httpx.AsyncClient() as http:
        reader = FhirReader(http, _settings(server))
        try:
            if prefetch is None:
                return await reader.load(pid, None, server.base_url, server.token, 300)
            return await reader.load(pid, prefetch, None, None, None)
        finally:
            await reader.aclose()


async def test_server_reads_and_prefetch_give_the_same_safe_facts(stored: tuple[FhirServer, str]) -> None:
    server, pid = stored
    read = await _read(server, pid, None)
    assert set(read.sources.values()) == {"fhir"}, read.problems
    prefetched = await _read(
        server, pid, prefetch_from_server(server, prefetch_templates(_settings(server)), pid)
    )
    assert set(prefetched.sources.values()) == {"prefetch"}
    assert read.facts == prefetched.facts and read.problems == prefetched.problems == ()
    facts = read.facts
    suffix = pid[len(PID) :]

    def ids(items: Any) -> list[str]:
        return sorted(i.source.rsplit("/", 1)[1].removesuffix(suffix).removeprefix(f"{PID}-") for i in items)

    # item 2: the JCV result is neither an antibody result nor a level
    assert ids(facts.antibodies) == ["ada"] and facts.antibodies[0].positive is False
    # items 4, 5, 6, 14: usable levels, censored "not detected", both same-time results
    assert ids(facts.levels) == ["comma", "nd", "same-a", "same-b"]
    by_id = {i.source.rsplit("/", 1)[1].removesuffix(suffix): i for i in facts.levels}
    assert by_id[f"{PID}-comma"].value_ug_per_ml == pytest.approx(12.5)
    nd = by_id[f"{PID}-nd"]
    assert (nd.comparator, nd.value_ug_per_ml, nd.qualitative) == ("<", 0.5, "Not detected")
    assert {(u.source.rsplit("/", 1)[1].removesuffix(suffix), u.code) for u in facts.unusable} == {
        (f"{PID}-csf", "specimen"),
        (f"{PID}-conflict", "unit-conflict"),
    }
    # item 3: one dose, from the administration given; the order is a request, never a dose
    (dose,) = facts.doses
    assert dose.source.endswith(f"{PID}-given{suffix}") and dose.dose_mg == 300 and dose.date_only
    assert sorted(m.record for m in facts.medications) == ["administration", "administration", "request"]
    # item 8: the session's end time
    (session,) = facts.sessions
    assert session.ended_at == NOW - timedelta(days=3.9) and not session.date_only
    # item 15: the patient
    details = facts.patient
    assert details.birth_date == date(2009, 12, 31)
    assert details.pregnant is True and details.pregnancy_source.endswith(f"{PID}-preg{suffix}")
    assert details.weight_kg == pytest.approx(110 * 0.45359237)
