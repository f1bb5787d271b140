"""The DMT card's drafts are validated like validate_emitted, with stand-in shape keys per ingredient."""

from __future__ import annotations

from typing import Any

import pytest

from cds.fhir import r4b
from cds.hooks import cards

INGREDIENTS = ["glatiramer acetate", "interferon beta-1a", "peginterferon beta-1a", "dimethyl fumarate", "x"]


@pytest.mark.parametrize("patient", ["p1", "abc-123.x", "A" * 64])
@pytest.mark.parametrize("authored", ["2025-03-14T09:26:53Z", "2025-03-14T09:26:53.123456Z"])
def test_stand_in_keys_equal_the_real_keys(patient: str, authored: str) -> None:
    for ing in INGREDIENTS:
        real = r4b.shape_key(cards._medication_resource(patient, ing, authored))
        assert real is not None and cards._medication_shape_key(ing) == real


def test_drafts_equal_medication_requests() -> None:
    r4b.clear()
    for _ in range(2):  # cold and warm shape cache
        drafts = cards._medication_drafts("p1", INGREDIENTS[:4], "2025-03-14T09:26:53Z")
        assert drafts == [cards._medication_request("p1", i, "2025-03-14T09:26:53Z") for i in INGREDIENTS[:4]]


@pytest.mark.parametrize("patient", ["p1", "bad id!", ""])
def test_every_draft_is_validated_when_its_shape_is_not_known(patient: str, monkeypatch: Any) -> None:
    r4b.clear()
    full: list[str] = []
    real = cards._validate_keyed

    def spy(resource: dict[str, Any], key: str | None) -> dict[str, Any]:
        if not r4b.is_known_valid(key):
            full.append(resource["medicationCodeableConcept"]["text"])
        assert key == r4b.shape_key(resource)  # the key is always the resource's own
        return real(resource, key)

    monkeypatch.setattr(cards, "_validate_keyed", spy)
    cards._medication_drafts(patient, INGREDIENTS[:3], "2025-03-14T09:26:53Z")
    assert full == INGREDIENTS[:3]
    full.clear()
    cards._medication_drafts(patient, INGREDIENTS[:3], "2025-03-14T09:26:53Z")
    assert full == ([] if patient == "p1" else INGREDIENTS[:3])  # unmaskable: validated in full each time


def test_invalid_draft_is_refused(monkeypatch: Any) -> None:
    r4b.clear()
    cards._medication_drafts("p1", ["glatiramer acetate"], "2025-03-14T09:26:53Z")
    with pytest.raises(ValueError):
        cards._medication_drafts("p1", ["glatiramer acetate"], "not-a-date")
