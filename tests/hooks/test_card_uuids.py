"""A card and its suggestions take fresh random version-4 UUIDs."""

from __future__ import annotations

import uuid

from cds.hooks import cards


def test_uuids_are_random_version_4() -> None:
    ids = cards._uuids(64)
    assert len(set(ids)) == 64
    for s in ids:
        u = uuid.UUID(s)
        assert str(u) == s and u.version == 4 and u.variant == uuid.RFC_4122
