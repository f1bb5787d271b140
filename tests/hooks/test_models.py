"""Wire models: tolerant input, strict output, spec invariants that raise."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from cds.hooks.models import (
    Action,
    Card,
    CdsResponse,
    Coding,
    FeedbackItem,
    FeedbackRequest,
    HookRequest,
    Link,
    Source,
    Suggestion,
    prune,
)

SRC = Source(label="PML-PLEX decision support")


def test_prune_drops_null_and_empty_everywhere() -> None:
    assert prune(
        {"a": None, "b": "", "c": [], "d": {}, "e": [None, "", {}, [], {"x": None}], "f": 0, "g": False}
    ) == {
        "f": 0,
        "g": False,
    }


def test_prune_refuses_nan_and_infinity() -> None:
    assert prune({"a": [1.5, {"b": 0.0}]}) == {"a": [1.5, {"b": 0.0}]}
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError):
            prune({"a": [{"b": bad}]})


def test_response_dumps_once_and_prunes_inside_cards() -> None:
    card = Card(summary="s", detail="", indicator="info", source=SRC, extension={"x": {}, "y": [None, 1]})
    out = CdsResponse(cards=[card]).to_json()
    assert out == {
        "cards": [
            {
                "uuid": card.uuid,
                "summary": "s",
                "indicator": "info",
                "source": {"label": SRC.label},
                "extension": {"y": [1]},
            }
        ]
    }


def test_empty_response_keeps_top_level_cards() -> None:
    assert CdsResponse().to_json() == {"cards": []}


def test_summary_over_139_raises() -> None:
    Card(summary="x" * 139, indicator="info", source=SRC)
    with pytest.raises(ValidationError):
        Card(summary="x" * 140, indicator="info", source=SRC)


def test_suggestions_need_selection_behavior() -> None:
    s = Suggestion(
        label="do", actions=[Action(type="create", description="d", resource={"resourceType": "X"})]
    )
    with pytest.raises(ValidationError):
        Card(summary="s", indicator="info", source=SRC, suggestions=[s])
    Card(summary="s", indicator="info", source=SRC, suggestions=[s], selectionBehavior="any")


def test_action_shapes() -> None:
    with pytest.raises(ValidationError):
        Action(type="create", description="d")
    with pytest.raises(ValidationError):
        Action(type="delete", description="d", resourceId="nope")
    with pytest.raises(ValidationError):
        Action(type="CREATE", description="d", resource={"resourceType": "X"})  # type: ignore[arg-type]
    Action(type="delete", description="d", resourceId="ServiceRequest/1")


def test_links_and_override_reasons() -> None:
    with pytest.raises(ValidationError):
        Link(label="l", url="https://x", type="absolute", appContext="ctx")
    Link(label="l", url="https://x", type="smart", appContext="ctx")
    with pytest.raises(ValidationError):
        Card(summary="s", indicator="info", source=SRC, overrideReasons=[Coding(code="c", system="urn:x")])


def test_outgoing_models_forbid_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        Card(summary="s", indicator="info", source=SRC, colour="red")  # type: ignore[call-arg]


def test_card_serialises_without_nulls() -> None:
    body = CdsResponse(cards=[Card(summary="s", indicator="info", source=SRC)]).to_json()
    card = body["cards"][0]
    assert set(card) == {"uuid", "summary", "indicator", "source"}


def test_card_json_keeps_declaration_order_and_the_extension_order() -> None:
    card = Card(summary="s", indicator="info", source=SRC, detail="d", extension={"b": 1, "a": 2})
    out = card.to_json()
    assert list(out) == ["uuid", "summary", "detail", "indicator", "source", "extension"]
    assert list(out["extension"]) == ["b", "a"]


def test_card_json_writes_datetimes_as_text_and_drops_nan_in_the_extension() -> None:
    when = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    card = Card(summary="s", indicator="info", source=SRC, extension={"at": when, "x": math.nan, "n": 1.5})
    assert card.to_json()["extension"] == {"at": "2025-01-02T03:04:05Z", "n": 1.5}


def test_cards_and_suggestions_get_fresh_random_uuids() -> None:
    a, b = Card(summary="s", indicator="info", source=SRC), Card(summary="s", indicator="info", source=SRC)
    assert a.uuid != b.uuid and uuid.UUID(a.uuid).version == 4
    assert uuid.UUID(Suggestion(label="l").uuid).version == 4


def _hook(**over: object) -> dict[str, object]:
    body: dict[str, object] = {
        "hook": "order-select",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {"userId": "Practitioner/1", "patientId": "p1", "draftOrders": {"resourceType": "Bundle"}},
    }
    body.update(over)
    return body


def test_hook_request_is_tolerant() -> None:
    body = _hook(
        fhirServer="https://ehr.example/fhir",
        fhirAuthorization={"access_token": "secret-token"},  # no token_type, expires_in, scope, subject
        somethingNew=1,
    )
    body["context"]["futureField"] = {"x": 1}  # type: ignore[index]
    req = HookRequest.model_validate_json(json.dumps(body))
    assert req.fhirAuthorization is not None
    assert req.fhirAuthorization.access_token.get_secret_value() == "secret-token"
    assert "secret-token" not in repr(req)


@pytest.mark.parametrize("missing", ["hook", "hookInstance", "context"])
def test_hook_request_required(missing: str) -> None:
    body = _hook()
    del body[missing]
    with pytest.raises(ValidationError):
        HookRequest.model_validate(body)


def test_patient_id_required() -> None:
    body = _hook(context={"userId": "Practitioner/1"})
    with pytest.raises(ValidationError):
        HookRequest.model_validate(body)


CARD = "0b6d1d2c-8c7e-4f7a-9d3e-2f2c8f1a9b10"


@pytest.mark.parametrize(
    "item",
    [
        {"outcome": "overridden", "outcomeTimestamp": "2024-05-01T10:00:00Z"},  # no card
        {"card": "not-a-uuid", "outcome": "overridden", "outcomeTimestamp": "2024-05-01T10:00:00Z"},
        {"card": CARD, "outcome": "ignored", "outcomeTimestamp": "2024-05-01T10:00:00Z"},
        {"card": CARD, "outcomeTimestamp": "2024-05-01T10:00:00Z"},
        {"card": CARD, "outcome": "overridden"},
        {"card": CARD, "outcome": "overridden", "outcomeTimestamp": "2024-05-01"},
        {"card": CARD, "outcome": "overridden", "outcomeTimestamp": "2024-05-01T10:00:00"},  # no zone
        {"card": CARD, "outcome": "overridden", "outcomeTimestamp": 1714557600},
        {"card": CARD, "outcome": "accepted", "outcomeTimestamp": "2024-05-01T10:00:00Z"},  # no suggestions
    ],
)
def test_feedback_item_invalid(item: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        FeedbackItem.model_validate(item)


def test_feedback_valid_and_normalised() -> None:
    req = FeedbackRequest.model_validate(
        {
            "feedback": [
                {
                    "card": CARD,
                    "outcome": "accepted",
                    "acceptedSuggestions": [{"id": "s1"}],
                    "outcomeTimestamp": "2024-05-01T12:00:00+02:00",
                }
            ]
        }
    )
    assert req.feedback[0].timestamp_utc() == "2024-05-01T10:00:00Z"
    with pytest.raises(ValidationError):
        FeedbackRequest.model_validate({"feedback": []})
