"""CdsResponse.to_json walks the models once (json_ready); it must equal the dump + prune it replaced."""

from __future__ import annotations

import enum
import math
import random
import uuid
from datetime import UTC, date, datetime
from typing import Any

import pytest

from cds.hooks.models import (
    Action,
    Card,
    CdsResponse,
    Coding,
    Link,
    Source,
    Suggestion,
    json_ready,
    prune,
)


class Colour(enum.Enum):
    RED = "red"


def _reference(model: Any) -> Any:
    out = prune(model.model_dump(mode="json", exclude_none=True))
    if isinstance(model, CdsResponse):
        out["cards"] = out.get("cards", [])
    return out


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["str", "empty", "int", "float", "bool", "none", "nan", "dt", "tuple", "list", "dict"]
    kind = rng.choice(kinds if depth < 4 else kinds[:9])
    if kind == "str":
        return rng.choice(["a", "µg/mL", " ", "x\ny", '"q"'])
    if kind == "empty":
        return rng.choice(["", [], {}, ()])
    if kind == "int":
        return rng.choice([0, 1, -7, 10**20])
    if kind == "float":
        return rng.choice([0.0, -0.5, 1e-9, 2.5e300])
    if kind == "bool":
        return rng.choice([True, False])
    if kind == "none":
        return None
    if kind == "nan":
        return rng.choice([math.nan, math.inf, -math.inf])
    if kind == "dt":
        return rng.choice(
            [datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC), date(2025, 1, 2), uuid.UUID(int=5), Colour.RED]
        )
    if kind == "tuple":
        return tuple(_random_value(rng, depth + 1) for _ in range(rng.randint(0, 3)))
    if kind == "list":
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys: list[Any] = ["k", "v", "", "pml-plex", 3] if rng.random() < 0.1 else ["k", "v", "", "pml-plex"]
    return {rng.choice(keys): _random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def _card(rng: random.Random) -> Card:
    suggestions = [
        Suggestion(
            label="Order a level",
            isRecommended=rng.choice([True, None]),
            actions=[
                Action(
                    type="create",
                    description="Draft",
                    resource={"resourceType": "ServiceRequest", "x": _random_value(rng)},
                ),
                Action(type="delete", description="Remove", resourceId="ServiceRequest/1"),
            ],
        )
    ]
    return Card(
        summary="Natalizumab 1.9 µg/mL",
        detail=rng.choice([None, "", "**detail**"]),
        indicator=rng.choice(["info", "warning", "critical"]),
        source=Source(
            label="pml-plex", url=rng.choice([None, "", "https://x"]), topic=Coding(code="c", system="s")
        ),
        suggestions=suggestions if rng.random() < 0.5 else None,
        selectionBehavior="at-most-one",
        overrideReasons=[Coding(code="c", system="s", display="d")] if rng.random() < 0.5 else [],
        links=[Link(label="chart", url="https://x/c.svg", type="absolute")],
        extension={"pml-plex": _random_value(rng)},
    )


@pytest.mark.parametrize("seed", range(200))
def test_json_ready_equals_dump_and_prune(seed: int) -> None:
    rng = random.Random(seed)
    response = CdsResponse(cards=[_card(rng) for _ in range(rng.randint(0, 3))])
    assert response.to_json() == _reference(response)
    for card in response.cards:
        assert card.to_json() == _reference(card)
        assert json_ready(card) == prune(card.model_dump(mode="json", exclude_none=True))


def test_empty_response_keeps_cards() -> None:
    assert CdsResponse().to_json() == {"cards": []}


def test_key_order_follows_field_declaration() -> None:
    card = Card(summary="s", indicator="info", source=Source(label="l"), extension={"b": 1, "a": 2})
    assert list(card.to_json()) == list(_reference(card))
    assert list(card.to_json()["extension"]) == ["b", "a"]
