"""cds.log.redact skips its substitutions when the one combined search finds nothing: same result."""

from __future__ import annotations

import pytest

from cds import log

SAMPLES = [
    "plain hook line",
    "Authorization: bearer abc.DEF-123",
    "token eyJhbGciOiJFUzM4NCJ9.eyJpc3MiOiJ4In0.c2ln",
    "ACCESS_TOKEN = 'abc'",
    '{"client_secret": "s3cr3t"}',
    "postgresql://cds:pw@db:5432/cds and REDIS://u:p@r:6379",
    "password=",  # no value: nothing to redact
    "eyJ.short.x",
]


def _full(text: str) -> str:
    p = log._SECRET_PATTERNS
    text = p[0].sub("Bearer [redacted]", text)
    text = p[1].sub("[redacted]", text)
    text = p[2].sub(lambda m: f"{m.group(1)}{m.group(2)}[redacted]", text)
    return p[3].sub(lambda m: f"{m.group(1)}://{m.group(2)}:[redacted]@", text)


@pytest.mark.parametrize("text", SAMPLES)
def test_precheck_changes_nothing(text: str) -> None:
    assert log.redact(text) == _full(text)
    if any(p.search(text) for p in log._SECRET_PATTERNS):
        assert log._ANY_SECRET.search(text)
