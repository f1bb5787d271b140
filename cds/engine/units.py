"""Explicit unit conversions for the two quantities the engine reads (no unit library, no guessing).

* Serum natalizumab is a mass concentration; the engine works in µg/mL (= mg/L = 1000 ng/mL,
  clinical-reference.md §3 "Units"). UCUM codes: `ug/mL`, `mg/L`, `ng/mL`, `ug/L`, `mg/mL`, `g/L`.
* Absolute lymphocyte counts are number concentrations; the engine works in 10⁹/L (= 10³/µL).
  UCUM codes: `10*9/L`, `10*3/uL`, `/uL`, `10*6/L`; a percentage (LOINC 26478-8, or 26474-7 sent
  with `%`, codes.md §3 caution) is *not* a count and converts to None.

Each function returns None for an unknown unit or a non-finite value: the caller names the value as
unusable instead of using it silently. Factors are exact SI relations, listed in docs/clinical-model.md.
"""

from __future__ import annotations

import functools
import math

__all__ = [
    "COUNT_FACTORS",
    "MASS_CONCENTRATION_FACTORS",
    "from_10e9_per_l",
    "from_ug_per_ml",
    "to_10e9_per_l",
    "to_ug_per_ml",
]

# Factor to multiply by to get µg/mL (exact SI: 1 mg/L = 1 µg/mL; 1 ng/mL = 0.001 µg/mL; 1 g/L = 1000 µg/mL).
MASS_CONCENTRATION_FACTORS: dict[str, float] = {
    "ug/ml": 1.0,
    "mg/l": 1.0,
    "ng/ml": 0.001,
    "ug/l": 0.001,
    "mg/ml": 1000.0,
    "g/l": 1000.0,
}

# Factor to multiply by to get 10⁹/L (exact: 1 × 10³/µL = 1 × 10⁹/L; 1 /µL = 0.001 × 10⁹/L).
COUNT_FACTORS: dict[str, float] = {
    "10*9/l": 1.0,
    "10*3/ul": 1.0,
    "10*3/mm3": 1.0,
    "k/ul": 1.0,
    "/ul": 0.001,
    "/mm3": 0.001,
    "10*6/l": 0.001,
}


# A hook call converts 50-odd values in a handful of units: the spelling is worked out once per unit
# text (about 4 µs each, 10% of reading a prefetch; bench/components.py). Bounded: unit texts come
# from the EHR.
@functools.lru_cache(maxsize=2048)
def _normalise(unit: str) -> str:
    u = unit.strip().lower().replace(" ", "")
    for micro in ("µ", "μ", "mc"):  # micro sign, Greek mu, "mcg"
        u = u.replace(micro + "g", "ug").replace(micro + "l", "ul")
    u = u.replace("^", "*").replace("x10e", "10*").replace("×10", "10*")
    if u.startswith("x10*"):
        u = u[1:]
    if u.startswith("10e"):
        u = "10*" + u[3:]
    if u.startswith("cells/"):
        u = u[len("cells") :]
    return u


def to_ug_per_ml(value: float, ucum_unit: str) -> float | None:
    """`value` in `ucum_unit` as µg/mL; None when the unit is not a known mass concentration."""
    factor = MASS_CONCENTRATION_FACTORS.get(_normalise(ucum_unit))
    if factor is None or not math.isfinite(value):
        return None
    return value * factor


def from_ug_per_ml(value_ug_per_ml: float, ucum_unit: str) -> float | None:
    """Inverse of `to_ug_per_ml`: µg/mL expressed in `ucum_unit`."""
    factor = MASS_CONCENTRATION_FACTORS.get(_normalise(ucum_unit))
    if factor is None or not math.isfinite(value_ug_per_ml):
        return None
    return value_ug_per_ml / factor


def to_10e9_per_l(value: float, ucum_unit: str) -> float | None:
    """A lymphocyte count in `ucum_unit` as 10⁹/L; None for `%` or any unknown unit."""
    factor = COUNT_FACTORS.get(_normalise(ucum_unit))
    if factor is None or not math.isfinite(value):
        return None
    return value * factor


def from_10e9_per_l(value_10e9_per_l: float, ucum_unit: str) -> float | None:
    """Inverse of `to_10e9_per_l`."""
    factor = COUNT_FACTORS.get(_normalise(ucum_unit))
    if factor is None or not math.isfinite(value_10e9_per_l):
        return None
    return value_10e9_per_l / factor
