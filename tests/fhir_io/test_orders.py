"""draftOrders -> PlexOrder: which orders count and what the plan says."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from cds.errors import BadHookRequest
from cds.fhir.orders import plex_orders
from cds.settings import Settings

S = Settings()


def sr(
    sid: str | None = "sr1", code: dict[str, Any] | None = None, status: str = "draft", **extra: Any
) -> dict[str, Any]:
    r: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": status,
        "intent": "order",
        "subject": {"reference": "Patient/pat-1"},
        "code": code if code is not None else {"text": "Plasma exchange"},
    }
    if sid is not None:
        r["id"] = sid
    r.update(extra)
    return r


def draft(*resources: dict[str, Any], with_type: bool = True) -> dict[str, Any]:
    b: dict[str, Any] = {"resourceType": "Bundle", "entry": [{"resource": r} for r in resources]}
    if with_type:
        b["type"] = "collection"
    return b


@pytest.mark.parametrize(
    "bad",
    [
        None,
        [],
        "Bundle",
        {"resourceType": "Parameters"},
        {"entry": []},
        {"resourceType": "Bundle", "entry": {"resource": {}}},
    ],
)
def test_draft_orders_must_be_a_bundle(bad: Any) -> None:
    with pytest.raises(BadHookRequest):
        plex_orders(bad, None, S)


def test_bundle_without_type_and_without_entries_is_accepted() -> None:
    assert plex_orders({"resourceType": "Bundle"}, None, S) == []
    assert len(plex_orders(draft(sr(), with_type=False), None, S)) == 1


@pytest.mark.parametrize(
    "code",
    [
        {"coding": [{"system": "http://snomed.info/sct", "code": "127788007"}]},
        {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "36514"}]},
        {"coding": [{"system": "http://hl7.org/fhir/sid/icd-9-cm", "code": "99.71"}]},
        {"text": "Therapeutic plasmapheresis"},
        {"text": "PLEX x5"},
        {"text": "TPE, every other day"},
        {"coding": [{"system": "urn:local", "code": "A1", "display": "Apheresis, therapeutic"}]},
        {"text": "plasma-exchange"},
    ],
)
def test_plex_orders_by_code_or_text(code: dict[str, Any]) -> None:
    (order,) = plex_orders(draft(sr(code=code)), None, S)
    assert order.plan.modality == "plex" and order.reference == "ServiceRequest/sr1"


@pytest.mark.parametrize(
    "code",
    [
        {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "36516"}]},
        {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "36515"}]},
        {"text": "Immunoadsorption (IA)"},
    ],
)
def test_immunoadsorption_orders(code: dict[str, Any]) -> None:
    (order,) = plex_orders(draft(sr(code=code)), None, S)
    assert order.plan.modality == "immunoadsorption"


@pytest.mark.parametrize(
    "code",
    [
        {"text": "Complex regional pain consult"},
        {"text": "Type and screen"},
        {"text": "Plexus block"},
        {"text": "MRI brain"},
        {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "36514X"}]},
        {"coding": [{"system": "http://loinc.org", "code": "127788007"}]},
        {"text": "Plateletpheresis"},
        {"text": "Red cell apheresis"},
    ],
)
def test_other_orders_are_not_plex(code: dict[str, Any]) -> None:
    assert plex_orders(draft(sr(code=code)), None, S) == []


def test_configured_codes_extend_the_list() -> None:
    code = {"coding": [{"system": "urn:site", "code": "PX"}]}
    assert plex_orders(draft(sr(code=code)), None, S) == []
    assert len(plex_orders(draft(sr(code=code)), None, Settings(plex_codes=["urn:site|PX"]))) == 1


def test_selections_pick_orders_for_order_select() -> None:
    bundle = draft(
        sr("a"),
        sr("b"),
        sr("c", code={"text": "MRI"}),
        {"resourceType": "MedicationRequest", "id": "m", "status": "draft", "intent": "order"},
    )
    assert [o.reference for o in plex_orders(bundle, ["ServiceRequest/b"], S)] == ["ServiceRequest/b"]
    assert plex_orders(bundle, ["ServiceRequest/c", "MedicationRequest/m"], S) == []
    assert plex_orders(bundle, [], S) == []
    assert [o.reference for o in plex_orders(bundle, None, S)] == ["ServiceRequest/a", "ServiceRequest/b"]


def test_order_sign_takes_re_signed_non_draft_orders_but_not_errors() -> None:
    bundle = draft(sr("a", status="active"), sr("b", status="entered-in-error"), sr("c", status="on-hold"))
    assert [o.reference for o in plex_orders(bundle, None, S)] == ["ServiceRequest/a", "ServiceRequest/c"]


def test_malformed_entries_are_skipped() -> None:
    bundle = draft(sr("a", quantityQuantity={"value": "five"}), sr("b"))
    bundle["entry"].extend([{"fullUrl": "x"}, "junk", {"resource": None}])
    assert [o.reference for o in plex_orders(bundle, None, S)] == ["ServiceRequest/b"]


def test_order_without_id_counts_for_order_sign_only() -> None:
    (order,) = plex_orders(draft(sr(None)), None, S)
    assert order.reference == ""
    assert plex_orders(draft(sr(None)), ["ServiceRequest/"], S) == []


def test_plan_from_quantity_and_timing() -> None:
    order = sr(
        quantityQuantity={"value": 5, "unit": "sessions"},
        occurrenceTiming={
            "repeat": {
                "count": 7,
                "frequency": 1,
                "period": 2,
                "periodUnit": "d",
                "boundsPeriod": {"start": "2025-03-11T08:00:00Z"},
            }
        },
        note=[{"text": "1.0 plasma volume per exchange"}],
    )
    (o,) = plex_orders(draft(order), None, S)
    assert o.plan.ordered_sessions == 5
    assert o.plan.interval_days == 2.0
    assert o.plan.plasma_volumes_per_session == 1.0
    assert o.plan.first_session_at == datetime(2025, 3, 11, 8, 0, tzinfo=UTC)
    assert o.text == "Plasma exchange" and o.resource is order


def test_plan_from_repeat_count_and_defaults() -> None:
    (o,) = plex_orders(
        draft(sr(occurrenceTiming={"repeat": {"count": 6, "frequency": 3, "period": 1, "periodUnit": "wk"}})),
        None,
        S,
    )
    assert o.plan.ordered_sessions == 6
    assert o.plan.interval_days == pytest.approx(7 / 3)
    assert o.plan.plasma_volumes_per_session == 1.5
    (o,) = plex_orders(draft(sr()), None, S)
    assert (o.plan.ordered_sessions, o.plan.interval_days, o.plan.first_session_at) == (None, 2.0, None)


def test_plan_first_session_from_datetime_period_or_events() -> None:
    (a,) = plex_orders(draft(sr(occurrenceDateTime="2025-03-12")), None, S)
    (b,) = plex_orders(draft(sr(occurrencePeriod={"start": "2025-03-13T09:00:00+01:00"})), None, S)
    (c,) = plex_orders(
        draft(sr(occurrenceTiming={"event": ["2025-03-16T08:00:00Z", "2025-03-14T08:00:00Z"]})), None, S
    )
    assert a.plan.first_session_at == datetime(2025, 3, 12, tzinfo=UTC)
    assert b.plan.first_session_at == datetime(2025, 3, 13, 8, tzinfo=UTC)
    assert c.plan.first_session_at == datetime(2025, 3, 14, 8, tzinfo=UTC)


def test_volume_quantity_is_not_a_session_count() -> None:
    (o,) = plex_orders(draft(sr(quantityQuantity={"value": 3000, "unit": "mL"})), None, S)
    assert o.plan.ordered_sessions is None


def test_a_year_one_date_with_a_positive_offset_is_no_start_not_an_error() -> None:
    # 0001-01-01T00:00:00+14:00 is before UTC year 1: datetime raises OverflowError, not ValueError
    (order,) = plex_orders(draft(sr(occurrenceDateTime="0001-01-01T00:00:00+14:00")), None, S)
    assert order.plan.first_session_at is None
