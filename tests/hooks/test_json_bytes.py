"""The hook response is written by orjson; it must be byte for byte what pydantic_core.to_json wrote."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from hypothesis import given, settings
from pydantic_core import to_json

from cds import demo
from tests.support.json_values import json_values

_READY = json_values(null=False, max_leaves=30)  # what CdsResponse.to_json hands the encoder


@settings(max_examples=500, deadline=None)
@given(value=_READY)
def test_orjson_writes_the_bytes_pydantic_core_wrote(value: Any) -> None:
    assert orjson.dumps(value) == to_json(value)


def test_same_bytes_for_every_demo_response(client: httpx.Client) -> None:
    now = datetime.now(UTC)
    for name in demo.scenarios():
        for hook, service in (("order-select", "pml-plex-select"), ("order-sign", "pml-plex-sign")):
            body = demo.hook_request(demo.patient(name, now), hook)
            r = client.post(f"/cds-services/{service}", json=body)
            assert r.status_code == 200, (name, hook, r.text[:200])
            cards = json.loads(r.content)
            assert r.content == to_json(cards), (name, hook)
