"""json_ready reads a model's __dict__ as it is only when it holds the fields in declaration order;
a model whose __dict__ is in another order still comes out in declaration order."""

from __future__ import annotations

from pydantic_core import to_json

from cds.hooks.models import Card, Coding, Source, json_ready, prune


def _card() -> Card:
    return Card(
        summary="s",
        indicator="info",
        source=Source(label="l", topic=Coding(code="c", system="x", display="")),
        detail="d",
        overrideReasons=[Coding(code="r", system="x", display="R")],
        extension={"k": {"a": [], "b": None, "c": 1.5}},
    )


def test_declaration_order_dict() -> None:
    card = _card()
    want = prune(card.model_dump(mode="json", exclude_none=True))
    assert to_json(json_ready(card)) == to_json(want)


def test_reordered_dict_still_in_declaration_order() -> None:
    card = _card()
    want = to_json(json_ready(card))
    reordered = dict(reversed(list(card.__dict__.items())))
    card.__dict__.clear()
    card.__dict__.update(reordered)
    assert list(card.__dict__) != list(Card.model_fields)
    assert to_json(json_ready(card)) == want
    assert list(json_ready(card)) == [k for k in Card.model_fields if k in json_ready(card)]
