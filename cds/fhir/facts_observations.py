"""Observations → facts: natalizumab levels and antibodies, lymphocyte counts, pregnancy and
breastfeeding status, body weight. A cheap look at each raw code (prefilter_observation) lets most
laboratory results of a broad `labs` search pass without validation."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from cds.engine.domain import AntibodyResult, Comparator, LymphocyteCount, NatalizumabLevel, UnusableValue
from cds.fhir import shapes, terms, values
from cds.fhir.elements import (
    UCUM,
    codings_of,
    concept_label,
    concept_of,
    first_datetime,
    label_from,
    numeric_value,
    reported_raw,
    reported_text,
    source_of,
    texts_of,
)
from cds.fhir.facts_context import ParseContext
from cds.fhir.shapes import SPECIMEN

__all__ = ["CodeHint", "observation_facts", "prefilter_observation"]

_MAX_LEVEL_UG_PER_ML = 1000.0
_MAX_LYMPHOCYTES_10E9_PER_L = 1000.0
_WEIGHT_KG_RANGE = (0.5, 500.0)  # outside: a unit or typing error, named rather than used
_LEVEL = "natalizumab level"


_OBSERVATION_CODES = (
    terms.NATALIZUMAB_ANTIBODY_CODES
    | terms.LYMPHOCYTE_ABSOLUTE_CODES
    | terms.LYMPHOCYTE_PERCENT_CODES
    | terms.PATIENT_STATUS_CODES
)
_OBSERVATION_WORDS = re.compile(r"natalizumab|tysabri|tyruko|lymphocyte", re.IGNORECASE)
_STATUS_KINDS = (
    (terms.PREGNANCY_STATUS_CODES, "pregnancy"),
    (terms.BREASTFEEDING_STATUS_CODES, "breastfeeding"),
    (terms.BODY_WEIGHT_CODES, "weight"),
)


_REMEMBERED_KEY_CHARS = 512  # an Observation code with more text than this is classified every time


def _observation_kind(
    codes: tuple[tuple[str, str], ...], text: str, level_codes: frozenset[tuple[str, str]]
) -> str | None:
    """_classify, remembered for the short codes that recur on every call (the laboratory codes of a
    broad `labs` search): about 40% of reading a full prefetch when worked out anew (bench/components.py)."""
    if len(text) + sum(len(system) + len(code) for system, code in codes) > _REMEMBERED_KEY_CHARS:
        return _classify(codes, text, level_codes)
    return _classify_remembered(codes, text, level_codes)


def _classify(
    codes: tuple[tuple[str, str], ...], text: str, level_codes: frozenset[tuple[str, str]]
) -> str | None:
    """'antibody', 'unclear-antibody', 'level', 'lymphocytes', 'pregnancy', 'breastfeeding', 'weight'
    or None (most laboratory results, and every JC virus result: rejected fast)."""
    if not (
        _OBSERVATION_WORDS.search(text)
        or terms.codes_match(codes, _OBSERVATION_CODES)
        or (level_codes and terms.codes_match(codes, level_codes))
    ):
        return None
    if terms.codes_match(codes, terms.NATALIZUMAB_ANTIBODY_CODES):
        return "antibody"
    if level_codes and terms.codes_match(codes, level_codes):
        return "level"
    for wanted, kind in _STATUS_KINDS:
        if terms.codes_match(codes, wanted):
            return kind
    if terms.is_unclear_antibody(codes, text):
        return "unclear-antibody"
    if terms.is_jc_virus_result(codes, text):
        return None
    if terms.is_natalizumab_antibody(codes, text):
        return "antibody"
    if terms.is_natalizumab_level(codes, text, level_codes):
        return "level"
    return "lymphocytes" if terms.lymphocyte_kind(codes, text) else None


_classify_remembered = functools.lru_cache(maxsize=2048)(_classify)


CodeHint = tuple[tuple[tuple[str, str], ...], str, str | None]  # (codes, text, kind) of an Observation's code


def prefilter_observation(raw: dict[str, Any], level_codes: frozenset[tuple[str, str]]) -> CodeHint | bool:
    """Cheap look at a raw Observation's code: False when it names nothing read here.

    A broad `labs` search returns every recent laboratory result; only the few that can be a
    natalizumab level, antibody or lymphocyte count are worth validating. Anything odd → True, so
    that validation decides (and counts it when malformed). When every string is plain (no empty
    code, text or display, no null system) the codes and text are the ones observation_facts would read
    from the validated resource: they are returned with the kind, so that it need not read them again.
    """
    code = raw.get("code")
    if not isinstance(code, dict):
        return True
    texts: list[str] = []
    codes: list[tuple[str, str]] = []
    text = code.get("text")
    plain = text is None or (isinstance(text, str) and text != "")
    if isinstance(text, str):
        texts.append(text)
    coding = code.get("coding", [])
    if not isinstance(coding, list):
        return True
    for c in coding:
        if not isinstance(c, dict):
            return True
        system, value, display = c.get("system", ""), c.get("code"), c.get("display")
        if isinstance(display, str):
            texts.append(display)
            plain = plain and display != ""
        if isinstance(value, str) and isinstance(system, str):
            codes.append((system, value))
        plain = (
            plain and isinstance(system, str) and (value is None or (isinstance(value, str) and value != ""))
        )
    codes_t, joined = tuple(codes), " ".join(texts)
    kind = _observation_kind(codes_t, joined, level_codes)
    if kind is None:
        return False
    return (codes_t, joined, kind) if plain else True


def observation_facts(o: shapes.Observation, ctx: ParseContext, hint: CodeHint | None = None) -> None:
    if o["status"] in ("entered-in-error", "cancelled"):
        return
    if hint is not None:  # what the pre-filter read from the same code
        codes, text, kind = hint
    else:
        codes, text = codings_of(o["code"]), " ".join(texts_of(o["code"]))
        kind = _observation_kind(codes, text, ctx.level_codes)
    if kind is None:
        return
    if effective := o.get("effectiveDateTime"):  # the usual case, as first_datetime below
        when = terms.parse_fhir_datetime(effective)
    else:
        period = o.get("effectivePeriod")
        when = first_datetime(
            period.get("start") if period else None,
            period.get("end") if period else None,
            o.get("effectiveInstant"),
            o.get("issued"),
        )
    if when is not None and when[0] < ctx.oldest:
        return  # outside the 730-day window
    src = source_of(o, "Observation")
    at = when[0] if when else None
    if kind == "antibody":
        _antibody(o, at, src, ctx)
    elif kind == "unclear-antibody":
        ctx.acc.unusable.append(
            UnusableValue(
                "natalizumab antibody result",
                "not recognisably an anti-natalizumab (anti-drug) antibody test",
                f"{text}: {reported_raw(o)}".strip(": "),
                at,
                src,
                "antibody-unclear",
            )
        )
    elif kind == "level":
        _level(o, text, when, src, ctx)
    elif kind == "lymphocytes":
        _lymphocytes(o, codes, text, at, src, ctx)
    else:
        _status(o, kind, at, src, ctx)


# ---------------------------------------------------------------- natalizumab levels


@dataclass(frozen=True, slots=True)
class _Measured:
    ug_per_ml: float
    comparator: Comparator | None
    value: float
    unit: str  # as reported


@dataclass(frozen=True, slots=True)
class _Qualitative:
    words: str  # the lab's own words ("Not detected", "<0.1")
    verdict: str  # "below" (the assay's limit) | "detected"
    value: float | None = None  # "<0.1" without a unit: 0.1, in the referenceRange's unit
    comparator: Comparator = "<"


def _level_value(o: shapes.Observation) -> _Measured | _Qualitative | values.Problem | None:
    """What a natalizumab Observation's value says; None when it holds no value at all."""
    q = o.get("valueQuantity")
    if q is not None and (value := q.get("value")) is not None:
        return _level_from_quantity(q, value)
    if vs := o.get("valueString"):
        return _level_from_string(vs)
    if (vcc := o.get("valueCodeableConcept")) is not None:
        return _level_from_concept(vcc) or values.Problem("no-value", "no numeric value")
    if o.get("valueInteger") is not None:
        return values.Problem("no-unit", "no unit given")
    if (vb := o.get("valueBoolean")) is not None:
        return _Qualitative(str(vb).lower(), "detected" if vb else "below")
    for interp in o.get("interpretation", ()):  # no value: a "not detected" interpretation alone
        if (read := _level_from_concept(interp)) is not None:
            return read
    return None


def _level_from_quantity(q: shapes.Quantity, value: float) -> _Measured | _Qualitative | values.Problem:
    comparator, unit, code = q.get("comparator"), q.get("unit"), q.get("code")
    if not (unit or code) and comparator in ("<", "<="):  # "<0.1" without a unit: below the assay's limit
        return _Qualitative(reported_text(value, comparator, ""), "below", value, comparator)
    return _measured(value, unit, code, q.get("system"), comparator, unit or code or "")


def _level_from_string(vs: str) -> _Measured | _Qualitative | values.Problem:
    split = values.split_value_string(vs)
    if isinstance(split, values.Problem):
        return split
    if split is None:  # words only: "Not detected", "<LLOQ"
        verdict = values.level_words(vs)
        return (
            _Qualitative(vs.strip(), verdict) if verdict else values.Problem("no-value", "no numeric value")
        )
    comparator, number, text_unit = split
    if not text_unit and comparator in ("<", "<="):
        return _Qualitative(vs.strip(), "below", number, comparator)
    return _measured(number, text_unit, None, None, comparator, text_unit)


def _level_from_concept(cc: shapes.CodeableConcept) -> _Qualitative | None:
    """A qualitative verdict named by a concept's codes or texts; None when it names none."""
    codes, texts = concept_of(cc)
    verdict = values.level_codes(codes) or next((v for t in texts if (v := values.level_words(t))), None)
    return _Qualitative(label_from(codes, texts), verdict) if verdict else None


def _measured(
    value: float,
    unit: str | None,
    code: str | None,
    system: str | None,
    comparator: Comparator | None,
    reported_unit: str,
) -> _Measured | values.Problem:
    converted = values.mass_concentration(value, unit, code, system)
    if isinstance(converted, values.Problem):
        return converted
    return _Measured(converted, comparator, value, reported_unit)


def _specimen(o: shapes.Observation, code_texts: str) -> values.SpecimenKind | values.Problem:
    """Serum, plasma or unspecified from Observation.specimen (display, contained Specimen.type) and
    the code's text and displays (cds/fhir/values.py specimen_of)."""
    stated: list[tuple[tuple[tuple[str, str], ...], tuple[str, ...]]] = []
    ref = o.get("specimen")
    if ref is not None:
        texts = [d] if (d := ref.get("display")) else []
        codes: tuple[tuple[str, str], ...] = ()
        reference = ref.get("reference") or ""
        if reference.startswith("#"):
            for item in o.get("contained", ()):
                if item.get("resourceType") == "Specimen" and item.get("id") == reference[1:]:
                    try:
                        spec = SPECIMEN.validate_python(item)
                    except ValidationError:
                        return values.Problem("specimen", "the contained specimen is malformed")
                    codes, type_texts = concept_of(spec.get("type"))
                    texts += type_texts
        if texts or codes:
            stated.append((codes, tuple(texts)))
    return values.specimen_of(stated, [code_texts])


def _range_quantities(o: shapes.Observation) -> list[shapes.Quantity]:
    """referenceRange high then low quantities that hold a value."""
    out: list[shapes.Quantity] = []
    for rr in o.get("referenceRange", ()):
        for q in (rr.get("high"), rr.get("low")):
            if q is not None and q.get("value") is not None:
                out.append(q)
    return out


def _assay_limit(o: shapes.Observation, r: _Qualitative, ctx: ParseContext) -> float | values.Problem | None:
    """The assay limit (µg/mL) a result below it is censored at: a number given without a unit ("<0.1")
    is in the referenceRange's unit; otherwise the highest mass limit of the referenceRange (the
    cautious one); else the configured limit; None when no limit is known."""
    ranges = _range_quantities(o)
    if r.value is not None:
        unit_q = next((q for q in ranges if q.get("unit") or q.get("code")), None)
        if unit_q is not None:
            return values.mass_concentration(
                r.value, unit_q.get("unit"), unit_q.get("code"), unit_q.get("system")
            )
        return ctx.assay_limit
    limits: list[float] = []
    for q in ranges:
        c = values.mass_concentration(q.get("value") or 0.0, q.get("unit"), q.get("code"), q.get("system"))
        if isinstance(c, float) and c > 0:
            limits.append(c)
    return max(limits) if limits else ctx.assay_limit


def _level(
    o: shapes.Observation, code_text: str, when: tuple[datetime, str] | None, src: str, ctx: ParseContext
) -> None:
    specimen = _specimen(o, code_text)
    if isinstance(specimen, values.Problem):
        level: NatalizumabLevel | values.Problem = values.Problem(
            specimen.code, f"{specimen.reason}: not used as a serum level"
        )
    elif (read := _level_value(o)) is None and o["status"] in ("registered", "preliminary"):
        return  # not resulted yet: nothing to name
    else:
        level = _level_from(read, o, when, src, specimen, ctx)
    if isinstance(level, values.Problem):
        at = when[0] if when else None
        ctx.acc.unusable.append(UnusableValue(_LEVEL, level.reason, reported_raw(o), at, src, level.code))
    else:
        ctx.acc.levels.append(level)


def _level_from(
    read: _Measured | _Qualitative | values.Problem | None,
    o: shapes.Observation,
    when: tuple[datetime, str] | None,
    src: str,
    specimen: values.SpecimenKind,
    ctx: ParseContext,
) -> NatalizumabLevel | values.Problem:
    """The level a reading gives, or why it gives none: no value, an unreadable value, a qualitative
    result without a usable limit, an implausible number, no sample date or one not precise to the day."""
    if read is None:
        return values.Problem("no-value", "no numeric value")
    if isinstance(read, values.Problem):
        return read
    if isinstance(read, _Qualitative):
        limit = _qualitative_limit(o, read, ctx)
        if isinstance(limit, values.Problem):
            return limit
        value, unit, words = limit, "", read.words
    else:
        if (implausible := _implausible(read)) is not None:
            return implausible
        value, unit, words = read.ug_per_ml, read.unit, ""
    if when is None:
        return values.Problem("no-date", "no sample date")
    if when[1] in ("year", "month"):
        return values.Problem("date-imprecise", "sample date is not precise to the day")
    return NatalizumabLevel(
        value, when[0], read.comparator, read.value, unit, src, specimen, when[1] == "day", words
    )


def _qualitative_limit(
    o: shapes.Observation, read: _Qualitative, ctx: ParseContext
) -> float | values.Problem:
    """The limit a result below the assay's limit is censored at, or why there is none to use."""
    if read.verdict == "detected":
        return values.Problem(
            "qualitative-detected", f"'{read.words}': natalizumab detected but not quantified"
        )
    found = _assay_limit(o, read, ctx)
    if found is None:
        return values.Problem(
            "qualitative-no-limit",
            f"'{read.words}' is below the assay's limit, but no limit is known "
            "(no referenceRange, no configured assay limit)",
        )
    return found


def _implausible(read: _Measured) -> values.Problem | None:
    """Why a measured number cannot be a serum natalizumab level; None when it can be one."""
    if read.value < 0:
        return values.Problem("negative", "negative value")
    if read.value == 0 and read.comparator is None:
        return values.Problem("zero", "zero without a '<' comparator")
    if read.ug_per_ml > _MAX_LEVEL_UG_PER_ML:
        return values.Problem("implausible", "above 1000 µg/mL, not plausible")
    return None


def _status(o: shapes.Observation, kind: str, at: datetime | None, src: str, ctx: ParseContext) -> None:
    """A pregnancy / breastfeeding status or body weight Observation (codes in cds/fhir/terms.py)."""
    if kind == "weight":
        q = o.get("valueQuantity")
        value = q.get("value") if q is not None else None
        if q is None or value is None:
            return
        unit = (q.get("code") if q.get("system") == UCUM else None) or q.get("unit") or q.get("code") or ""
        kg = terms.weight_kg(value, unit)
        low, high = _WEIGHT_KG_RANGE
        if kg is None or not low <= kg <= high or at is None:
            why = (
                "no date"
                if kg is not None and at is None
                else f"not a body weight in kg ({unit or 'no unit'})"
            )
            ctx.acc.unusable.append(
                UnusableValue("body weight", why, reported_text(value, None, unit), at, src, "weight")
            )
            return
        ctx.acc.weights.append((at, kg, src))
        return
    texts: list[str] = []
    codes: tuple[tuple[str, str], ...] = ()
    if (vcc := o.get("valueCodeableConcept")) is not None:
        codes, texts = concept_of(vcc)
    if vs := o.get("valueString"):
        texts.append(vs)
    answer = terms.status_answer(kind, codes, texts, o.get("valueBoolean"))
    if answer is None:
        return  # unknown: nothing on record
    record = (at or datetime.min.replace(tzinfo=UTC), answer, src)
    (ctx.acc.pregnancy if kind == "pregnancy" else ctx.acc.breastfeeding).append(record)


def _antibody(o: shapes.Observation, at: datetime | None, src: str, ctx: ParseContext) -> None:
    positive, reported = _antibody_value(o)
    if positive is None:
        for interp in o.get("interpretation", ()):
            if (positive := _positive_or_negative(interp)) is not None:
                break
    kind = "natalizumab antibody result"
    if positive is None:
        if o["status"] not in ("registered", "preliminary") or reported:
            ctx.acc.unusable.append(
                UnusableValue(kind, "result is neither positive nor negative", reported, at, src)
            )
    elif at is None:
        ctx.acc.unusable.append(UnusableValue(kind, "no test date", reported, None, src))
    else:
        ctx.acc.antibodies.append(AntibodyResult(positive, at, src))


def _antibody_value(o: shapes.Observation) -> tuple[bool | None, str]:
    """(positive, negative or None when the value says neither; the value as reported)."""
    if (vb := o.get("valueBoolean")) is not None:
        return vb, str(vb).lower()
    if (vcc := o.get("valueCodeableConcept")) is not None:
        return _positive_or_negative(vcc), concept_label(vcc)
    if vs := o.get("valueString"):
        return terms.qualitative(vs), vs
    if (vq := o.get("valueQuantity")) is not None and (value := vq.get("value")) is not None:
        return None, reported_text(value, vq.get("comparator"), vq.get("unit") or "")
    return None, ""


def _positive_or_negative(cc: shapes.CodeableConcept) -> bool | None:
    """What the first of a concept's codes, then texts, that says positive or negative says."""
    for word in [*(c for _, c in codings_of(cc)), *texts_of(cc)]:
        if (positive := terms.qualitative(word)) is not None:
            return positive
    return None


def _lymphocytes(
    o: shapes.Observation,
    codes: tuple[tuple[str, str], ...],
    text: str,
    at: datetime | None,
    src: str,
    ctx: ParseContext,
) -> None:
    lk = terms.lymphocyte_kind(codes, text)
    num = numeric_value(o)
    kind = "lymphocyte count"
    if isinstance(num, values.Problem):
        ctx.acc.unusable.append(
            UnusableValue(kind, num.reason, o.get("valueString") or "", at, src, num.code)
        )
        return
    if num is None:
        if lk == "absolute" and o["status"] not in ("registered", "preliminary"):
            ctx.acc.unusable.append(
                UnusableValue(kind, "no numeric value", o.get("valueString") or "", at, src)
            )
        return
    value, comparator, unit, reported_unit = num
    reported = reported_text(value, comparator, reported_unit)
    if lk == "percent" or terms.is_percent_unit(unit):
        ctx.acc.unusable.append(
            UnusableValue(kind, "a percentage is not an absolute count", reported, at, src)
        )
        return
    converted = terms.to_10e9_per_l(value, unit) if unit else None
    if converted is None:
        if lk == "absolute":
            why = f"unit '{unit}' is not an absolute count" if unit else "no unit given"
            ctx.acc.unusable.append(UnusableValue(kind, why, reported, at, src))
        return  # text-only matches need an absolute unit to count at all
    reason = None
    if value < 0:
        reason = "negative value"
    elif converted > _MAX_LYMPHOCYTES_10E9_PER_L:
        reason = "not plausible"
    elif comparator is not None:
        reason = f"a bound ('{comparator}'), not a count"
    elif at is None:
        reason = "no sample date"
    if reason is not None or at is None:
        ctx.acc.unusable.append(UnusableValue(kind, reason or "not usable", reported, at, src))
        return
    ctx.acc.lymphocytes.append(LymphocyteCount(converted, at, src))
