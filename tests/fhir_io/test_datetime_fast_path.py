"""cds.fhir.elements.read_datetime (the reader's date parse of validated dateTime values) equals terms.parse_fhir_datetime
on every value the slim DateTime type accepts: same result, or the same error for impossible dates."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from cds.fhir.elements import read_datetime
from cds.fhir.shapes import DateTime
from cds.fhir.terms import parse_fhir_datetime

_VALIDATED: TypeAdapter[str] = TypeAdapter(DateTime, config={"strict": True})

_d2 = st.integers(0, 99).map(lambda n: f"{n:02d}")
_DATETIMES = st.builds(
    lambda y, mo, d, h, mi, s, frac, tz: f"{y:04d}-{mo}-{d}T{h}:{mi}:{s}{frac}{tz}",
    st.integers(0, 9999),
    _d2,
    _d2,
    _d2,
    _d2,
    _d2,
    st.sampled_from(["", ".5", ".123", ".000001"]),
    st.sampled_from(["Z", "+00:00", "-05:00", "+14:00", ""]),
)
_PARTIAL = st.one_of(
    st.integers(0, 9999).map(lambda y: f"{y:04d}"),
    st.builds(lambda y, m: f"{y:04d}-{m}", st.integers(0, 9999), _d2),
    st.builds(lambda y, m, d: f"{y:04d}-{m}-{d}", st.integers(0, 9999), _d2, _d2),
    st.builds(lambda y, m, d, h, mi: f"{y:04d}-{m}-{d}T{h}:{mi}Z", st.integers(0, 9999), _d2, _d2, _d2, _d2),
)


def _outcome(fn: Any, text: str) -> Any:
    try:
        return fn(text)
    except (
        ValueError,
        OverflowError,
    ) as exc:  # OverflowError: year 1 with a +hh:mm offset is before UTC year 1
        return ("error", type(exc))


def _check(text: str) -> None:
    try:
        _VALIDATED.validate_python(text)
    except ValidationError:
        return  # the reader never sees it
    assert _outcome(read_datetime, text) == _outcome(parse_fhir_datetime, text), text


@settings(max_examples=3000, deadline=None)
@given(st.one_of(_DATETIMES, _PARTIAL, st.text(alphabet="0123456789-T:.Z+٣ ", max_size=24)))
def test_same_as_parse_fhir_datetime(text: str) -> None:
    _check(text)


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-27T09:50:25Z",
        "2024-02-30T10:00:00Z",
        "2024-02-29T24:00:00Z",
        "٢٠٢٤-01-01T10:00:00Z",
        "2024-01-01T10:00Z",
    ],
)
def test_examples(text: str) -> None:
    _check(text)
