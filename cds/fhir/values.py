"""How a laboratory value in FHIR becomes a number in a known unit, or a named reason why it cannot.

Pure functions on plain strings and numbers, used by `cds/fhir/facts_observations.py` for natalizumab levels:

    parse_number("12,500")                      -> 12500.0   (or a Problem)
    split_value_string("<0.5 ug/mL")            -> ("<", 0.5, "ug/mL") (or a Problem, or None: no number)
    mass_concentration(value, unit, code, system) -> µg/mL   (or a Problem)
    level_words(text)                           -> "below" | "detected" | None
    specimen_of(statements)                     -> "serum" | "plasma" | "unspecified" | Problem

Numbers (issue 15 item 5). Only ASCII digits are read: a digit of another script is a
"number-format" problem, never a guess. A comma followed by exactly three digits after a first
group of one to three digits that does not start with 0 is a grouping separator ("12,500",
"1,234,567.5"); any other single comma is a decimal comma ("0,5", "1,25", "1234,5"). Groups of three
after a space (normal, no-break, thin or narrow no-break) are grouping too ("12 500"). A point is
always a decimal point. Anything that reads two ways or contradicts itself ("1.234,5", "1,234,5",
"1.2.3", "12,50,000") is a "number-format" problem naming the text.

Units. A natalizumab level is a mass concentration; the one converter is `cds/engine/units.py`
(`to_ug_per_ml`, exact SI factors: µg/mL = mg/L = 1000 ng/mL). This module only decides which of
its units a Quantity names:
* a UCUM code (system http://unitsofmeasure.org) is read case-sensitively, as UCUM defines it: "mg/L"
  is milligram per litre, "Mg/L" megagram per litre (not a unit read here);
* the human `unit` text accepts the usual spellings (mg/L, MG/L, ug/mL, µg/mL, μg/mL, mcg/mL,
  UG/ML, ng/mL, "nanograms per millilitre", ...); a mixed-case prefix such as "Mg/L" or "nG/mL" is
  "unit-ambiguous";
* when both are given they must name the same quantity, else "unit-conflict" (never resolved silently
  in favour of either); none at all is "no-unit"; any other unit is "unit".
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from cds.engine import units as _units
from cds.engine.domain import Comparator

UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"
V2_0487 = "http://terminology.hl7.org/CodeSystem/v2-0487"
V3_SPECIMEN_TYPE = "http://terminology.hl7.org/CodeSystem/v3-SpecimenType"

Coding = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a value cannot be used: `code` is stable (UnusableValue.code), `reason` is card text."""

    code: str
    reason: str


# ---------------------------------------------------------------- numbers

_SPACES = " \u00a0\u2009\u202f"  # space, no-break space, thin space, narrow no-break space
_PLAIN = re.compile(r"[0-9]+(?:\.[0-9]+)?|\.[0-9]+")
_COMMA_GROUPED = re.compile(r"[1-9][0-9]{0,2}(?:,[0-9]{3})+(?:\.[0-9]+)?")
_DECIMAL_COMMA = re.compile(r"[0-9]+,[0-9]+")
_SPACE_GROUPED = re.compile(rf"[1-9][0-9]{{0,2}}(?:[{_SPACES}][0-9]{{3}})+(?:([.,])([0-9]+))?")


def other_script_digit(text: str) -> bool:
    """True when `text` holds a decimal digit that is not ASCII 0-9 (Arabic-Indic, Devanagari, ...)."""
    return any(unicodedata.category(ch) == "Nd" and not "0" <= ch <= "9" for ch in text)


def parse_number(token: str) -> float | Problem:
    """A decimal number as a lab writes it (rules in the module docstring)."""
    t = token.strip()
    bad = Problem("number-format", f"the number '{token.strip()}' cannot be read one way only")
    if other_script_digit(t):
        return Problem("number-format", f"the number '{t}' uses digits other than 0-9")
    if _PLAIN.fullmatch(t):
        return float(t)
    if _COMMA_GROUPED.fullmatch(t):
        return float(t.replace(",", ""))
    if _DECIMAL_COMMA.fullmatch(t):
        return float(t.replace(",", "."))
    if m := _SPACE_GROUPED.fullmatch(t):
        sep, decimals = m.group(1), m.group(2)
        if sep == "," and decimals is not None and len(decimals) == 3:
            return bad  # "12 500,500": a decimal comma or one more group
        whole = t[: m.start(1)] if sep else t
        digits = "".join(ch for ch in whole if ch not in _SPACES)
        return float(f"{digits}.{decimals}" if sep else digits)
    return bad


_CMP: dict[str, Comparator] = {"≤": "<=", "≥": ">=", "<": "<", ">": ">", "<=": "<=", ">=": ">="}
# comparator, sign, number (digits with separators, space groups of exactly three), then the unit
_VALUE_STRING = re.compile(
    rf"^\s*(<=|>=|<|>|≤|≥)?\s*(-?)\s*"
    rf"([0-9.][0-9.,]*(?:[{_SPACES}][0-9]{{3}}(?![0-9*^])[0-9.,]*)*)\s*(.*?)\s*$",
    re.DOTALL,
)


def split_value_string(text: str) -> tuple[Comparator | None, float, str] | Problem | None:
    """(comparator, value, unit text) of a valueString like "<0.5 ug/mL" or "12,500 ng/mL".

    None when the text does not start with a number (e.g. "Not detected"); a Problem when it does but
    the number cannot be read one way only.
    """
    if other_script_digit(text):  # wherever it stands: never read, never taken for words
        return Problem("number-format", f"the number in '{text.strip()}' uses digits other than 0-9")
    m = _VALUE_STRING.match(text)
    if m is None:
        return None
    number = parse_number(m.group(3))
    if isinstance(number, Problem):
        return number
    comparator = _CMP[m.group(1)] if m.group(1) else None
    return comparator, -number if m.group(2) else number, m.group(4)


# ---------------------------------------------------------------- mass-concentration units

# UCUM codes (case-sensitive) of the units cds/engine/units.py converts; "l" and "L" are both litre
_UCUM_MASS: dict[str, str] = {
    code.replace("L", lit): code
    for code in ("ug/mL", "mg/L", "ng/mL", "ug/L", "mg/mL", "g/L")
    for lit in ("L", "l")
}
_LONG_FORM = re.compile(r"(nano|micro|milli)?grams?(?:per|/)(milli)?lit(?:re|er)s?")
_LONG_PREFIX = {"nano": "ng", "micro": "ug", "milli": "mg", None: "g"}
_DENOMINATORS = frozenset({"L", "l", "mL", "ml", "ML"})


# Pure and called for each level's unit text and code: worked out once per distinct text (bounded).
@functools.lru_cache(maxsize=512)
def _human_mass_unit(text: str) -> str | Problem | None:
    """The UCUM code a human unit text names, a Problem when its case makes it ambiguous, None when it
    names no mass concentration read here."""
    t = re.sub(rf"[{_SPACES}]", "", text.strip())
    if not t:
        return None
    if m := _LONG_FORM.fullmatch(t.lower()):
        code = f"{_LONG_PREFIX[m.group(1)]}/{'mL' if m.group(2) else 'L'}"
        return code if _units.to_ug_per_ml(1.0, code) is not None else None
    t = re.sub(r"[µμ](?=[A-Z])", "U", t)  # micro sign or Greek mu in an all-caps unit: "µG/ML"
    t = re.sub(r"[µμ]", "u", t)
    t = re.sub(r"^mcg", "ug", t)
    t = re.sub(r"^MCG", "UG", t)
    num, sep, den = t.partition("/")
    if not sep:
        return None
    key = f"{num.lower()}/{den.lower()}"
    if _units.to_ug_per_ml(1.0, key) is None:
        return None
    if not (num.islower() or num.isupper()) or den not in _DENOMINATORS:
        return Problem("unit-ambiguous", f"the unit '{text.strip()}' is ambiguous in its letter case")
    return f"{num.lower()}/{'mL' if den.lower() == 'ml' else 'L'}"


def mass_concentration(
    value: float, unit: str | None, code: str | None, system: str | None
) -> float | Problem:
    """`value` in µg/mL from a Quantity's unit text, code and system (rules in the module docstring)."""
    unit = (unit or "").strip()
    code = (code or "").strip()
    if not unit and not code:
        return Problem("no-unit", "no unit given")
    canonical = _agreed_mass_unit(unit, code, system)
    if isinstance(canonical, Problem):
        return canonical
    converted = _units.to_ug_per_ml(value, canonical)
    if converted is None:
        return Problem("number-format", f"the value '{value}' is not a finite number")
    return converted


def _agreed_mass_unit(unit: str, code: str, system: str | None) -> str | Problem:
    """The UCUM code of the mass concentration that the unit text and the code (either may be empty)
    both name, or why there is none."""
    shown = unit or code
    by_text = _human_mass_unit(unit) if unit else None
    by_code: str | Problem | None
    if code and system == UCUM:
        by_code = _ucum_mass_unit(unit, code, by_text)
    elif code:
        by_code = _human_mass_unit(code)  # a code outside UCUM: read like a unit text
    else:
        by_code = None
    if isinstance(by_code, Problem):
        return by_code
    if isinstance(by_text, Problem):
        return by_text
    if unit and code:
        if by_text is None and by_code is None:
            return Problem("unit", f"unit '{shown}' is not a mass concentration")
        if by_text is None or by_code is None or _factor(by_text) != _factor(by_code):
            return Problem("unit-conflict", f"unit '{unit}' and code '{code}' do not name the same unit")
    canonical = by_code or by_text
    if canonical is None:
        return Problem("unit", f"unit '{shown}' is not a mass concentration")
    return canonical


def _ucum_mass_unit(unit: str, code: str, by_text: str | Problem | None) -> str | Problem:
    """A UCUM code as one of the mass concentrations read here, or why it is not one."""
    # the micro sign or Greek mu for UCUM's "u" is not a case question: one reading only
    found = _UCUM_MASS.get(code.replace("µ", "u").replace("μ", "u"))
    if found is not None:
        return found
    if isinstance(by_text, str):
        return Problem("unit-conflict", f"unit '{unit}' and UCUM code '{code}' do not name the same unit")
    if _human_mass_unit(code) is not None:  # 'Mg/L': a case variant of a unit read here
        return Problem("unit", f"UCUM code '{code}' is not a mass concentration read here")
    return Problem("unit", f"unit '{unit or code}' is not a mass concentration")


def _factor(code: str) -> float | None:
    return _units.to_ug_per_ml(1.0, code)


# ---------------------------------------------------------------- qualitative results

# "below the assay's limit" words; checked before "detected" ("not detected" contains "detected")
_BELOW = re.compile(
    r"not\s+detect|un[\s-]*detect|non[\s-]*detect|none\s+detected|\bnegative\b|\bneg\b"
    r"|below\s+(?:the\s+)?(?:lower\s+)?(?:limit|level)\s+of\s+(?:quantification|quantitation|detection)"
    r"|below\s+(?:the\s+)?(?:assay|detection|reporting|quantification)\s+(?:limit|range)"
    r"|<\s*l{0,2}o[qd]\b|\bbl(?:o)?q\b|\bnd\b|not\s+quantifiable|unquantifiable|not\s+measurable",
    re.IGNORECASE,
)
_DETECTED = re.compile(r"\bdetected\b|\bdetectable\b|\bpositive\b|\bpos\b|\bpresent\b", re.IGNORECASE)
# SNOMED 260415000 "Not detected", 260385009 "Negative" (terms.py's qualitative codes); v3
# ObservationInterpretation ND / NEG; and their positive counterparts (10828004, 260373001, POS, DET)
_BELOW_CODES = frozenset({"260415000", "260385009", "ND", "NEG"})
_DETECTED_CODES = frozenset({"10828004", "260373001", "POS", "DET"})


def level_words(text: str) -> Literal["below", "detected"] | None:
    """What a qualitative natalizumab result says: below the assay's limit, drug detected, or neither."""
    if _BELOW.search(text):
        return "below"
    if _DETECTED.search(text):
        return "detected"
    return None


def level_codes(codes: Iterable[Coding]) -> Literal["below", "detected"] | None:
    found = {code for _, code in codes}
    if found & _BELOW_CODES:
        return "below"
    if found & _DETECTED_CODES:
        return "detected"
    return None


# ---------------------------------------------------------------- specimen

# SNOMED CT specimen codes: 119364003 "Serum specimen" (hl7ch/ch-lab-order
# input/fsh/instances/specimen/Serum.fsh), 119361006 "Plasma specimen" and 122592007 "Acellular
# blood (serum or plasma) specimen" (a public specimen ValueSet, code index id 31248083624),
# 258450006 "Cerebrospinal fluid specimen" and 119297000 "Blood specimen" (ahdis/ch-ems
# input/fsh/terminology/LabSpecimenTypes.fsh), 258580003 "Whole blood sample" (code index id
# 32318197126). HL7 v2 table 0487 SER "Serum", PLAS "Plasma", CSF "Cerebrospinal fluid", BLD "Whole
# blood" (a public FSH ValueSet, code index id 59095571796); the same codes in v3-SpecimenType
# (code index id 34975174955).
_SERUM_CODES: frozenset[Coding] = frozenset(
    {(SNOMED, "119364003"), (SNOMED, "122592007"), (V2_0487, "SER"), (V3_SPECIMEN_TYPE, "SER")}
)
_PLASMA_CODES: frozenset[Coding] = frozenset(
    {(SNOMED, "119361006"), (V2_0487, "PLAS"), (V3_SPECIMEN_TYPE, "PLAS")}
)
_SPECIMEN_SYSTEMS = frozenset({SNOMED, V2_0487, V3_SPECIMEN_TYPE})

_SERUM_TEXT = re.compile(r"\bserum\b|\bsera\b|\bser\b|\bserpl\b|\bser/pla?s", re.IGNORECASE)
_PLASMA_TEXT = re.compile(r"\bplasma\b|\bplas\b|\bserpl\b|/plas", re.IGNORECASE)
# named anywhere: never a serum level
_OTHER_TEXT = re.compile(
    r"\bcsf\b|cerebro[\s-]*spinal|spinal\s+fluid|\bliquor\b|\blcr\b|cefalorraqu|urine|\burin\b|\bur\b"
    r"|saliva|whole\s+blood|\bwb\b|synovial|pleural|ascit|peritoneal|vitreous|aqueous|breast\s+milk"
    r"|\bmilk\b|dried\s+blood|\bdbs\b|\btears?\b|sputum|stool|f(?:a)?ec(?:es|al)|tissue|lavage",
    re.IGNORECASE,
)
_BLOOD_TEXT = re.compile(r"\bblood\b|\bbld\b", re.IGNORECASE)  # other only when serum/plasma are not named

SpecimenKind = Literal["serum", "plasma", "unspecified"]


def specimen_of(
    stated: Iterable[tuple[tuple[Coding, ...], tuple[str, ...]]], code_texts: Iterable[str]
) -> SpecimenKind | Problem:
    """Serum, plasma or unspecified; a Problem ("specimen") for anything else.

    `stated`: (codes, texts) of each specimen the Observation names (Observation.specimen's display,
    a contained Specimen's type); `code_texts`: the Observation code's text and displays. A stated
    specimen that names neither serum nor plasma (whatever it names) is not used; so is any text
    naming CSF, urine, whole blood and the like, even beside "serum".
    """
    serum = plasma = False
    other: str | None = None
    for codes, texts in stated:
        joined = " ".join(t for t in texts if t)
        said = _specimen_words(joined)
        is_serum = bool(set(codes) & _SERUM_CODES) or said.serum
        is_plasma = bool(set(codes) & _PLASMA_CODES) or said.plasma
        coded_other = any(
            s in _SPECIMEN_SYSTEMS and (s, c) not in _SERUM_CODES | _PLASMA_CODES for s, c in codes
        )
        if (said.other or coded_other or not (is_serum or is_plasma)) and (joined or codes):
            other = other or joined or codes[0][1]
        serum, plasma = serum or is_serum, plasma or is_plasma
    code = _specimen_words(" ".join(t for t in code_texts if t))
    other = other or code.other
    if other is None and not (serum or plasma or code.serum or code.plasma):
        other = code.blood
    if other is not None:
        return Problem("specimen", f"specimen '{other}' is not serum or plasma")
    if serum or code.serum:
        return "serum"
    if plasma or code.plasma:
        return "plasma"
    return "unspecified"


@dataclass(frozen=True, slots=True)
class SpecimenWords:
    """What a text says of the specimen: serum or plasma named, and the first word naming another
    specimen (CSF, urine, ...) or blood (`blood` counts as other only when serum and plasma are not named)."""

    serum: bool
    plasma: bool
    other: str | None
    blood: str | None


def _specimen_words(text: str) -> SpecimenWords:
    # Every level of a patient carries the same few texts, and the four searches cost about 10 µs a
    # level (bench/components.py): short texts are read once per worker (bounded), long free text every time.
    return _specimen_words_remembered(text) if len(text) <= 512 else _read_specimen_words(text)


def _read_specimen_words(text: str) -> SpecimenWords:
    other = _OTHER_TEXT.search(text)
    blood = _BLOOD_TEXT.search(text)
    return SpecimenWords(
        serum=bool(_SERUM_TEXT.search(text)),
        plasma=bool(_PLASMA_TEXT.search(text)),
        other=other.group(0) if other else None,
        blood=blood.group(0) if blood else None,
    )


_specimen_words_remembered = functools.lru_cache(maxsize=1024)(_read_specimen_words)
