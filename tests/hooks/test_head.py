"""cds.hooks.head: the head of a hook request (everything but the prefetch) accepts exactly the bodies
HookRequest.from_body accepts, with the same values, so the non-PLEX early exit answers and refuses
like the full parse (routes fall back to the full parse, and its error, when the head fails)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cds.hooks.head import HookHead, parse_head
from cds.hooks.models import HookRequest
from tests.hooks.test_from_body import BASE, BODIES

PREFETCHES = [
    b'{"a":NaN}',
    b'{"a":"\\ud800"}',
    b'{"a":01}',
    b'{"a":"\\q"}',
    b'{"a":1 "b":2}',
    b'{"a":"\xff"}',
    b'{"a":[1,]}',
    b"[1,2",
    b"5",
    b'"x"',
    b"true",
    b"null",
    b'{"a":' * 60 + b"1" + b"}" * 60,
]
MORE = [json.dumps(BASE).encode()[:-1] + b',"prefetch":' + p + b"}" for p in PREFETCHES] + [
    json.dumps(BASE).encode()[:-1] + b',"prefetch":5,"prefetch":{}}',
    json.dumps(BASE).encode()[:-1] + b',"prefetch":{},"hook":7}',
]


def _full(raw: bytes) -> HookRequest | None:
    try:
        return HookRequest.from_body(raw)
    except ValueError:
        return None


@pytest.mark.parametrize("raw", BODIES + MORE)
def test_head_accepts_what_the_full_parse_accepts(raw: bytes) -> None:
    head, full = parse_head(raw), _full(raw)
    assert (head is None) == (full is None)
    if head is not None and full is not None:
        assert head.model_dump() == full.model_dump(exclude={"prefetch", *(full.model_extra or {})})
        assert head.context.model_extra == full.context.model_extra
        assert head.fhirAuthorization == full.fhirAuthorization


def test_head_has_every_request_field_but_prefetch() -> None:
    full = {k: (f.annotation, f.default, f.metadata) for k, f in HookRequest.model_fields.items()}
    head = {k: (f.annotation, f.default, f.metadata) for k, f in HookHead.model_fields.items()}
    del full["prefetch"]
    assert repr(head) == repr(full)


def test_demo_requests() -> None:
    from datetime import UTC, datetime

    from cds import demo

    for name in demo.scenarios():
        body: dict[str, Any] = demo.hook_request(
            demo.patient(name, datetime(2025, 1, 1, tzinfo=UTC)), "order-select"
        )
        head = parse_head(json.dumps(body).encode())
        assert head is not None
        assert head.context.draftOrders == body["context"]["draftOrders"]
