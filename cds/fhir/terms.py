"""Terminology and value rules cds/fhir/ uses to recognise what a FHIR resource means.

Codes are defaults from `../shared/docs/codes.md` (a site adds its own through settings); text rules
cover local codes. Everything here is pure and works on plain strings and numbers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime

from cds.engine import units as _engine_units

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
CPT_SYSTEMS = frozenset({"http://www.ama-assn.org/go/cpt", "urn:oid:2.16.840.1.113883.6.12"})
ICD9_PROC_SYSTEMS = frozenset(
    {"http://hl7.org/fhir/sid/icd-9-cm", "urn:oid:2.16.840.1.113883.6.104", "urn:oid:2.16.840.1.113883.6.103"}
)
ICD10_SYSTEMS = frozenset(
    {"http://hl7.org/fhir/sid/icd-10", "http://hl7.org/fhir/sid/icd-10-cm", "urn:oid:2.16.840.1.113883.6.90"}
)

Coding = tuple[str, str]

# ---------------------------------------------------------------- codes (codes.md)

# Procedures: SNOMED apheresis (parent), CPT plasma exchange / immunoadsorption, ICD-9-CM 99.71.
_PLEX_CODES: frozenset[Coding] = frozenset(
    {(SNOMED, "127788007")}
    | {(s, "36514") for s in CPT_SYSTEMS}
    | {(s, c) for s in ICD9_PROC_SYSTEMS for c in ("99.71", "9971")}
)
_IA_CODES: frozenset[Coding] = frozenset({(s, c) for s in CPT_SYSTEMS for c in ("36516", "36515")})

LYMPHOCYTE_ABSOLUTE_CODES: frozenset[Coding] = frozenset(
    {(LOINC, "731-0"), (LOINC, "26474-7"), (LOINC, "732-8")}
)
LYMPHOCYTE_PERCENT_CODES: frozenset[Coding] = frozenset({(LOINC, "26478-8")})
NATALIZUMAB_ANTIBODY_CODES: frozenset[Coding] = frozenset({(LOINC, "58012-6")})
# Anti-JCV antibody index (STRATIFY JCV) and qualitative anti-JCV antibody (codes.md §3): JC virus
# serology, never an anti-natalizumab antibody and never a natalizumab level.
JCV_CODES: frozenset[Coding] = frozenset({(LOINC, "100977-8"), (LOINC, "70173-0")})

# Patient status observations (issue 15 item 15), not in codes.md, each seen in public FHIR material:
# LOINC 82810-3 "Pregnancy status" (cqframework/cpg-example-anthrax
# input/fsh/test-cases/8973b317-2b9f-4e38-84c4-75e82fb12e5f.fsh, answered with SNOMED 77386006
# "Patient currently pregnant (finding)"); its LOINC answers LA15173-0 "Pregnant", LA26683-5 "Not
# pregnant", LA4489-6 "Unknown" (a public ValueSet "pregnancystatus-values", code search);
# LOINC 63895-7 breastfeeding status (BIH-CEI/medikationsplan input/fsh/Observation-stillzeit.fsh,
# valueBoolean); LOINC 29463-7 "Body weight" (kind-lab/voice-biomarker-fhir
# input/fsh/fsh/SD_VbaiBodyWeight.fsh; IHE/PCC.APS input/fsh/ex-vitalSigns-BodyWeight.fsh sends it
# in UCUM [lb_av]).
PREGNANCY_STATUS_CODES: frozenset[Coding] = frozenset({(LOINC, "82810-3")})
BREASTFEEDING_STATUS_CODES: frozenset[Coding] = frozenset({(LOINC, "63895-7")})
BODY_WEIGHT_CODES: frozenset[Coding] = frozenset({(LOINC, "29463-7")})
PATIENT_STATUS_CODES = PREGNANCY_STATUS_CODES | BREASTFEEDING_STATUS_CODES | BODY_WEIGHT_CODES
PREGNANT_CODES: frozenset[Coding] = frozenset({(SNOMED, "77386006"), (LOINC, "LA15173-0")})
_NOT_PREGNANT_CODES: frozenset[Coding] = frozenset({(LOINC, "LA26683-5")})
_UNKNOWN_ANSWER_CODES: frozenset[Coding] = frozenset({(LOINC, "LA4489-6")})

# Conditions. SNOMED from codes.md §2; ICD-10 A81.2 (PML), G35 (MS) and D89.3 (IRIS, ICD-10-CM,
# codes.md) are standard classification codes added so ICD-coded problem lists match too.
_PML_CODES: frozenset[Coding] = frozenset({(SNOMED, "22255007")} | {(s, "A81.2") for s in ICD10_SYSTEMS})
_MS_CODES: frozenset[Coding] = frozenset({(SNOMED, "24700007")} | {(s, "G35") for s in ICD10_SYSTEMS})
_IRIS_CODES: frozenset[Coding] = frozenset({(s, "D89.3") for s in ICD10_SYSTEMS})


def parse_code_list(items: Iterable[str]) -> frozenset[Coding]:
    """Settings hold "system|code" strings; a bare code matches in any system."""
    out: set[Coding] = set()
    for item in items:
        system, sep, code = item.strip().rpartition("|")
        if code:
            out.add((system if sep else "*", code))
    return frozenset(out)


def codes_match(codes: Iterable[Coding], wanted: frozenset[Coding]) -> bool:
    for pair in codes:
        if pair in wanted or ("*", pair[1]) in wanted:
            return True
    return False


# ---------------------------------------------------------------- text rules

_PLEX_TEXT = re.compile(
    r"\b(plasmapheresis|plasma[\s-]*exchange|plex|tpe|immuno[\s-]*adsorption|immune[\s-]*adsorption|apheresis)\b",
    re.IGNORECASE,
)
_IA_TEXT = re.compile(r"\b(immuno[\s-]*adsorption|immune[\s-]*adsorption)\b", re.IGNORECASE)
# "apheresis" alone also names cell apheresis; those are not a plasma exchange.
_NOT_PLASMA_APHERESIS = re.compile(
    r"red[\s-]*cell|erythrocyt|platelet|leuk|stem[\s-]*cell|photo|lipo|ldl|granulocyt|donor", re.IGNORECASE
)
_PLASMA_VOLUMES = re.compile(
    r"(\d+(?:[.,]\d+)?)\s*(?:x|×)?\s*(?:plasma[\s-]*volumes?|tpv|pv)\b", re.IGNORECASE
)
_NATALIZUMAB_TEXT = re.compile(r"natalizumab|tysabri|tyruko", re.IGNORECASE)
_ANTIBODY_TEXT = re.compile(r"antibod|anti-?natalizumab|\bADA\b|anti[\s-]*drug", re.IGNORECASE)
_DRUG = r"(?:natalizumab|tysabri|tyruko)"
# explicit anti-drug wording only: "anti-natalizumab", "natalizumab antibodies", "antibodies to
# Tysabri", "anti-drug antibodies" (with the drug named), "ADA" next to the drug name
_ANTI_DRUG_TEXT = re.compile(
    rf"anti[\s-]*{_DRUG}|{_DRUG}[\s-]*(?:\(\w+\)\s*)?(?:antibod|ADA\b)"
    rf"|antibod\w*\s+(?:to|against|vs\.?)\s+{_DRUG}|\bADA\b\W{{0,3}}(?:\w+\W+){{0,2}}?{_DRUG}",
    re.IGNORECASE,
)
_ANTI_DRUG_GENERIC = re.compile(r"anti[\s-]*drug[\s-]*antibod", re.IGNORECASE)
_JCV_TEXT = re.compile(r"\bJC\s*-?\s*(?:virus|polyoma)|\bJCV\b|john\s+cunningham|stratify", re.IGNORECASE)
_LYMPHOCYTE_TEXT = re.compile(r"lymphocyte", re.IGNORECASE)
_NOT_ALL_LYMPHOCYTES = re.compile(r"\bcd\s*\d|atypical|reactive|variant|/100|percent|%|ratio", re.IGNORECASE)
_PML_TEXT = re.compile(r"progressive\s+multifocal\s+leu[ck]oencephalopathy|\bPML\b", re.IGNORECASE)
_MS_TEXT = re.compile(r"multiple\s+sclerosis", re.IGNORECASE)
_IRIS_TEXT = re.compile(r"immune\s+reconstitution|\bIRIS\b")  # IRIS: case-sensitive acronym


def plex_modality(codes: Iterable[Coding], texts: Iterable[str], extra: frozenset[Coding]) -> str | None:
    """'plex' / 'immunoadsorption' when the codes or text name one, else None."""
    codes = tuple(codes)
    if codes_match(codes, _IA_CODES):
        return "immunoadsorption"
    text = " ".join(t for t in texts if t)
    by_code = codes_match(codes, _PLEX_CODES) or codes_match(codes, extra)
    match = _PLEX_TEXT.search(text)
    if not by_code and match is None:
        return None
    if not by_code:
        words = {m.group(1).lower() for m in _PLEX_TEXT.finditer(text)}
        if words == {"apheresis"} and _NOT_PLASMA_APHERESIS.search(text):
            return None
    return "immunoadsorption" if _IA_TEXT.search(text) else "plex"


def plasma_volumes(texts: Iterable[str | None]) -> float | None:
    for text in texts:
        if text and (m := _PLASMA_VOLUMES.search(text)):
            value = float(m.group(1).replace(",", "."))
            if 0 < value <= 5:
                return value
    return None


def is_jc_virus_result(codes: tuple[Coding, ...], text: str) -> bool:
    """JC virus serology or PCR (LOINC 100977-8, 70173-0; "JC virus", "JCV", "John Cunningham",
    "STRATIFY"): whatever else its text says ("Tysabri monitoring"), never a natalizumab result."""
    return codes_match(codes, JCV_CODES) or bool(_JCV_TEXT.search(text))


def is_natalizumab_level(codes: tuple[Coding, ...], text: str, level_codes: frozenset[Coding]) -> bool:
    if codes_match(codes, NATALIZUMAB_ANTIBODY_CODES):
        return False
    if codes_match(codes, level_codes):
        return True
    if is_jc_virus_result(codes, text):
        return False
    return bool(_NATALIZUMAB_TEXT.search(text)) and not _ANTIBODY_TEXT.search(text)


def _anti_drug_wording(text: str) -> bool:
    if _ANTI_DRUG_TEXT.search(text):
        return True
    return bool(_ANTI_DRUG_GENERIC.search(text)) and bool(_NATALIZUMAB_TEXT.search(text))


def is_natalizumab_antibody(codes: tuple[Coding, ...], text: str) -> bool:
    """LOINC 58012-6, or explicit anti-natalizumab / anti-drug wording; never a JC virus result."""
    if codes_match(codes, NATALIZUMAB_ANTIBODY_CODES):
        return True
    if is_jc_virus_result(codes, text):
        return False
    return _anti_drug_wording(text)


def is_unclear_antibody(codes: tuple[Coding, ...], text: str) -> bool:
    """Named on the card as not used, never read as a level or as antibodies: a result that names
    natalizumab and an antibody but is not an anti-drug antibody test, or one that names both JC virus
    and anti-natalizumab antibodies (which of the two it is cannot be told)."""
    if codes_match(codes, NATALIZUMAB_ANTIBODY_CODES):
        return False
    if is_jc_virus_result(codes, text):
        return _anti_drug_wording(text)
    if _anti_drug_wording(text):
        return False
    return bool(_NATALIZUMAB_TEXT.search(text)) and bool(_ANTIBODY_TEXT.search(text))


def lymphocyte_kind(codes: tuple[Coding, ...], text: str) -> str | None:
    """'absolute' (code says so), 'percent' (percent code), 'text' (named only by text) or None."""
    if codes_match(codes, LYMPHOCYTE_ABSOLUTE_CODES):
        return "absolute"
    if codes_match(codes, LYMPHOCYTE_PERCENT_CODES):
        return "percent"
    if _LYMPHOCYTE_TEXT.search(text):
        if re.search(r"/100|percent|%", text, re.IGNORECASE):
            return "percent"
        if not _NOT_ALL_LYMPHOCYTES.search(text):
            return "text"
    return None


def condition_kind(codes: tuple[Coding, ...], text: str) -> str:
    if codes_match(codes, _IRIS_CODES) or _IRIS_TEXT.search(text):
        return "iris"
    if codes_match(codes, _PML_CODES) or _PML_TEXT.search(text):
        return "pml"
    if codes_match(codes, _MS_CODES) or _MS_TEXT.search(text):
        return "ms"
    return "other"


_POSITIVE = {
    "pos",
    "positive",
    "detected",
    "reactive",
    "present",
    "a",
    "h",
    "hh",
    "aa",
    "det",
    "10828004",
    "260373001",
    "52101004",
}
_NEGATIVE = {
    "neg",
    "negative",
    "not detected",
    "non-reactive",
    "nonreactive",
    "absent",
    "undetected",
    "n",
    "nd",
    "260385009",
    "260415000",
    "2667000",
}


def qualitative(word: str | None) -> bool | None:
    """True for a positive word or code, False for a negative one, None otherwise."""
    if not word:
        return None
    w = re.sub(r"\s+", " ", word.strip().lower()).rstrip(".")
    if w in _NEGATIVE or w.startswith(("negative", "not detected", "non-reactive", "no ")):
        return False
    if w in _POSITIVE or w.startswith(("positive", "detected", "reactive")):
        return True
    return None


# ---------------------------------------------------------------- patient status

_NEGATION = re.compile(r"\b(?:not|no|non|never|denies|denied|negative|none)\b|\bnot?[\s-]", re.IGNORECASE)
_UNKNOWN = re.compile(
    r"\bunknown\b|\bunsure\b|\buncertain\b|\bnot\s+(?:asked|assessed|known)\b", re.IGNORECASE
)
_YES = re.compile(r"^\s*(?:yes|y|true|positive|pos)\s*\.?\s*$", re.IGNORECASE)
_PREGNANT_TEXT = re.compile(r"pregnan|gravid", re.IGNORECASE)
_BREASTFEEDING_TEXT = re.compile(r"breast[\s-]*feed|lactat|nursing|breast[\s-]*milk|stillend", re.IGNORECASE)


def status_answer(
    kind: str, codes: Iterable[Coding], texts: Iterable[str], boolean: bool | None = None
) -> bool | None:
    """What a pregnancy ("pregnancy") or breastfeeding ("breastfeeding") status answer says: True,
    False ("Not pregnant", "No", negated wording) or None (unknown, or nothing readable)."""
    if boolean is not None:
        return boolean
    codes = tuple(codes)
    if kind == "pregnancy":
        if codes_match(codes, _NOT_PREGNANT_CODES):
            return False
        if codes_match(codes, PREGNANT_CODES):
            return True
    if codes_match(codes, _UNKNOWN_ANSWER_CODES):
        return None
    topic = _PREGNANT_TEXT if kind == "pregnancy" else _BREASTFEEDING_TEXT
    for text in texts:
        if not text or _UNKNOWN.search(text):
            continue
        if _NEGATION.search(text):
            return False
        if topic.search(text) or _YES.match(text):
            return True
    return None


def names_pregnancy(codes: Iterable[Coding], text: str) -> bool:
    """A Condition of pregnancy: SNOMED 77386006 or text "pregnan", not negated ("not pregnant")."""
    if codes_match(tuple(codes), PREGNANT_CODES):
        return True
    return bool(_PREGNANT_TEXT.search(text)) and not _NEGATION.search(text)


# body weight units: UCUM kg, g, [lb_av] (29463-7 above) and their usual spellings, as kg
_KG_PER_UNIT = {"kg": 1.0, "g": 0.001, "[lb_av]": 0.45359237, "lb": 0.45359237, "lbs": 0.45359237}


def weight_kg(value: float, unit: str) -> float | None:
    """A body weight in kg; None for any other unit (the international pound is exactly 0.45359237 kg)."""
    factor = _KG_PER_UNIT.get(unit.strip().lower().replace("kilogram", "kg").replace("pounds", "lb"))
    if factor is None or not math.isfinite(value):
        return None
    return value * factor


# ---------------------------------------------------------------- units
# cds/engine/units.py is the one unit converter; here only lymphocyte-count units (UCUM annotations
# such as {cells}, and percent). Natalizumab levels: cds/fhir/values.py mass_concentration, which
# decides which unit a Quantity names and converts with cds/engine/units.py.

_ANNOTATION = re.compile(r"\{[^}]*\}")


def _strip_annotations(unit: str) -> str:
    """UCUM curly-brace annotations carry no meaning: '{cells}/uL' is '/uL'."""
    return _ANNOTATION.sub("", unit).strip()


def _norm_unit(unit: str) -> str:
    return _strip_annotations(unit).replace(" ", "").lower()


def to_10e9_per_l(value: float, unit: str) -> float | None:
    """An absolute count as 10⁹/L (= 10³/µL); None for % or any unknown unit. The unit's factor is the
    engine's conversion of 1, so value * factor is exactly what the engine computes."""
    if is_percent_unit(unit) or not math.isfinite(value):
        return None
    factor = _engine_units.to_10e9_per_l(1.0, _strip_annotations(unit))
    return value * factor if factor is not None else None


_PERCENT_UNITS = frozenset({"%", "percent", "pct", "/100"})


def is_percent_unit(unit: str) -> bool:
    return _norm_unit(unit) in _PERCENT_UNITS


# ---------------------------------------------------------------- dates

_FHIR_DATETIME = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$"
)

# what _FHIR_DATETIME matches with seconds and a zone given (its fromisoformat branch), without spaces
_FULL_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_fhir_datetime(text: str | None) -> tuple[datetime, str] | None:
    """FHIR date/dateTime/instant -> (UTC datetime, precision 'year'|'month'|'day'|'time').

    Partial dates take their first moment; a time without an offset is read as UTC. Raises
    ValueError for impossible dates (2024-02-30); None for None.
    """
    if text is None:
        return None
    if _FULL_DATETIME.fullmatch(text):  # the usual form, as _FHIR_DATETIME reads it (below), cheaper
        return datetime.fromisoformat(text).astimezone(UTC), "time"
    if len(text) == 10 and _DATE.fullmatch(text):  # a date alone, as below
        return datetime(int(text[:4]), int(text[5:7]), int(text[8:]), tzinfo=UTC), "day"
    m = _FHIR_DATETIME.match(text.strip())
    if not m:
        raise ValueError("not a FHIR dateTime")
    year, month, day, hh, mm, ss, frac, tz = m.groups()
    if ss is not None and tz is not None:  # the usual full form: fromisoformat reads it as is
        return datetime.fromisoformat(m.group(0)).astimezone(UTC), "time"
    if hh is None:
        dt = datetime(int(year), int(month or 1), int(day or 1), tzinfo=UTC)
        return dt, ("day" if day else "month" if month else "year")
    iso = f"{year}-{month}-{day}T{hh}:{mm}:{ss or '00'}{frac or ''}{'+00:00' if tz in (None, 'Z') else tz}"
    return datetime.fromisoformat(iso).astimezone(UTC), "time"


_UNIT_DAYS = {"s": 1 / 86400, "min": 1 / 1440, "h": 1 / 24, "d": 1.0, "wk": 7.0, "mo": 30.0, "a": 365.0}
_EVERY_N = re.compile(r"\b(?:every|q)\s*(\d+)\s*(day|d|week|wk|w|month|mo)s?\b", re.IGNORECASE)
_EVERY_OTHER_DAY = re.compile(r"every\s+other\s+day|\bqod\b|alternate\s+days", re.IGNORECASE)


def interval_days(frequency: int | None, period: float | None, unit: str | None) -> float | None:
    """Days between events for Timing.repeat (frequency per period periodUnit)."""
    if period is None or unit not in _UNIT_DAYS or period <= 0:
        return None
    freq = frequency if frequency and frequency > 0 else 1
    return period * _UNIT_DAYS[unit] / freq


def interval_from_text(text: str | None) -> float | None:
    if not text:
        return None
    if _EVERY_OTHER_DAY.search(text):
        return 2.0
    if m := _EVERY_N.search(text):
        n = int(m.group(1))
        unit = m.group(2).lower()
        days = 1.0 if unit in ("day", "d") else 7.0 if unit in ("week", "wk", "w") else 30.0
        return n * days if n > 0 else None
    return None
