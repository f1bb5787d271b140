"""R4B validation by shape (cds.fhir.r4b): emitted resources and the draft order are validated in full
once per shape, and an invalid resource is still caught after a valid one of nearly the same shape."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from cds.fhir import r4b
from cds.fhir.orders import plex_orders
from cds.hooks import cards
from cds.settings import Settings


@pytest.fixture(autouse=True)
def _fresh() -> Any:
    r4b.clear()
    yield
    r4b.clear()


def _level_request(pid: str = "p1", at: str = "2024-05-16T12:00:00Z") -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "order",
        "code": {"text": "Natalizumab level"},
        "subject": {"reference": f"Patient/{pid}"},
        "occurrenceDateTime": at,
    }


def _count_full(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Count full R4B validations done by validate_emitted."""
    from fhir.resources.R4B import get_fhir_model_class

    calls: list[str] = []
    cls = get_fhir_model_class("ServiceRequest")
    validate = cls.model_validate

    def counting(resource: dict[str, Any]) -> Any:
        calls.append(resource["resourceType"])
        return validate(resource)

    monkeypatch.setattr(cls, "model_validate", counting)
    return calls


def test_same_shape_is_validated_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_full(monkeypatch)
    cards.validate_emitted(_level_request("p1", "2024-05-16T12:00:00Z"))
    cards.validate_emitted(_level_request("p-2.x", "2025-01-02T03:04:05.123456+01:00"))
    assert calls == ["ServiceRequest"]


@pytest.mark.parametrize(
    "change",
    [
        {"status": "not  a code"},  # a non-masked value (two spaces: not a FHIR code)
        {"bogus": 1},  # an element R4B does not know
        {"occurrenceDateTime": "2024-02-30T12:00:00Z"},  # masked element, impossible date
        {"occurrenceDateTime": "2024-05-16T12:00:00"},  # date-time without a time zone
        {"occurrenceDateTime": ["2024-05-16T12:00:00Z"]},  # wrong JSON type
        {"id": "has space"},  # id outside the FHIR pattern
        {"subject": {"reference": "Patient/p1", "display": ["x"]}},  # subject not masked: R4B decides
        {"intent": None},
    ],
)
def test_invalid_emitted_resource_is_still_caught(
    change: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_full(monkeypatch)
    cards.validate_emitted(_level_request())  # this shape is now known valid
    bad = {**_level_request(), **change}
    with pytest.raises(ValueError):
        cards.validate_emitted(bad)
    with pytest.raises(ValueError):  # failures are never remembered
        cards.validate_emitted(bad)
    assert len(calls) == 3


def test_shape_key_masks_only_checked_values() -> None:
    a = r4b.shape_key(_level_request("p1", "2024-05-16T12:00:00Z"))
    b = r4b.shape_key(_level_request("p9", "2030-12-31T23:59:59Z"))
    assert a is not None and a == b
    assert r4b.shape_key({**_level_request(), "status": "active"}) != a
    assert r4b.shape_key({**_level_request(), "occurrenceDateTime": "2024-05-16"}) is None
    assert r4b.shape_key({**_level_request(), "subject": {"reference": "Patient/a b"}}) is None
    assert r4b.shape_key({**_level_request(), "x": float("nan")}) is None
    assert r4b.shape_key({**_level_request(), "x": 1}) != r4b.shape_key({**_level_request(), "x": 1.0})
    assert r4b.shape_key({**_level_request(), "x": True}) != r4b.shape_key({**_level_request(), "x": 1})


def test_cache_is_bounded() -> None:
    for i in range(r4b.MAX_SHAPES + 10):
        r4b.remember(f"k{i}")
    assert len(r4b._valid) == r4b.MAX_SHAPES
    assert not r4b.is_known_valid("k0") and r4b.is_known_valid(f"k{r4b.MAX_SHAPES + 9}")


def _draft(resource: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": resource}]}


def test_draft_order_r4b_checked_once_per_shape_and_invalid_still_skipped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = r4b.r4b_valid
    calls: list[Any] = []

    def counting(resource: dict[str, Any]) -> bool:
        calls.append(resource.get("id"))
        return real(resource)

    monkeypatch.setattr(r4b, "r4b_valid", counting)
    order = {
        "resourceType": "ServiceRequest",
        "id": "sr1",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": "Patient/pat-1"},
        "code": {"text": "Plasma exchange"},
        "authoredOn": "2024-05-01T08:00:00Z",
    }
    s = Settings()
    assert len(plex_orders(_draft(order), None, s)) == 1
    assert (
        len(plex_orders(_draft({**order, "id": "sr2", "authoredOn": "2024-06-01T08:00:00+02:00"}), None, s))
        == 1
    )
    assert calls == ["sr1"]
    for bad in ({**order, "authoredOn": "2024-02-30T08:00:00Z"}, {**order, "bogus": 1}):
        assert plex_orders(_draft(copy.deepcopy(bad)), None, s) == []
    assert len(calls) == 3
