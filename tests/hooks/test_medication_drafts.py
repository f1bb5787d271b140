"""The DMT card's draft orders: valid R4B MedicationRequests for the patient, each with its label regimen."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fhir.resources.R4B.medicationrequest import MedicationRequest

from cds.fhir import r4b
from cds.hooks.cards.suggestions import REGIMENS, medication_request, validate_emitted

NOW = datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC)


@pytest.mark.parametrize("patient", ["p1", "abc-123.x", "A" * 64])
@pytest.mark.parametrize("ingredient", [*REGIMENS, "dimethyl fumarate"])
def test_a_draft_is_a_valid_proposal_for_the_patient(patient: str, ingredient: str) -> None:
    r4b.clear()
    for _ in range(2):  # a shape not yet seen, then one already validated
        draft = medication_request(patient, ingredient, NOW)
        parsed = MedicationRequest.model_validate(draft)
        assert parsed.status == "draft" and parsed.intent == "proposal"
        assert draft["subject"] == {"reference": f"Patient/{patient}"}
        assert draft["authoredOn"] == "2025-03-14T09:26:53Z"
        assert draft["medicationCodeableConcept"]["text"] == ingredient


def test_a_draft_states_the_label_regimen() -> None:
    for ingredient, regimen in REGIMENS.items():
        assert medication_request("p1", ingredient, NOW)["dosageInstruction"] == [{"text": regimen}]
    assert "dosageInstruction" not in medication_request("p1", "dimethyl fumarate", NOW)


def test_an_invalid_draft_is_refused_after_a_valid_one_of_its_shape() -> None:
    r4b.clear()
    draft = medication_request("p1", "glatiramer acetate", NOW)  # this shape is now known valid
    with pytest.raises(ValueError):
        validate_emitted({**draft, "authoredOn": "not-a-date"})
