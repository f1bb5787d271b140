"""cds.r4b.parsed_json_key: the draft order's cheaper shape key masks exactly what shape_key masks
and tells apart every pair of JSON values that shape_key tells apart."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cds.fhir import r4b

ORDER: dict[str, Any] = {
    "resourceType": "ServiceRequest",
    "id": "sr-1",
    "status": "draft",
    "intent": "order",
    "code": {"text": "Plasma exchange"},
    "subject": {"reference": "Patient/p1"},
    "authoredOn": "2024-05-16T12:00:00Z",
}

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


def test_masks_like_shape_key() -> None:
    other = {
        **ORDER,
        "id": "sr-2",
        "subject": {"reference": "Patient/p2"},
        "authoredOn": "2025-01-02T03:04:05+01:00",
    }
    assert r4b.parsed_json_key(ORDER) == r4b.parsed_json_key(other)
    assert r4b.parsed_json_key({**ORDER, "status": "active"}) != r4b.parsed_json_key(ORDER)
    for bad in ({**ORDER, "id": "a b"}, {**ORDER, "authoredOn": "2024-02-30T08:00:00Z"}, [ORDER], {"a": 1}):
        assert r4b.parsed_json_key(bad) is None
        assert r4b.shape_key(bad) is None


def test_bytes_keys_never_meet_str_keys() -> None:
    r4b.clear()
    r4b.remember(r4b.shape_key(ORDER))
    assert not r4b.is_known_valid(r4b.parsed_json_key(ORDER))
    r4b.remember(r4b.parsed_json_key(ORDER))
    assert r4b.is_known_valid(r4b.parsed_json_key(ORDER))
    r4b.clear()


@settings(max_examples=400, deadline=None)
@given(a=_json, b=_json)
def test_one_to_one_on_json_values(a: Any, b: Any) -> None:
    ka = r4b.parsed_json_key({**ORDER, "x": a})
    kb = r4b.parsed_json_key({**ORDER, "x": b})
    assert ka is not None and kb is not None
    same = json.dumps(a, sort_keys=False) == json.dumps(b, sort_keys=False) and type(a) is type(b)
    if ka == kb:  # equal keys only for values JSON cannot tell apart
        assert json.loads(ka) == json.loads(kb) or same
        assert json.dumps(a) == json.dumps(b)
    if same:
        assert ka == kb


def test_parsed_from_json_round_trip() -> None:
    raw = json.dumps(ORDER)
    assert r4b.parsed_json_key(json.loads(raw)) == r4b.parsed_json_key(ORDER)
