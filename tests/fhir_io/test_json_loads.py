"""cds.fhir_cache.json_loads reads FHIR server responses (and Redis cache entries) as json.loads does."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings

from cds.fhir_cache import json_loads, resident_estimate
from tests.support.json_values import json_values


@settings(max_examples=300, deadline=None)
@given(json_values(max_leaves=40))
def test_reads_what_json_loads_reads(value: Any) -> None:
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False, indent=1)):
        for raw in (text, text.encode(), bytearray(text.encode())):
            assert json_loads(raw) == json.loads(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"valueDecimal": NaN}',  # orjson refuses these four; json.loads reads them
        b'{"valueDecimal": -Infinity}',
        b'{"text": "\\ud800"}',
        b'\xef\xbb\xbf{"resourceType": "Bundle"}',
        '{"resourceType": "Bundle"}'.encode("utf-16"),
    ],
)
def test_what_orjson_refuses_is_read_by_json(raw: bytes) -> None:
    got, want = json_loads(raw), json.loads(raw)
    assert json.dumps(got) == json.dumps(want)  # NaN != NaN: compare the text
    if b"NaN" in raw:
        assert math.isnan(got["valueDecimal"])


@pytest.mark.parametrize("raw", [b"", b"[1,", b'{"a": 1} trailing', b"{'a': 1}", b"\xff\xfe\xfa"])
def test_invalid_json_is_refused_like_json_loads(raw: bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(raw)
    with pytest.raises(ValueError):
        json_loads(raw)


def test_resident_estimate_of_what_orjson_cannot_write() -> None:
    plain = [{"resourceType": "Observation", "id": "a", "valueQuantity": {"value": 1.5}}]
    assert resident_estimate(plain) == len(json.dumps(plain, separators=(",", ":"))) * 5
    for odd in ([{"n": 2**70}], [{"text": "\ud800"}], [{1: "non-str key"}]):
        assert resident_estimate(odd) == len(json.dumps(odd, separators=(",", ":"), default=str)) * 5
