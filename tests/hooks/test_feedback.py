"""POST /cds-services/{id}/feedback over real HTTP: validation (400 OperationOutcome), storage, idempotency."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

FEEDBACK = "/cds-services/pml-plex-select/feedback"


def rows(state_dir: Path, card: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(state_dir / "cds.sqlite3") as db:
        return db.execute(
            "SELECT service_id, outcome, outcome_timestamp, accepted_suggestions, override_reason"
            " FROM feedback WHERE card = ?",
            (card,),
        ).fetchall()


def item(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "card": str(uuid.uuid4()),
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": str(uuid.uuid4())}],
        "outcomeTimestamp": "2024-05-01T10:00:00Z",
    }
    base.update(over)
    return base


def test_accepted_and_overridden_are_stored(client: httpx.Client, state_dir: Path) -> None:
    accepted = item()
    overridden = item(
        outcome="overridden",
        acceptedSuggestions=None,
        overrideReason={
            "reason": {
                "code": "clinical-judgement",
                "system": "urn:pml-plex:override-reason",
                "display": "Clinical",
            },
            "userComment": "discussed with the team",
        },
    )
    del overridden["acceptedSuggestions"]
    r = client.post(FEEDBACK, json={"feedback": [accepted, overridden]})
    assert r.status_code == 200, r.text
    ((svc, outcome, ts, sugg, _),) = rows(state_dir, accepted["card"])
    assert (svc, outcome, ts) == ("pml-plex-select", "accepted", "2024-05-01T10:00:00Z")
    assert accepted["acceptedSuggestions"][0]["id"] in sugg
    ((_, outcome, _, _, reason),) = rows(state_dir, overridden["card"])
    assert outcome == "overridden" and "clinical-judgement" in reason and "discussed" in reason


def test_idempotent_on_repeats(client: httpx.Client, state_dir: Path) -> None:
    fb = item()
    for _ in range(3):
        assert client.post(FEEDBACK, json={"feedback": [fb, fb]}).status_code == 200
    same_instant = dict(fb, outcomeTimestamp="2024-05-01T12:00:00+02:00")
    assert client.post(FEEDBACK, json={"feedback": [same_instant]}).status_code == 200
    assert len(rows(state_dir, fb["card"])) == 1
    later = dict(fb, outcomeTimestamp="2024-05-01T10:05:00Z")
    assert client.post(FEEDBACK, json={"feedback": [later]}).status_code == 200
    assert len(rows(state_dir, fb["card"])) == 2


def test_feedback_per_service(client: httpx.Client, state_dir: Path) -> None:
    fb = item()
    assert client.post("/cds-services/pml-plex-sign/feedback", json={"feedback": [fb]}).status_code == 200
    assert rows(state_dir, fb["card"])[0][0] == "pml-plex-sign"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({}, id="no-feedback"),
        pytest.param({"feedback": []}, id="empty-array"),
        pytest.param({"feedback": {"card": "x"}}, id="not-an-array"),
        pytest.param({"feedback": [item(card=None)]}, id="card-null"),
        pytest.param({"feedback": [{k: v for k, v in item().items() if k != "card"}]}, id="card-missing"),
        pytest.param({"feedback": [item(card="not-a-uuid")]}, id="card-not-uuid"),
        pytest.param({"feedback": [item(outcome="dismissed")]}, id="outcome-wrong"),
        pytest.param(
            {"feedback": [{k: v for k, v in item().items() if k != "outcome"}]}, id="outcome-missing"
        ),
        pytest.param(
            {"feedback": [{k: v for k, v in item().items() if k != "outcomeTimestamp"}]}, id="ts-missing"
        ),
        pytest.param({"feedback": [item(outcomeTimestamp="yesterday")]}, id="ts-garbage"),
        pytest.param({"feedback": [item(outcomeTimestamp="2024-05-01T10:00:00")]}, id="ts-no-zone"),
        pytest.param({"feedback": [item(outcomeTimestamp="2024-13-01T10:00:00Z")]}, id="ts-invalid-month"),
        pytest.param({"feedback": [item(acceptedSuggestions=[])]}, id="accepted-no-suggestions"),
        pytest.param({"feedback": [item(acceptedSuggestions=["plain-string"])]}, id="suggestions-strings"),
        pytest.param({"feedback": [item(), item(outcome="maybe")]}, id="one-bad-of-two"),
    ],
)
def test_invalid_feedback_400(client: httpx.Client, state_dir: Path, body: dict[str, Any]) -> None:
    r = client.post(FEEDBACK, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    for fb in body.get("feedback", []) if isinstance(body.get("feedback"), list) else []:
        if isinstance(fb.get("card"), str):
            assert not rows(state_dir, fb["card"])  # nothing of a rejected batch is stored


def test_malformed_json_400(client: httpx.Client) -> None:
    r = client.post(FEEDBACK, content=b"{nope", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"
