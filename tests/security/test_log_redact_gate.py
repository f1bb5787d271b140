"""cds.log.redact's literal gate (no "bearer"/"token"/"secret"/"password"/"eyJ"/"://" in ASCII text:
nothing to redact) gives exactly what the four substitutions give, on text built from the patterns'
own pieces in every letter case, and on non-ASCII text (which always takes the regex path)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cds import log

_PIECES = [
    "Bearer ",
    "bearer\t",
    "BEARER  ",
    "eyJ",
    "eyj",
    "EYJ",
    "abcd.",
    "efgh.",
    ".x",
    "access_token",
    "refresh_token",
    "id_token",
    "client_secret",
    "password",
    "pass",
    "word",
    "tok",
    "en",
    "=",
    ": ",
    "'",
    '"',
    "postgres",
    "postgresql",
    "redis",
    "rediss",
    "://",
    "u:pw@",
    "host/db",
    " ",
    ",",
    "&",
    "}",
    "hook pml-plex-select",
    "ſ",  # long s: folds to "s" under IGNORECASE
    "ı",  # dotless i
    "K",  # Kelvin sign: folds to "k"
    "é",
]


def _full(text: str) -> str:
    p = log._SECRET_PATTERNS
    text = p[0].sub("Bearer [redacted]", text)
    text = p[1].sub("[redacted]", text)
    text = p[2].sub(lambda m: f"{m.group(1)}{m.group(2)}[redacted]", text)
    return p[3].sub(lambda m: f"{m.group(1)}://{m.group(2)}:[redacted]@", text)


def _cased(piece: str, how: int) -> str:
    return (piece, piece.upper(), piece.lower(), piece.swapcase())[how]


@settings(max_examples=600, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_PIECES), st.integers(0, 3)), max_size=12))
def test_gate_matches_the_substitutions(parts: list[tuple[str, int]]) -> None:
    text = "".join(_cased(p, how) for p, how in parts)
    assert log.redact(text) == _full(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_gate_on_any_text(text: str) -> None:
    assert log.redact(text) == _full(text)


def test_gate_examples() -> None:
    for text in ("paſſword=hunter2", "client_ſecret: x", "Authorization: BEARER abc", "ACCESS_TOKEN=abc"):
        assert log.redact(text) == _full(text)
    assert log.redact("paſſword=hunter2") == "paſſword=[redacted]"
    assert log.redact("hook pml-plex-select abc outcome=cards") == "hook pml-plex-select abc outcome=cards"


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


@pytest.mark.parametrize("text", SAMPLES)
def test_precheck_changes_nothing(text: str) -> None:
    assert log.redact(text) == _full(text)
    if any(p.search(text) for p in log._SECRET_PATTERNS):
        assert log._ANY_SECRET.search(text)
