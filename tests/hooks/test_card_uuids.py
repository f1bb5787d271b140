"""cards._uuids writes the random bytes exactly as models.new_uuid does (version-4 UUIDs)."""

from __future__ import annotations

import random
import uuid
from typing import Any

from cds.hooks import cards, models


def test_uuids_equal_new_uuid_on_the_same_bytes(monkeypatch: Any) -> None:
    rnd = random.Random(20261128)
    for n in (1, 2, 8):
        for _ in range(300):
            data = rnd.randbytes(16 * n)
            monkeypatch.setattr(models.os, "urandom", lambda k, data=data: data[:k])
            batch = cards._uuids(n)
            chunks = iter([data[i : i + 16] for i in range(0, 16 * n, 16)])
            monkeypatch.setattr(models.os, "urandom", lambda k, chunks=chunks: next(chunks))
            assert batch == [models.new_uuid() for _ in range(n)]


def test_uuids_are_random_version_4() -> None:
    ids = cards._uuids(64)
    assert len(set(ids)) == 64
    for s in ids:
        u = uuid.UUID(s)
        assert str(u) == s and u.version == 4 and u.variant == uuid.RFC_4122
