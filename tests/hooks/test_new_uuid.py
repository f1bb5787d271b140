"""new_uuid writes random RFC 4122 version-4 UUIDs exactly as str(uuid.uuid4()) would."""

from __future__ import annotations

import os
import uuid

import pytest

from cds.hooks import models
from cds.hooks.models import Card, Source, Suggestion, new_uuid


def test_new_uuid_is_a_canonical_random_v4_uuid() -> None:
    seen = set()
    for _ in range(2000):
        u = new_uuid()
        parsed = uuid.UUID(u)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == u  # lower-case, 8-4-4-4-12
        seen.add(u)
    assert len(seen) == 2000


@pytest.mark.parametrize("raw", [bytes(16), b"\xff" * 16, os.urandom(16), bytes(range(16))])
def test_new_uuid_sets_the_same_bits_as_uuid4(raw: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models.os, "urandom", lambda n: raw[:n])
    assert new_uuid() == str(uuid.UUID(bytes=raw, version=4))


def test_cards_and_suggestions_get_fresh_uuids() -> None:
    src = Source(label="x")
    a, b = Card(summary="s", indicator="info", source=src), Card(summary="s", indicator="info", source=src)
    assert a.uuid != b.uuid and uuid.UUID(a.uuid).version == 4
    assert uuid.UUID(Suggestion(label="l").uuid).version == 4
