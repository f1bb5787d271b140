"""Unit conversions (clinical-reference §3: µg/mL = mg/L = 1000 ng/mL; 10³/µL = 10⁹/L)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cds.engine.units import (
    COUNT_FACTORS,
    MASS_CONCENTRATION_FACTORS,
    from_10e9_per_l,
    from_ug_per_ml,
    to_10e9_per_l,
    to_ug_per_ml,
)


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (25.0, "ug/mL", 25.0),
        (25.0, "µg/mL", 25.0),  # micro sign
        (25.0, "μg/mL", 25.0),  # Greek mu
        (25.0, "mcg/mL", 25.0),
        (25.0, "mg/L", 25.0),  # 1 mg/L = 1 µg/mL
        (25000.0, "ng/mL", 25.0),  # 1 µg/mL = 1000 ng/mL
        (25000.0, "ug/L", 25.0),
        (0.025, "mg/mL", 25.0),
        (0.025, "g/L", 25.0),
    ],
)
def test_mass_concentration_to_ug_per_ml(value: float, unit: str, expected: float) -> None:
    assert to_ug_per_ml(value, unit) == pytest.approx(expected)


@pytest.mark.parametrize("unit", ["IU/mL", "%", "", "mmol/L", "ug"])
def test_unknown_mass_unit_gives_none(unit: str) -> None:
    assert to_ug_per_ml(10.0, unit) is None


def test_non_finite_value_gives_none() -> None:
    assert to_ug_per_ml(math.nan, "ug/mL") is None
    assert to_10e9_per_l(math.inf, "10*9/L") is None


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (1.2, "10*9/L", 1.2),
        (1.2, "10*3/uL", 1.2),  # 10³/µL = 10⁹/L
        (1.2, "10^3/µL", 1.2),
        (1.2, "x10E3/uL", 1.2),
        (1.2, "K/uL", 1.2),
        (1200.0, "/uL", 1.2),
        (1200.0, "cells/uL", 1.2),
        (1200.0, "10*6/L", 1.2),
    ],
)
def test_counts_to_10e9_per_l(value: float, unit: str, expected: float) -> None:
    assert to_10e9_per_l(value, unit) == pytest.approx(expected)


def test_percent_is_not_a_count() -> None:
    # codes.md §3: 26474-7 is sometimes sent with '%': never treat it as a count.
    assert to_10e9_per_l(25.0, "%") is None


finite = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False)


@given(finite, st.sampled_from(sorted(MASS_CONCENTRATION_FACTORS)))
def test_mass_round_trip(value: float, unit: str) -> None:
    ug = to_ug_per_ml(value, unit)
    assert ug is not None
    assert from_ug_per_ml(ug, unit) == pytest.approx(value, rel=1e-12)


@given(finite, st.sampled_from(sorted(COUNT_FACTORS)))
def test_count_round_trip(value: float, unit: str) -> None:
    c = to_10e9_per_l(value, unit)
    assert c is not None
    assert from_10e9_per_l(c, unit) == pytest.approx(value, rel=1e-12)


@given(finite)
def test_ng_and_ug_agree(value: float) -> None:
    assert to_ug_per_ml(value * 1000, "ng/mL") == pytest.approx(to_ug_per_ml(value, "ug/mL"), rel=1e-12)
