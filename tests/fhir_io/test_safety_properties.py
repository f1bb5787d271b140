"""Property tests of the input side of issue 15: whatever shape a natalizumab-like result takes, it
becomes exactly one usable serum/plasma level or one named unusable value, and JC virus results,
other specimens, conflicting units and other scripts' digits never become a level."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from cds.fhir.facts import parse_resources
from cds.fhir.values import other_script_digit
from cds.settings import Settings
from tests.fhir_io.fixtures import NOW, PATIENT, UCUM, iso, observation

LEVEL_TEXTS = [
    "Natalizumab concentration",
    "Natalizumab [Mass/volume] in Serum or Plasma",
    "Tysabri trough level",
]
OTHER_SPECIMEN_TEXTS = ["Natalizumab, CSF", "Natalizumab in cerebrospinal fluid", "Natalizumab (Liquor)"]
JCV_TEXTS = ["JC virus antibody index (Tysabri monitoring)", "JCV index, natalizumab", "STRATIFY JCV Tysabri"]
UNITS = ["ug/mL", "mg/L", "ng/mL", "ug/L", "µg/mL", "MG/L", "UG/ML", "Mg/L", "IU/mL", "mg/dL", ""]
CODES = ["ug/mL", "mg/L", "ng/mL", "ug/L", "mg/l", "Mg/L", "[IU]/mL", ""]
WORDS = ["Not detected", "negative", "Detected", "<LLOQ", "see comment", "Below limit of quantification"]
OTHER_DIGITS = ["\u0661", "\u0967", "\uff11", "\u09e8"]  # Arabic-Indic, Devanagari, fullwidth, Bengali

FACTOR = {"ug/ml": 1.0, "mg/l": 1.0, "ng/ml": 0.001, "ug/l": 0.001}  # by lower-case unit


@st.composite
def number_text(draw: st.DrawFn) -> str:
    n = draw(st.integers(min_value=0, max_value=99_999))
    form = draw(st.sampled_from(["plain", "comma", "space", "decimal-comma", "other-digit", "dot-comma"]))
    if form == "comma":
        return f"{n:,}"
    if form == "space":
        return f"{n:,}".replace(",", " ")
    if form == "decimal-comma":
        return f"{n // 100},{n % 100 or 5}"
    if form == "other-digit":
        return f"{n}{draw(st.sampled_from(OTHER_DIGITS))}"
    if form == "dot-comma":
        return f"{n:,}".replace(",", ".") + ",5"
    return str(n)


@st.composite
def value(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["quantity", "string", "words", "concept"]))
    if kind == "quantity":
        q: dict[str, Any] = {"value": draw(st.floats(min_value=0.01, max_value=900, allow_nan=False))}
        if unit := draw(st.sampled_from(UNITS)):
            q["unit"] = unit
        if code := draw(st.sampled_from(CODES)):
            q["code"], q["system"] = code, UCUM
        if draw(st.booleans()):
            q["comparator"] = "<"
        return {"valueQuantity": q}
    if kind == "string":
        comparator = draw(st.sampled_from(["", "<", "> "]))
        return {"valueString": f"{comparator}{draw(number_text())} {draw(st.sampled_from(UNITS))}".strip()}
    words = draw(st.sampled_from(WORDS))
    return {"valueString": words} if kind == "words" else {"valueCodeableConcept": {"text": words}}


@st.composite
def result(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    group = draw(st.sampled_from(["level", "other-specimen", "jcv"]))
    texts = {"level": LEVEL_TEXTS, "other-specimen": OTHER_SPECIMEN_TEXTS, "jcv": JCV_TEXTS}[group]
    extra: dict[str, Any] = dict(draw(value()))
    if draw(st.booleans()):
        extra["referenceRange"] = [{"high": {"value": 0.5, "unit": "ug/mL", "system": UCUM, "code": "ug/mL"}}]
    if draw(st.booleans()):
        extra["specimen"] = {"display": draw(st.sampled_from(["Serum", "Plasma", "CSF", "Whole blood"]))}
    when = iso(NOW - timedelta(days=draw(st.integers(min_value=1, max_value=60))))
    return group, observation("o", {"text": draw(st.sampled_from(texts))}, when, **extra)


@settings(max_examples=int(os.environ.get("CDS_PROPERTY_EXAMPLES", "300")), deadline=None)
@given(result(), st.sampled_from([None, 0.2]))
def test_every_natalizumab_result_is_one_serum_level_or_one_named_value(
    case: tuple[str, dict[str, Any]], limit: float | None
) -> None:
    group, obs = case
    facts = parse_resources(
        [obs], Settings(natalizumab_assay_limit_ug_per_ml=limit), patient_id=PATIENT, now=NOW
    ).facts
    assert facts.antibodies == ()
    if group == "jcv":
        assert facts.levels == () and facts.unusable == ()
        return
    assert len(facts.levels) + len(facts.unusable) == 1, "nothing is dropped silently"
    event("level" if facts.levels else f"unusable: {facts.unusable[0].code}")
    if not facts.levels:
        return
    (level,) = facts.levels
    specimen = obs.get("specimen", {}).get("display", "")
    assert group == "level" and specimen in ("", "Serum", "Plasma")
    assert level.specimen in ("serum", "plasma", "unspecified")
    vs = obs.get("valueString", "")
    assert not other_script_digit(vs)
    assert "." not in vs.split(",")[0] or "," not in vs  # "1.234,5" is never read
    q = obs.get("valueQuantity")
    if q is not None and q.get("unit") and q.get("code"):
        unit, code = q["unit"].replace("µ", "u").lower(), q["code"]
        assert code != "Mg/L" and q["unit"] != "Mg/L", "UCUM is case-sensitive; mixed case is ambiguous"
        assert FACTOR[unit] == FACTOR[code.lower()], "unit text and UCUM code agree"
    if level.qualitative:  # below the assay's limit: "<" the referenceRange's limit, else the configured one
        assert level.comparator == "<"
        in_range = "referenceRange" in obs  # high 0.5 ug/mL
        if level.reported_value is not None:  # a number without a unit: in the referenceRange's unit
            assert level.value_ug_per_ml == (level.reported_value if in_range else limit)
        else:
            assert level.value_ug_per_ml == (0.5 if in_range else limit)
