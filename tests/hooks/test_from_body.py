"""HookRequest.from_body parses with orjson then validates in Python mode; it must accept, refuse and
describe every body exactly as model_validate_json does (integers beyond 64 bits aside: see the last test)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cds.hooks.models import HookRequest
from tests.support.json_values import json_values

H = "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea"  # CDS Hooks 2.0: hookInstance is a UUID
BASE: dict[str, Any] = {"hook": "order-select", "hookInstance": H, "context": {"patientId": "p"}}

RAW = [
    b'{"hook":"a","hookInstance":"d1577c69-dfbe-44ad-ba6d-3e05e953b2ea","context":{"patientId":"p"},"prefetch":{"a":NaN,"b":Infinity}}',
    b'{"hook":"a","hookInstance":"d1577c69-dfbe-44ad-ba6d-3e05e953b2ea","context":{"patientId":"p"},"prefetch":{"a":1e400,"b":123456789012345678901234567890,"c":-0,"d":1.0,"e":-0.0}}',
    b'{"hook":"a","hookInstance":"d1577c69-dfbe-44ad-ba6d-3e05e953b2ea","hook":"c","context":{"patientId":"p"}}',
    b'{"hook":"a","hookInstance":"d1577c69-dfbe-44ad-ba6d-3e05e953b2ea","context":{"patientId":"p"},"prefetch":{"a":"\\ud800"}}',
    b'\xef\xbb\xbf{"hook":"a","hookInstance":"d1577c69-dfbe-44ad-ba6d-3e05e953b2ea","context":{"patientId":"p"}}',
    b' {"hook":"a","hookInstance":"d1577c69-dfbe-44ad-ba6d-3e05e953b2ea","context":{"patientId":"p"}} \n',
    b'{"hook":"a","hookInstance":"d1577c69-dfbe-44ad-ba6d-3e05e953b2ea","context":{"patientId":"p"}} x',
    b'{"hook":"a","hookInstance":"d1577c69-dfbe-44ad-ba6d-3e05e953b2ea","context":{"patientId":"p"}}{}',
    b"[]",
    b"null",
    b"",
    b'"x"',
    b"{not json",
    b'{"hook":"a\\u0000","hookInstance":"d1577c69-dfbe-44ad-ba6d-3e05e953b2ea","context":{"patientId":"p"}}',
    '{"hook":"é","hookInstance":"d1577c69-dfbe-44ad-ba6d-3e05e953b2ea","context":{"patientId":"p"}}'.encode(
        "latin-1"
    ),
    b'{"a":' * 300 + b"1" + b"}" * 300,
]
FIELDS: dict[str, list[Any]] = {
    "hook": [1, True, None, "", [], 1.5],
    "hookInstance": [1, None, "", "x", "b\u0000", H.upper(), H + "\n", "{" + H + "}"],
    "fhirServer": [1, None, True, "x"],
    "fhirAuthorization": [
        None,
        {},
        {"access_token": 1},
        {"access_token": "t", "expires_in": "300"},
        {"access_token": "t", "expires_in": True},
        {"access_token": "t", "expires_in": 1.5},
        {"access_token": "t", "expires_in": 300.0},
        {"access_token": "t", "expires_in": "3e2"},
        {"access_token": "t", "scope": 5, "extra": [1]},
        "x",
        [1],
    ],
    "context": [
        None,
        {},
        {"patientId": 1},
        {"patientId": "p", "selections": "a"},
        {"patientId": "p", "selections": [1]},
        {"patientId": "p", "selections": None},
        {"patientId": "p", "userId": 5},
        {"patientId": "p", "encounterId": False},
        {"patientId": "p", "draftOrders": {"resourceType": "Bundle", "entry": [None]}},
        [],
        "x",
    ],
    "prefetch": [None, 1, "x", [], {"a": None}, {"a": [1, {"b": None}]}],
    "extra": [{"x": 1}, None],
}
BODIES = RAW + [json.dumps({**BASE, field: v}).encode() for field, vs in FIELDS.items() for v in vs]


def _outcome(fn: Any) -> Any:
    try:
        m = fn()
    except ValidationError as exc:
        return ("error", exc.errors(include_url=False))
    return ("ok", m.model_dump(), m.model_extra, m.context.model_extra)


@pytest.mark.parametrize("raw", BODIES)
def test_from_body_equals_model_validate_json(raw: bytes) -> None:
    want = _outcome(lambda: HookRequest.model_validate_json(raw))
    got = _outcome(lambda: HookRequest.from_body(raw))
    assert repr(got) == repr(want)


def test_from_body_of_a_demo_request() -> None:
    from datetime import UTC, datetime

    from cds import demo

    for name in demo.scenarios():
        body = json.dumps(
            demo.hook_request(demo.patient(name, datetime(2025, 1, 1, tzinfo=UTC)), "order-select")
        )
        assert HookRequest.from_body(body.encode()) == HookRequest.model_validate_json(body)


_JSON = json_values()  # integers inside the 64-bit range: beyond it see the last test


@settings(max_examples=300, deadline=None)
@given(prefetch=_JSON, context_extra=_JSON, ascii_only=st.booleans())
def test_from_body_equals_model_validate_json_on_generated_json(
    prefetch: Any, context_extra: Any, ascii_only: bool
) -> None:
    body = {**BASE, "prefetch": prefetch, "context": {"patientId": "p", "x": context_extra}}
    raw = json.dumps(body, ensure_ascii=ascii_only).encode()
    want = _outcome(lambda: HookRequest.model_validate_json(raw))
    assert repr(_outcome(lambda: HookRequest.from_body(raw))) == repr(want)


def test_integers_beyond_64_bits_are_read_as_floats_and_refused_where_an_integer_is_required() -> None:
    """The one known difference from model_validate_json (orjson's reading; see from_body)."""
    from cds.fhir.facts import parse_resources
    from cds.settings import Settings
    from tests.fhir_io.fixtures import NOW, NTZ_LEVEL_CODE, PATIENT, iso, observation, qty

    big = 10**20 + 1
    level = observation("big-q", NTZ_LEVEL_CODE, iso(NOW), valueQuantity=qty(big, "ng/mL"))
    counted = observation("big-i", NTZ_LEVEL_CODE, iso(NOW), valueInteger=big)
    raw = json.dumps({**BASE, "prefetch": {"labs": [level, counted]}}).encode()
    exact = HookRequest.model_validate_json(raw).prefetch
    fast = HookRequest.from_body(raw).prefetch
    assert exact is not None and fast is not None
    assert exact["labs"][1]["valueInteger"] == big
    assert fast["labs"][1]["valueInteger"] == float(big)
    # a decimal reads the same number either way
    assert float(exact["labs"][0]["valueQuantity"]["value"]) == fast["labs"][0]["valueQuantity"]["value"]

    def read(resources: list[Any]) -> Any:
        return parse_resources(resources, Settings(), patient_id=PATIENT, now=NOW)

    assert read(fast["labs"][:1]) == read(exact["labs"][:1])  # named as an implausible value both ways
    assert read(exact["labs"][1:]).skipped == 0
    assert read(fast["labs"][1:]).skipped == 1  # not an integer any more: counted and named as malformed
