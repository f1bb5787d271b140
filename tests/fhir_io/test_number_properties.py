"""Property tests of cds/fhir/values.py number and unit reading (issue 15 item 5)."""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from cds.fhir.values import Problem, mass_concentration, parse_number, split_value_string

UCUM = "http://unitsofmeasure.org"
# every decimal digit that is not ASCII 0-9 (Arabic-Indic, Devanagari, fullwidth, ...)
OTHER_DIGITS = [chr(c) for c in range(0x80, 0x10000) if unicodedata.category(chr(c)) == "Nd"]


@given(st.integers(min_value=1000, max_value=10**12))
def test_grouped_thousands_read_as_the_whole_number(n: int) -> None:
    assert parse_number(f"{n:,}") == n
    assert parse_number(f"{n:,}".replace(",", "\u202f")) == n


@given(st.integers(min_value=0, max_value=10**6), st.integers(min_value=1, max_value=99))
def test_a_decimal_comma_with_one_or_two_decimals_is_a_decimal(whole: int, frac: int) -> None:
    text = f"{whole},{frac}"
    assert parse_number(text) == float(f"{whole}.{frac}")


@given(st.integers(min_value=1000, max_value=10**9), st.integers(min_value=1, max_value=9))
def test_a_dot_grouping_with_a_decimal_comma_is_never_guessed(n: int, frac: int) -> None:
    text = f"{n:,}".replace(",", ".") + f",{frac}"  # "1.234,5"
    problem = parse_number(text)
    assert isinstance(problem, Problem) and problem.code == "number-format"


@given(st.text(alphabet="0123456789.,", min_size=1, max_size=12), st.sampled_from(OTHER_DIGITS))
def test_a_digit_of_another_script_is_never_read(text: str, digit: str) -> None:
    for value in (digit + text, text + digit, f"{text[:1]}{digit}{text[1:]} ug/mL"):
        out = split_value_string(value)
        assert isinstance(out, Problem) and out.code == "number-format", value


@given(
    st.floats(min_value=0.001, max_value=1000, allow_nan=False),
    st.sampled_from(["ug/mL", "mg/L", "ng/mL", "ug/L", "mg/mL", "g/L"]),
    st.sampled_from(["ug/mL", "mg/L", "ng/mL", "ug/L", "mg/mL", "g/L"]),
)
def test_unit_text_and_code_must_name_the_same_quantity(value: float, unit: str, code: str) -> None:
    out = mass_concentration(value, unit, code, UCUM)
    same = mass_concentration(1.0, unit, None, None) == mass_concentration(1.0, code, None, None)
    if same:
        assert isinstance(out, float)
    else:
        assert isinstance(out, Problem) and out.code == "unit-conflict"
