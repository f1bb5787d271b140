"""cds.fhir.r4b's speed-ups keep its answers: remembered date-times and the prebuilt encoder."""

from __future__ import annotations

import json

from cds.fhir import r4b

GOOD = ("2024-05-16T12:00:00Z", "2025-01-02T03:04:05.123456+01:00", "2024-02-29T23:59:59-14:00")
BAD = ("2024-02-30T12:00:00Z", "2024-05-16T12:00:00", "2024-05-16", "2024-05-16T24:00:00Z", 20240516, None)


def test_datetime_check_is_the_same_when_remembered() -> None:
    r4b.clear()
    for _ in range(2):
        assert all(r4b._datetime_ok(v) for v in GOOD)
        assert not any(r4b._datetime_ok(v) for v in BAD)
    assert set(r4b._ok_datetimes) == set(GOOD)
    r4b.clear()
    assert not r4b._ok_datetimes


def test_remembered_datetimes_are_bounded() -> None:
    r4b.clear()
    for i in range(r4b.MAX_SHAPES + 5):
        assert r4b._datetime_ok(f"2024-05-16T12:00:00.{i:06d}Z")
    assert 0 < len(r4b._ok_datetimes) <= r4b.MAX_SHAPES


def test_key_is_the_canonical_json_dump() -> None:
    resource = {"resourceType": "Basic", "code": {"text": "µ <x> & é"}, "b": [1, 2.5, True, None], "a": {}}
    assert r4b.shape_key(resource) == json.dumps(
        resource, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    assert r4b.shape_key({**resource, "x": float("nan")}) is None
    assert r4b.shape_key({**resource, "x": {1, 2}}) is None
