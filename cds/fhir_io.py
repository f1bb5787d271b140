"""The one place that reads FHIR: prefetch first, then fhirServer; resources → engine.domain.

    PREFETCH templates: prefetch_templates(settings) -> dict[str, str]   (discovery publishes them)
    plex_orders(draft_orders, selections, settings) -> list[PlexOrder]
    FhirReader(http, settings).load(patient_id, prefetch, fhir_server, token, expires_in) -> LoadResult

Reading. Each prefetch key is used when it holds a Bundle (or, for `patient`, a Patient) or `null`
(= no data, CDS Hooks 2.0 §prefetch). A key that is absent, an OperationOutcome or of the wrong type
is fetched from fhirServer with the bearer token (or without one only when `allow_open_fhir`), all
keys at once under a Semaphore, each page within `fhir_timeout_s`, everything within
`fhir_deadline_s`. `link[next]` is followed up to `fhir_max_pages`, and only to the same scheme,
host, port and base path as fhirServer, so the token never leaves it; redirects are never followed;
bodies are read as a stream and dropped past `fhir_max_response_bytes`. A key that fails becomes a
plain-text problem and `sources[key] = "error"`. The `patient` key is a read (`Patient/{id}`), fetched
like the searches when it is not prefetched. `DataUnavailable` (412) only when neither medications
(statements, requests or administrations) nor labs could be read.

Caching. A successful search is kept under (fhirServer, query, SHA-256 of the token) for
min(`cache_ttl_s`, the token's `expires_in`), so it never widens what a token may read: in-process
(`MemoryReadCache`), or in Redis when `redis_url` is set (`RedisReadCache`, shared by replicas, JSON
values; Redis failing degrades to no cache). Concurrent identical reads share one in-flight fetch.

Parsing. Every resource is validated alone against a slim strict pydantic model of the fields read
here (the shapes are declared in `cds/fhir_models.py`; with `strict_fhir`, also against fhir.resources
R4B); a malformed one is skipped and counted, never raised. Observations older than 730 days are
dropped (a 2.0 template cannot say so); entries about another patient, `entered-in-error` entries and
non-completed procedures are left out.

Decisions: a MedicationStatement is active when `active`, `intended` or `on-hold`; a
MedicationRequest when `active` or `on-hold` (a `draft` on the server is not yet a treatment); a
MedicationAdministration when `in-progress` or `on-hold`. A natalizumab dose (NatalizumabDose) comes
only from what says a dose was or may have been given: a MedicationAdministration `completed`,
`in-progress`, `on-hold`, `stopped` or `unknown` (drug may be in the blood: a dose taken for given is
the cautious error, as a level drawn before it no longer counts as drawn after the last dose; never
`not-done` or `entered-in-error`), dated effectiveDateTime, else effectivePeriod.end, else its start; or a
MedicationStatement (active/completed/stopped/on-hold/unknown) dated effectiveDateTime or effectivePeriod.end
(never a period start or dateAsserted). A MedicationRequest is an order: its authoredOn is when it was
written, so it becomes MedicationUse(record="request", last_date=authoredOn) and never a dose. A dose
dated only to the month or year is named as unusable; so is an administration dated in the future (a
statement's period may end in the future: a plan, not a dose).

Laboratory values (cds/fhir_values.py has the rules): a natalizumab level counts only from serum,
plasma or an unstated specimen; its number is read with grouping separators and decimal commas told
apart; its unit text and UCUM code must agree on a mass concentration. A qualitative result below the
assay's limit ("Not detected", "<LLOQ", "<0.1" without a unit) becomes a level "<" the limit from its
referenceRange or `natalizumab_assay_limit_ug_per_ml`; without a limit, or when the drug is
"detected" without a number, it is named as unusable. JC virus results are never natalizumab
antibodies or levels. Results that share a code and a time are all kept (the engine weighs them).
A value given to the day only carries `date_only`.
"""

from __future__ import annotations

import asyncio
import calendar
import hashlib
import json
import logging
import operator
import posixpath
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote, urljoin, urlsplit

import httpx
import orjson
from cachetools import TTLCache
from pydantic import ValidationError

from cds import fhir_terms as terms
from cds import fhir_values as values
from cds import metrics, r4b_shape
from cds.engine import drugs
from cds.engine.domain import (
    AntibodyResult,
    ConditionFact,
    LymphocyteCount,
    MedicationUse,
    NatalizumabDose,
    NatalizumabLevel,
    PatientDetails,
    PatientFacts,
    PlexPlan,
    PlexSession,
    UnusableValue,
)
from cds.engine.memo import Memo
from cds.errors import BadHookRequest, DataUnavailable
from cds.fhir_models import (
    _ALL_MODELS,
    _CC,
    _MODELS,
    SPECIMEN,
    _Condition,
    _Dosage,
    _Extension,
    _Medication,
    _MedicationAdministration,
    _MedicationRequest,
    _MedicationStatement,
    _MedicationUse,
    _Observation,
    _Patient,
    _Procedure,
    _Quantity,
    _Reference,
    _Resource,
    _ServiceRequest,
)
from cds.outbound import normalise_url
from cds.settings import Settings

log = logging.getLogger("cds.fhir")
_T = TypeVar("_T")

__all__ = ["FhirReader", "LoadResult", "PlexOrder", "parse_resources", "plex_orders", "prefetch_templates"]


@dataclass(frozen=True)
class PlexOrder:
    reference: str  # "ServiceRequest/abc" (as in selections)
    plan: PlexPlan
    text: str  # order name as written (FHIR text: escape before markdown)
    resource: dict[str, Any]  # the draft resource as sent, for an `update` suggestion


@dataclass(frozen=True)
class LoadResult:
    facts: PatientFacts
    exposure: bool  # natalizumab medication or level on record
    sources: dict[str, str] = field(default_factory=dict)  # key -> prefetch|fhir|cache|missing|error
    problems: tuple[str, ...] = ()  # plain text the cards show: what could not be read
    skipped: int = 0  # malformed entries skipped


_LYMPHOCYTE_CODES = "http://loinc.org|731-0,http://loinc.org|26474-7,http://loinc.org|732-8"
NATALIZUMAB_ANTIBODY_CODE = "http://loinc.org|58012-6"
# pregnancy status, breastfeeding status, body weight (codes cited in cds/fhir_terms.py)
_PATIENT_STATUS_CODES = "http://loinc.org|82810-3,http://loinc.org|63895-7,http://loinc.org|29463-7"


def prefetch_templates(settings: Any) -> dict[str, str]:
    """Prefetch key -> CDS Hooks 2.0 template; the fallback issues the same queries itself.

    No LOINC code exists for serum natalizumab, so by default `labs` fetches recent laboratory
    Observations broadly and text matching finds the levels; a site's configured level codes narrow it.
    Date windows cannot be written in a 2.0 template: the service filters by date after reading.
    """
    pid = "{{context.patientId}}"
    level_codes = list(getattr(settings, "natalizumab_level_codes", []) or [])
    if level_codes:
        labs = f"Observation?patient={pid}&code={','.join(level_codes + [NATALIZUMAB_ANTIBODY_CODE])}&_sort=-date&_count=50"
    else:
        labs = f"Observation?patient={pid}&category=laboratory&_sort=-date&_count=200"
    return {
        "patient": f"Patient/{pid}",
        "labs": labs,
        "lymphocytes": f"Observation?patient={pid}&code={_LYMPHOCYTE_CODES}&_sort=-date&_count=10",
        "patientStatus": f"Observation?patient={pid}&code={_PATIENT_STATUS_CODES}&_sort=-date&_count=20",
        "medicationStatements": f"MedicationStatement?patient={pid}&_count=100",
        "medicationRequests": f"MedicationRequest?patient={pid}&_count=100",
        "medicationAdministrations": f"MedicationAdministration?patient={pid}&_count=100",
        "conditions": f"Condition?patient={pid}&_count=100",
        "procedures": f"Procedure?patient={pid}&status=completed&_count=100",
    }


_R4B_MODULES = {
    "Observation": "observation",
    "Procedure": "procedure",
    "Medication": "medication",
    "MedicationStatement": "medicationstatement",
    "MedicationRequest": "medicationrequest",
    "MedicationAdministration": "medicationadministration",
    "Condition": "condition",
    "ServiceRequest": "servicerequest",
    "Patient": "patient",
}


def r4b_valid(resource: dict[str, Any]) -> bool:
    """Full fhir.resources R4B validation of one resource (never the R5 top-level models)."""
    import importlib

    name = resource.get("resourceType")
    if not isinstance(name, str) or name not in _R4B_MODULES:
        return False
    cls = getattr(importlib.import_module(f"fhir.resources.R4B.{_R4B_MODULES[name]}"), name)
    try:
        cls.model_validate(resource)
    except (
        ValidationError,
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
        OverflowError,
    ):  # fhir-core raises the latter too (OverflowError: a year-1 dateTime with a + offset)
        return False
    return True


def _validate(resource: Any, strict: bool) -> _Resource | None:
    """Slim copy of one resource; None when it is malformed (or, with `strict`, R4B-invalid)."""
    if not isinstance(resource, dict):
        return None
    model = _MODELS.get(resource.get("resourceType"))  # type: ignore[arg-type]
    if model is None:
        return None
    try:
        parsed: _Resource = model.validate_python(resource)
    except ValidationError:
        return None
    if strict and not r4b_valid(resource):
        return None
    return parsed


# ================================================================ small readers of FHIR elements


def _codings(cc: _CC | None) -> tuple[tuple[str, str], ...]:
    if not cc or "coding" not in cc:
        return ()
    return tuple([(c.get("system") or "", code) for c in cc["coding"] if (code := c.get("code"))])


def _texts(cc: _CC | None) -> list[str]:
    if not cc:
        return []
    text = cc.get("text")
    out = [text] if text else []
    for c in cc.get("coding", ()):
        if display := c.get("display"):
            out.append(display)
    return out


def _concept(cc: _CC | None) -> tuple[tuple[tuple[str, str], ...], list[str]]:
    """(_codings(cc), _texts(cc)) in one pass over the codings."""
    if not cc:
        return (), []
    text = cc.get("text")
    texts = [text] if text else []
    if "coding" not in cc:
        return (), texts
    codes = []
    for c in cc["coding"]:
        if code := c.get("code"):
            codes.append((c.get("system") or "", code))
        if display := c.get("display"):
            texts.append(display)
    return tuple(codes), texts


def _label(cc: _CC | None) -> str:
    return _label_of(*_concept(cc))


def _label_of(codes: tuple[tuple[str, str], ...], texts: list[str]) -> str:
    """_label from the concept's codings and texts when they are at hand already."""
    if texts:
        return texts[0]
    return codes[0][1] if codes else ""


def _datetime(text: str) -> tuple[datetime, str] | None:
    """terms.parse_fhir_datetime of a value the slim model validated as a dateTime (_DateTime): there a
    20-character value ending in Z can only be YYYY-MM-DDThh:mm:ssZ, which is read as that function
    reads it, without matching its pattern again."""
    if len(text) == 20 and text[19] == "Z":
        return datetime.fromisoformat(text).astimezone(UTC), "time"
    return terms.parse_fhir_datetime(text)


def _when(*candidates: str | None) -> tuple[datetime, str] | None:
    """The first date given, of validated dateTime values."""
    for c in candidates:
        if c:
            return _datetime(c)
    return None


def _source(r: _Resource, rtype: str) -> str:
    rid = r.get("id")
    return f"{rtype}/{rid}" if rid else rtype


_MEMO_MAX_CHARS = 512  # keys with more text than this are computed every time (the memo stays small)


def _chars(key: Any) -> int:
    if isinstance(key, str):
        return len(key)
    if isinstance(key, (tuple, frozenset)):
        return sum(_chars(k) for k in key)
    return 0


def _short(key: Any) -> bool:
    return _chars(key) <= _MEMO_MAX_CHARS


def _memo(fn: Callable[..., _T]) -> Memo[tuple[Any, ...], _T]:
    """fn(*key) remembered by its argument tuple: laboratory, procedure, drug and problem-list codes and
    names repeat across patients (2048 keys, then it starts over; long texts are not stored)."""
    return Memo(lambda key: fn(*key), 2048, admit=_short)


_plex_modality = _memo(terms.plex_modality)
_condition_kind = _memo(terms.condition_kind)
_identify = _memo(drugs.identify)
_lymphocyte_kind = _memo(terms.lymphocyte_kind)
# by the texts of a session or order (notes and names recur)
_plasma_volumes: Memo[tuple[str | None, ...], float | None] = Memo(terms.plasma_volumes, 2048, admit=_short)

_PATIENT_REF = re.compile(r"(?:^|/)Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]*)?$")


def _other_patient(ref: str, patient_id: str) -> bool:
    """The subject reference names another patient."""
    m = _PATIENT_REF.search(ref)
    return m is not None and m.group(1) != patient_id


_MEDICATION_REF = re.compile(r"(?:^|/)(Medication/[A-Za-z0-9\-.]{1,64})(?:/_history/[^/]*)?$")
_UCUM = "http://unitsofmeasure.org"


def _numeric(o: _Observation) -> tuple[float, str | None, str, str] | values.Problem | None:
    """(value, comparator, unit for conversion, unit as reported) from valueQuantity or valueString;
    a Problem when a valueString's number cannot be read one way only (cds/fhir_values.py)."""
    q = o.get("valueQuantity")
    if q is not None and (value := q.get("value")) is not None:
        code, qunit = q.get("code"), q.get("unit")
        unit = (code if q.get("system") == _UCUM and code else None) or qunit or code or ""
        return value, q.get("comparator"), unit, qunit or code or ""
    if vs := o.get("valueString"):
        split = values.split_value_string(vs)
        if split is None or isinstance(split, values.Problem):
            return split
        comparator, number, unit = split
        return number, comparator, unit, unit
    if (vi := o.get("valueInteger")) is not None:
        return float(vi), None, "", ""
    return None


def _reported(value: float, comparator: str | None, unit: str) -> str:
    return f"{comparator or ''}{value:g} {unit}".strip()


def _reported_raw(o: _Observation) -> str:
    """An Observation's value as the lab sent it, for the card."""
    q = o.get("valueQuantity")
    if q is not None and (value := q.get("value")) is not None:
        return _reported(value, q.get("comparator"), q.get("unit") or q.get("code") or "")
    if vs := o.get("valueString"):
        return vs
    if (vcc := o.get("valueCodeableConcept")) is not None:
        return _label(vcc)
    if (vi := o.get("valueInteger")) is not None:
        return str(vi)
    if (vb := o.get("valueBoolean")) is not None:
        return str(vb).lower()
    return ""


# ================================================================ resources -> domain

MAX_OBSERVATION_AGE = timedelta(days=730)
_MAX_LEVEL_UG_PER_ML = 1000.0
_MAX_LYMPHOCYTES_10E9_PER_L = 1000.0
_WEIGHT_KG_RANGE = (0.5, 500.0)  # outside: a unit or typing error, named rather than used
_STATEMENT_ACTIVE = frozenset({"active", "intended", "on-hold"})
_REQUEST_ACTIVE = frozenset({"active", "on-hold"})
_ADMINISTRATION_ACTIVE = frozenset({"in-progress", "on-hold"})
# a statement of a dose that was or may have been taken (`unknown`: the cautious reading, as for
# administrations); never `intended` (a plan), `not-taken` or `entered-in-error`
_STATEMENT_GIVEN = frozenset({"active", "completed", "stopped", "on-hold", "unknown"})
# an administration that was or may have been started: some drug may be in the blood (R4 `stopped` =
# halted before all of it occurred; `unknown` = the status is not known); only `not-done` says no drug
_ADMINISTRATION_GIVEN = frozenset({"completed", "in-progress", "on-hold", "stopped", "unknown"})
_CONDITION_INACTIVE = frozenset({"inactive", "remission", "resolved"})
_CONDITION_EXCLUDED = frozenset({"refuted", "entered-in-error"})
_LEVEL = "natalizumab level"
_DOSE = "natalizumab dose"


@dataclass
class Parsed:
    """What parse_resources made of a set of resources."""

    facts: PatientFacts
    skipped: int = 0  # malformed (or, with strict_fhir, R4B-invalid) entries
    other_patient: int = 0  # entries whose subject is another patient (left out)


_Status = tuple[datetime, bool, str]  # (when, answer, source) of a pregnancy / breastfeeding record


@dataclass
class _Acc:
    levels: list[NatalizumabLevel] = field(default_factory=list)
    sessions: list[PlexSession] = field(default_factory=list)
    doses: list[NatalizumabDose] = field(default_factory=list)
    antibodies: list[AntibodyResult] = field(default_factory=list)
    medications: list[MedicationUse] = field(default_factory=list)
    lymphocytes: list[LymphocyteCount] = field(default_factory=list)
    conditions: list[ConditionFact] = field(default_factory=list)
    unusable: list[UnusableValue] = field(default_factory=list)
    birth_date: date | None = None
    pregnancy: list[_Status] = field(default_factory=list)
    pregnancy_conditions: list[str] = field(default_factory=list)
    breastfeeding: list[_Status] = field(default_factory=list)
    weights: list[tuple[datetime, float, str]] = field(default_factory=list)


class _Context:
    def __init__(self, settings: Any, now: datetime, medications: dict[str, _Medication]) -> None:
        self.level_codes = terms.parse_code_list(getattr(settings, "natalizumab_level_codes", []) or [])
        self.plex_codes = terms.parse_code_list(getattr(settings, "plex_codes", []) or [])
        limit = getattr(settings, "natalizumab_assay_limit_ug_per_ml", None)
        self.assay_limit: float | None = float(limit) if limit else None
        self.now = now
        self.oldest = now - MAX_OBSERVATION_AGE
        self.latest_dose = now + timedelta(days=1)
        self.medications = medications
        self.acc = _Acc()


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


def _observation_kind_uncached(
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


_observation_kind = _memo(_observation_kind_uncached)


_Hint = tuple[tuple[tuple[str, str], ...], str, str | None]  # (codes, text, kind) of an Observation's code


def _read_observation(raw: dict[str, Any], level_codes: frozenset[tuple[str, str]]) -> _Hint | bool:
    """Cheap look at a raw Observation's code: False when it names nothing read here.

    A broad `labs` search returns every recent laboratory result; only the few that can be a
    natalizumab level, antibody or lymphocyte count are worth validating. Anything odd → True, so
    that validation decides (and counts it when malformed). When every string is plain (no empty
    code, text or display, no null system) the codes and text are the ones _observation would read
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
    kind = _observation_kind[codes_t, joined, level_codes]
    if kind is None:
        return False
    return (codes_t, joined, kind) if plain else True


def _observation(o: _Observation, ctx: _Context, hint: _Hint | None = None) -> None:
    if o["status"] in ("entered-in-error", "cancelled"):
        return
    if hint is not None:  # what the pre-filter read from the same code
        codes, text, kind = hint
    else:
        codes, text = _codings(o["code"]), " ".join(_texts(o["code"]))
        kind = _observation_kind[codes, text, ctx.level_codes]
    if kind is None:
        return
    if effective := o.get("effectiveDateTime"):  # the usual case, as _when below
        when = _datetime(effective)
    else:
        period = o.get("effectivePeriod")
        when = _when(
            period.get("start") if period else None,
            period.get("end") if period else None,
            o.get("effectiveInstant"),
            o.get("issued"),
        )
    if when is not None and when[0] < ctx.oldest:
        return  # outside the 730-day window
    src = _source(o, "Observation")
    at = when[0] if when else None
    if kind == "antibody":
        _antibody(o, at, src, ctx)
    elif kind == "unclear-antibody":
        ctx.acc.unusable.append(
            UnusableValue(
                "natalizumab antibody result",
                "not recognisably an anti-natalizumab (anti-drug) antibody test",
                f"{text}: {_reported_raw(o)}".strip(": "),
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
    comparator: str | None
    value: float
    unit: str  # as reported


@dataclass(frozen=True, slots=True)
class _Qualitative:
    words: str  # the lab's own words ("Not detected", "<0.1")
    verdict: str  # "below" (the assay's limit) | "detected"
    value: float | None = None  # "<0.1" without a unit: 0.1, in the referenceRange's unit
    comparator: str = "<"


def _level_value(o: _Observation) -> _Measured | _Qualitative | values.Problem | None:
    """What a natalizumab Observation's value says; None when it holds no value at all."""
    q = o.get("valueQuantity")
    if q is not None and (value := q.get("value")) is not None:
        comparator, unit, code = q.get("comparator"), q.get("unit"), q.get("code")
        if not (unit or code) and comparator in ("<", "<="):
            return _Qualitative(_reported(value, comparator, ""), "below", value, comparator)
        converted = values.mass_concentration(value, unit, code, q.get("system"))
        if isinstance(converted, values.Problem):
            return converted
        return _Measured(converted, comparator, value, unit or code or "")
    if vs := o.get("valueString"):
        split = values.split_value_string(vs)
        if isinstance(split, values.Problem):
            return split
        if split is not None:
            cmp, number, text_unit = split
            if not text_unit and cmp in ("<", "<="):
                return _Qualitative(vs.strip(), "below", number, cmp)
            in_ug = values.mass_concentration(number, text_unit, None, None)
            if isinstance(in_ug, values.Problem):
                return in_ug
            return _Measured(in_ug, cmp, number, text_unit)
        verdict = values.level_words(vs)
        return (
            _Qualitative(vs.strip(), verdict) if verdict else values.Problem("no-value", "no numeric value")
        )
    if (vcc := o.get("valueCodeableConcept")) is not None:
        codes, texts = _concept(vcc)
        verdict = values.level_codes(codes) or next((v for t in texts if (v := values.level_words(t))), None)
        words = _label_of(codes, texts)
        return _Qualitative(words, verdict) if verdict else values.Problem("no-value", "no numeric value")
    if o.get("valueInteger") is not None:
        return values.Problem("no-unit", "no unit given")
    if (vb := o.get("valueBoolean")) is not None:
        return _Qualitative(str(vb).lower(), "detected" if vb else "below")
    for interp in o.get("interpretation", ()):  # no value: a "not detected" interpretation alone
        codes, texts = _concept(interp)
        verdict = values.level_codes(codes) or next((v for t in texts if (v := values.level_words(t))), None)
        if verdict:
            return _Qualitative(_label_of(codes, texts), verdict)
    return None


def _specimen(o: _Observation, code_texts: str) -> values.SpecimenKind | values.Problem:
    """Serum, plasma or unspecified from Observation.specimen (display, contained Specimen.type) and
    the code's text and displays (cds/fhir_values.py specimen_of)."""
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
                    codes, type_texts = _concept(spec.get("type"))
                    texts += type_texts
        if texts or codes:
            stated.append((codes, tuple(texts)))
    return values.specimen_of(stated, [code_texts])


def _range_quantities(o: _Observation) -> list[_Quantity]:
    """referenceRange high then low quantities that hold a value."""
    out: list[_Quantity] = []
    for rr in o.get("referenceRange", ()):
        for q in (rr.get("high"), rr.get("low")):
            if q is not None and q.get("value") is not None:
                out.append(q)
    return out


def _assay_limit(o: _Observation, r: _Qualitative, ctx: _Context) -> float | values.Problem | None:
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
    o: _Observation, code_text: str, when: tuple[datetime, str] | None, src: str, ctx: _Context
) -> None:
    at = when[0] if when else None

    def unusable(code: str, reason: str, reported: str = "") -> None:
        ctx.acc.unusable.append(UnusableValue(_LEVEL, reason, reported or _reported_raw(o), at, src, code))

    specimen = _specimen(o, code_text)
    if isinstance(specimen, values.Problem):
        unusable(specimen.code, f"{specimen.reason}: not used as a serum level")
        return
    read = _level_value(o)
    if read is None:
        if o["status"] not in ("registered", "preliminary"):
            unusable("no-value", "no numeric value")
        return
    if isinstance(read, values.Problem):
        unusable(read.code, read.reason)
        return
    if isinstance(read, _Qualitative) and read.verdict == "detected":
        unusable("qualitative-detected", f"'{read.words}': natalizumab detected but not quantified")
        return
    limit: float | None = None
    if isinstance(read, _Qualitative):
        found = _assay_limit(o, read, ctx)
        if isinstance(found, values.Problem):
            unusable(found.code, found.reason)
            return
        if found is None:
            unusable(
                "qualitative-no-limit",
                f"'{read.words}' is below the assay's limit, but no limit is known "
                "(no referenceRange, no configured assay limit)",
            )
            return
        limit = found
    else:
        reason = None
        if read.value < 0:
            reason = ("negative", "negative value")
        elif read.value == 0 and read.comparator is None:
            reason = ("zero", "zero without a '<' comparator")
        elif read.ug_per_ml > _MAX_LEVEL_UG_PER_ML:
            reason = ("implausible", "above 1000 µg/mL, not plausible")
        if reason is not None:
            unusable(*reason)
            return
    if when is None or at is None:
        unusable("no-date", "no sample date")
        return
    if when[1] in ("year", "month"):
        unusable("date-imprecise", "sample date is not precise to the day")
        return
    date_only = when[1] == "day"
    if isinstance(read, _Qualitative) and limit is not None:
        level = NatalizumabLevel(
            limit,
            at,
            read.comparator,  # type: ignore[arg-type]
            read.value,
            "",
            src,
            specimen,
            date_only,
            read.words,
        )
    else:
        assert isinstance(read, _Measured)
        level = NatalizumabLevel(
            read.ug_per_ml,
            at,
            read.comparator,  # type: ignore[arg-type]
            read.value,
            read.unit,
            src,
            specimen,
            date_only,
        )
    ctx.acc.levels.append(level)


def _status(o: _Observation, kind: str, at: datetime | None, src: str, ctx: _Context) -> None:
    """A pregnancy / breastfeeding status or body weight Observation (codes in cds/fhir_terms.py)."""
    if kind == "weight":
        q = o.get("valueQuantity")
        value = q.get("value") if q is not None else None
        if q is None or value is None:
            return
        unit = (q.get("code") if q.get("system") == _UCUM else None) or q.get("unit") or q.get("code") or ""
        kg = terms.weight_kg(value, unit)
        low, high = _WEIGHT_KG_RANGE
        if kg is None or not low <= kg <= high or at is None:
            why = (
                "no date"
                if kg is not None and at is None
                else f"not a body weight in kg ({unit or 'no unit'})"
            )
            ctx.acc.unusable.append(
                UnusableValue("body weight", why, _reported(value, None, unit), at, src, "weight")
            )
            return
        ctx.acc.weights.append((at, kg, src))
        return
    texts: list[str] = []
    codes: tuple[tuple[str, str], ...] = ()
    if (vcc := o.get("valueCodeableConcept")) is not None:
        codes, texts = _concept(vcc)
    if vs := o.get("valueString"):
        texts.append(vs)
    answer = terms.status_answer(kind, codes, texts, o.get("valueBoolean"))
    if answer is None:
        return  # unknown: nothing on record
    record = (at or datetime.min.replace(tzinfo=UTC), answer, src)
    (ctx.acc.pregnancy if kind == "pregnancy" else ctx.acc.breastfeeding).append(record)


def _patient(p: _Patient, ctx: _Context, _hint: None = None) -> None:
    if birth := p.get("birthDate"):
        ctx.acc.birth_date = _latest_day(birth)


def _latest_day(text: str) -> date:
    """The last day a FHIR date may mean ("1984" -> 1984-12-31): an age is never overestimated, so a
    patient who may be under 18 is named as such."""
    parts = [int(x) for x in text.split("-")]
    year = parts[0]
    month = parts[1] if len(parts) > 1 else 12
    day = parts[2] if len(parts) > 2 else calendar.monthrange(year, month)[1]
    return date(year, month, day)


def _antibody(o: _Observation, at: datetime | None, src: str, ctx: _Context) -> None:
    positive: bool | None = None
    reported = ""
    if (vb := o.get("valueBoolean")) is not None:
        positive, reported = vb, str(vb).lower()
    elif (vcc := o.get("valueCodeableConcept")) is not None:
        reported = _label(vcc)
        for word in [*(c for _, c in _codings(vcc)), *_texts(vcc)]:
            if (positive := terms.qualitative(word)) is not None:
                break
    elif vs := o.get("valueString"):
        reported = vs
        positive = terms.qualitative(vs)
    elif (vq := o.get("valueQuantity")) is not None and vq.get("value") is not None:
        reported = _reported(vq["value"], vq.get("comparator"), vq.get("unit") or "")  # type: ignore[arg-type]
    if positive is None:
        for interp in o.get("interpretation", ()):
            for word in [*(c for _, c in _codings(interp)), *_texts(interp)]:
                if (positive := terms.qualitative(word)) is not None:
                    break
            if positive is not None:
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


def _lymphocytes(
    o: _Observation, codes: Any, text: str, at: datetime | None, src: str, ctx: _Context
) -> None:
    lk = _lymphocyte_kind[codes, text]
    num = _numeric(o)
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
    reported = _reported(value, comparator, reported_unit)
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


def _plasma_volumes_from(extensions: Iterable[_Extension], texts: tuple[str | None, ...]) -> float | None:
    for ext in extensions:
        url = ext["url"].lower()
        if "plasma" in url and "volume" in url:
            decimal, quantity = ext.get("valueDecimal"), ext.get("valueQuantity")
            value = decimal if decimal is not None else (quantity.get("value") if quantity else None)
            if value is not None and 0 < value <= 5:
                return float(value)
            vs = ext.get("valueString")
            if vs and (pv := terms.plasma_volumes([vs + " plasma volumes"])):
                return pv
    return _plasma_volumes[texts]  # empty texts are passed over


def _procedure(p: _Procedure, ctx: _Context, _hint: None = None) -> None:
    if p["status"] != "completed":
        return
    code = p.get("code")
    codes, texts = _concept(code)
    modality = _plex_modality[codes, tuple(texts), ctx.plex_codes]
    if modality is None:
        return
    src = _source(p, "Procedure")
    period = p.get("performedPeriod")
    when = _when(p.get("performedDateTime"), period.get("start") if period else None)
    if when is None:
        ctx.acc.unusable.append(UnusableValue("PLEX procedure", "no date performed", _label(code), None, src))
        return
    volumes = _plasma_volumes_from(p.get("extension", ()), (*(n["text"] for n in p.get("note", ())), *texts))
    end = _when(period.get("end") if period else None)
    ended_at = end[0] if end is not None and end[1] == "time" and end[0] >= when[0] else None
    ctx.acc.sessions.append(
        PlexSession(when[0], modality, volumes, src, ended_at, when[1] != "time")  # type: ignore[arg-type]
    )


def _medication_concept(m: _MedicationUse, ctx: _Context) -> tuple[tuple[tuple[str, str], ...], str, str]:
    """(codes, label as written, text for identification) of the medication a statement/request names."""
    if (cc := m.get("medicationCodeableConcept")) is not None:
        concept_codes, concept_texts = _concept(cc)
        return concept_codes, _label_of(concept_codes, concept_texts), " ".join(concept_texts)
    ref = m.get("medicationReference")
    if ref is None:
        return (), "", ""
    med: _Medication | None = None
    reference, display = ref.get("reference"), ref.get("display")
    if reference and reference.startswith("#"):
        for item in m.get("contained", ()):
            if isinstance(item, dict) and item.get("id") == reference[1:]:
                try:
                    med = _MODELS["Medication"].validate_python(item)
                except ValidationError:
                    med = None
                break
    elif reference:
        found = _MEDICATION_REF.search(reference)
        med = ctx.medications.get(found.group(1)) if found else None  # a Medication in the same read
    if med is None:
        return (), display or "", display or ""
    med_code = med.get("code")
    codes = list(_codings(med_code))
    texts = _texts(med_code)
    for ing in med.get("ingredient", ()):
        concept = ing.get("itemCodeableConcept")
        codes.extend(_codings(concept))
        texts.extend(_texts(concept))
    label = display or _label(med_code) or (texts[0] if texts else "")
    return tuple(codes), label, " ".join([display or "", *texts]).strip()


def _dose_facts(dosages: Iterable[_Dosage]) -> tuple[float | None, float | None]:
    dose_mg = interval = None
    for d in dosages:
        for dr in d.get("doseAndRate", ()):
            q = dr.get("doseQuantity")
            if (
                dose_mg is None
                and q
                and q.get("value") is not None
                and (q.get("code") or q.get("unit") or "").lower() == "mg"
            ):
                dose_mg = q.get("value")
        timing = d.get("timing")
        if interval is None and timing is not None:
            r = timing.get("repeat")
            if r is not None:
                interval = terms.interval_days(r.get("frequency"), r.get("period"), r.get("periodUnit"))
            if interval is None and (tcode := timing.get("code")) is not None:
                interval = terms.interval_from_text(" ".join(_texts(tcode)))
        if interval is None:
            interval = terms.interval_from_text(d.get("text"))
    return dose_mg, interval


def _medication(m: _MedicationStatement | _MedicationRequest, ctx: _Context, _hint: None = None) -> None:
    status = m["status"]
    if status == "entered-in-error":
        return
    codes, label, text = _medication_concept(m, ctx)
    ingredient = _identify[codes, text or label]
    if m["resourceType"] == "MedicationStatement":
        rtype, record, active = "MedicationStatement", "statement", status in _STATEMENT_ACTIVE
        p = m.get("effectivePeriod")
        # a dose date only: effectivePeriod.start is the first dose and dateAsserted when it was recorded
        when = _when(m.get("effectiveDateTime"), p.get("end") if p else None)
    else:  # an order: authoredOn is when it was written, never when a dose was given
        rtype, record, active = "MedicationRequest", "request", status in _REQUEST_ACTIVE
        when = _when(m.get("authoredOn"))
    src = _source(m, rtype)
    at = when[0] if when else None
    ctx.acc.medications.append(
        MedicationUse(
            ingredient,
            label or "medication without a name",
            active,
            status,
            codes,
            at,
            src,
            record,  # type: ignore[arg-type]
        )
    )
    if record == "statement" and ingredient == "natalizumab" and status in _STATEMENT_GIVEN and when:
        if when[0] > ctx.latest_dose:
            return  # a statement's period may end in the future: a plan, not a dose
        dose_mg, interval = _dose_facts(m.get("dosage", ()))  # type: ignore[arg-type]
        _dose(when, dose_mg, interval, src, label, ctx)


def _administration(m: _MedicationAdministration, ctx: _Context, _hint: None = None) -> None:
    """An administration given (or started): a MedicationUse of any drug, and for natalizumab a dose."""
    status = m["status"]
    if status == "entered-in-error":
        return
    codes, label, text = _medication_concept(m, ctx)
    ingredient = _identify[codes, text or label]
    p = m.get("effectivePeriod")
    when = _when(m.get("effectiveDateTime"), p.get("end") if p else None, p.get("start") if p else None)
    src = _source(m, "MedicationAdministration")
    at = when[0] if when else None
    ctx.acc.medications.append(
        MedicationUse(
            ingredient,
            label or "medication without a name",
            status in _ADMINISTRATION_ACTIVE,
            status,
            codes,
            at,
            src,
            "administration",
        )
    )
    if ingredient != "natalizumab" or status not in _ADMINISTRATION_GIVEN:
        return
    if when is None:
        ctx.acc.unusable.append(UnusableValue(_DOSE, "no administration date", label, None, src, "no-date"))
        return
    dosage = m.get("dosage")
    dose = dosage.get("dose") if dosage else None
    dose_mg = None
    if dose is not None and (dose.get("code") or dose.get("unit") or "").strip().lower() == "mg":
        dose_mg = dose.get("value")
    _dose(when, dose_mg, None, src, label, ctx)


def _dose(
    when: tuple[datetime, str],
    dose_mg: float | None,
    interval: float | None,
    src: str,
    label: str,
    ctx: _Context,
) -> None:
    """A natalizumab dose given at `when`; one dated in the future (an administration: a data error) or
    only to the month is named, not used."""
    at, precision = when
    if at > ctx.latest_dose:
        ctx.acc.unusable.append(UnusableValue(_DOSE, "dated in the future", label, at, src, "future-date"))
        return
    if precision in ("year", "month"):
        ctx.acc.unusable.append(
            UnusableValue(_DOSE, "dose date is not precise to the day", label, at, src, "date-imprecise")
        )
        return
    ctx.acc.doses.append(NatalizumabDose(at, dose_mg, interval, src, precision == "day"))


def _condition(c: _Condition, ctx: _Context, _hint: None = None) -> None:
    verification = {code for _, code in _codings(c.get("verificationStatus"))}
    if verification & _CONDITION_EXCLUDED:
        return
    code = c.get("code")
    codes, texts = _concept(code)
    kind = _condition_kind[codes, " ".join(texts)]
    descriptions: list[str] = []
    body_site_codes: list[tuple[str, str]] = []
    for site in c.get("bodySite", ()):
        descriptions.extend(_texts(site))
        body_site_codes.extend(_codings(site))
    if notes := c.get("note"):
        descriptions.extend(n["text"] for n in notes)
    for stage in c.get("stage", ()):
        descriptions.extend(_texts(stage.get("summary")))
    for ev in c.get("evidence", ()):
        for cc in ev.get("code", ()):
            descriptions.extend(_texts(cc))
        descriptions.extend(display for d in ev.get("detail", ()) if (display := d.get("display")))
    onset_period = c.get("onsetPeriod")
    onset = _when(c.get("onsetDateTime"), onset_period.get("start") if onset_period else None)
    clinical = {code for _, code in _codings(c.get("clinicalStatus"))}
    label = " ".join(texts)
    if (
        not clinical & _CONDITION_INACTIVE
        and terms.names_pregnancy(codes, label)
        and not _HISTORY.search(label)
    ):
        ctx.acc.pregnancy_conditions.append(_source(c, "Condition"))
    ctx.acc.conditions.append(
        ConditionFact(
            kind,  # type: ignore[arg-type]
            _label_of(codes, texts),
            codes,
            tuple(body_site_codes),
            tuple(dict.fromkeys(d for d in descriptions if d.strip())) if descriptions else (),
            onset[0] if onset else None,
            not (clinical & _CONDITION_INACTIVE),
            _source(c, "Condition"),
        )
    )


_HISTORY = re.compile(r"\bhistory\b|\bprevious\b|\bpast\b", re.IGNORECASE)

_HANDLERS: dict[str, Any] = {
    "Observation": _observation,
    "Procedure": _procedure,
    "MedicationStatement": _medication,
    "MedicationRequest": _medication,
    "MedicationAdministration": _administration,
    "Condition": _condition,
    "Patient": _patient,
}


_BY_DRAWN = operator.attrgetter("drawn_at")
_BY_PERFORMED = operator.attrgetter("performed_at")
_BY_GIVEN = operator.attrgetter("given_at")
_BY_TESTED = operator.attrgetter("tested_at")


def parse_resources(
    resources: Iterable[Any],
    settings: Any,
    *,
    patient_id: str | None = None,
    now: datetime | None = None,
) -> Parsed:
    """Resources (dicts, in any order, duplicates allowed) -> PatientFacts. Never raises for bad data."""
    now = now or datetime.now(UTC)
    strict = bool(getattr(settings, "strict_fhir", False))
    level_codes = terms.parse_code_list(getattr(settings, "natalizumab_level_codes", []) or [])
    candidates: list[dict[str, Any]] = []
    hints: list[_Hint | None] = []  # per candidate: its Observation code as the pre-filter read it
    seen: set[tuple[str, str]] = set()
    skipped = other = 0
    for raw in resources:
        rtype = raw.get("resourceType") if isinstance(raw, dict) else None
        if not isinstance(rtype, str):  # a list or object here must not reach the dict lookup
            skipped += 1  # not a resource at all
            continue
        if rtype not in _MODELS:
            continue  # a resource type nothing here reads
        rid = raw.get("id")
        if isinstance(rid, str):
            key = (rtype, rid)
            if key in seen:
                continue
            seen.add(key)
        hint = None
        if rtype == "Observation":
            read = _read_observation(raw, level_codes)
            if read is False:
                continue
            if read is not True:
                hint = read
        candidates.append(raw)
        hints.append(hint)
    models: list[_Resource | None] | None = None
    if not strict and candidates:
        try:  # one call into pydantic-core for all entries; any failure: one by one, to skip and count it
            models = list(_ALL_MODELS.validate_python(candidates))
        except ValidationError:
            models = None
    if models is None:
        models = [_validate(raw, strict) for raw in candidates]
    refs: dict[str, bool] = {}  # subject reference -> another patient (resolved once per read)
    todo: list[tuple[Any, _Resource, _Hint | None]] = []  # (handler, resource, hint) in order
    medications: dict[str, _Medication] = {}  # all read before any handler: statements may name them
    handlers = _HANDLERS
    for model, hint in zip(models, hints, strict=True):
        if model is None:
            skipped += 1
            continue
        subject: _Reference | None = model.get("subject")  # type: ignore[assignment]  # None where there is none
        if subject and patient_id and (ref := subject.get("reference")):
            if (known := refs.get(ref)) is None:
                known = refs[ref] = _other_patient(ref, patient_id)
            if known:
                other += 1
                continue
        rtype = model["resourceType"]  # type: ignore[typeddict-item]
        if rtype == "Patient" and patient_id and model.get("id") not in (None, patient_id):
            other += 1
            continue
        if (handler := handlers.get(rtype)) is not None:
            todo.append((handler, model, hint))
        elif rtype == "Medication" and (rid := model.get("id")):
            medications[f"Medication/{rid}"] = model  # type: ignore[assignment]
    ctx = _Context(settings, now, medications)
    for handler, model, hint in todo:
        try:
            handler(model, ctx, hint)
        except (ValueError, TypeError, ArithmeticError):  # e.g. an impossible date like 2024-02-30
            skipped += 1
    a = ctx.acc
    epoch = datetime.min.replace(tzinfo=UTC)
    facts = PatientFacts(
        levels=tuple(sorted(a.levels, key=_BY_DRAWN)),
        sessions=tuple(sorted(a.sessions, key=_BY_PERFORMED)),
        doses=tuple(sorted(a.doses, key=_BY_GIVEN)),
        antibodies=tuple(sorted(a.antibodies, key=_BY_TESTED)),
        medications=tuple(sorted(a.medications, key=lambda x: (x.last_date or epoch, x.source))),
        lymphocytes=tuple(sorted(a.lymphocytes, key=_BY_DRAWN)),
        conditions=tuple(a.conditions),
        unusable=tuple(a.unusable),
        patient=_patient_details(a),
    )
    return Parsed(facts, skipped, other)


def _patient_details(a: _Acc) -> PatientDetails:
    """Birth date; the latest pregnancy and breastfeeding status (a tie of opposite answers at one time
    reads as yes); an active pregnancy Condition makes `pregnant` True whatever a status says; the
    latest body weight."""
    pregnant: bool | None = None
    pregnancy_source = ""
    if a.pregnancy:
        _, pregnant, pregnancy_source = max(a.pregnancy, key=lambda r: (r[0], r[1]))
    if a.pregnancy_conditions and not pregnant:
        pregnant, pregnancy_source = True, a.pregnancy_conditions[0]
    breastfeeding: bool | None = None
    breastfeeding_source = ""
    if a.breastfeeding:
        _, breastfeeding, breastfeeding_source = max(a.breastfeeding, key=lambda r: (r[0], r[1]))
    weight_kg = weight_at = None
    if a.weights:
        weight_at, weight_kg, _ = max(a.weights, key=lambda r: r[0])
    return PatientDetails(
        a.birth_date,
        pregnant,
        pregnancy_source,
        breastfeeding,
        breastfeeding_source,
        weight_kg,
        weight_at,
    )


# ================================================================ draft orders


def _norm_selection(value: str) -> str:
    parts = value.strip().rstrip("/").split("/")
    return "/".join(parts[-2:]) if len(parts) >= 2 else value.strip()


def _safe_when(*candidates: str | None) -> datetime | None:
    try:
        found = _when(*candidates)
    except (ValueError, OverflowError):  # impossible dates; year 1 with a +hh:mm offset is before UTC year 1
        return None
    return found[0] if found else None


_DEFAULT_PLAN = PlexPlan()
_VOLUME_UNITS = re.compile(r"^(m|d|c|u)?l$", re.IGNORECASE)


def _plan(sr: _ServiceRequest, modality: str) -> PlexPlan:
    ordered: int | None = None
    q = sr.get("quantityQuantity")
    qvalue = q.get("value") if q is not None else None
    if (
        q is not None
        and qvalue is not None
        and 0 < qvalue <= 100
        and float(qvalue).is_integer()
        and not _VOLUME_UNITS.match((q.get("code") or q.get("unit") or "").strip())
    ):
        ordered = int(qvalue)
    timing = sr.get("occurrenceTiming")
    repeat = timing.get("repeat") if timing else None
    if ordered is None and repeat is not None and repeat.get("count"):
        ordered = repeat.get("count")
    texts = [
        *(n["text"] for n in sr.get("note", ())),
        sr.get("patientInstruction"),
        *(t for cc in sr.get("orderDetail", ()) for t in _texts(cc)),
    ]
    interval = (
        terms.interval_days(repeat.get("frequency"), repeat.get("period"), repeat.get("periodUnit"))
        if repeat
        else None
    )
    if interval is None and timing is not None and (tcode := timing.get("code")) is not None:
        interval = terms.interval_from_text(" ".join(_texts(tcode)))
    if interval is None:
        interval = next((i for t in texts if (i := terms.interval_from_text(t))), None)
    if interval is None or not 0.5 <= interval <= 14:
        interval = _DEFAULT_PLAN.interval_days
    occurrence = sr.get("occurrencePeriod")
    first = _safe_when(
        sr.get("occurrenceDateTime"),
        occurrence.get("start") if occurrence else None,
        min(timing["event"]) if timing and timing.get("event") else None,
        bounds.get("start") if repeat and (bounds := repeat.get("boundsPeriod")) else None,
    )
    volumes = _plasma_volumes_from(sr.get("extension", ()), (*texts, *_texts(sr.get("code"))))
    return PlexPlan(
        plasma_volumes_per_session=volumes or _DEFAULT_PLAN.plasma_volumes_per_session,
        interval_days=interval,
        ordered_sessions=ordered,
        modality=modality,  # type: ignore[arg-type]
        first_session_at=first,
    )


def plex_orders(draft_orders: Any, selections: list[str] | None, settings: Settings) -> list[PlexOrder]:
    """The plasma exchange / immunoadsorption ServiceRequests a hook is about.

    order-select: only the entries named in `selections`; order-sign (`selections is None`): every
    entry, whatever its status (re-signed orders included) except entered-in-error. Other resource
    types are ignored; a malformed entry is skipped. `draftOrders` must be a Bundle (its `type` may
    be missing, as the CDS Hooks Sandbox sends it), else BadHookRequest. A matched order is also
    validated with fhir.resources R4B (in full once per shape, cds.r4b_shape). `reference` is "" when
    the draft has no id.
    """
    if not isinstance(draft_orders, dict) or draft_orders.get("resourceType") != "Bundle":
        raise BadHookRequest("context.draftOrders must be a FHIR Bundle", code="draft-orders")
    entries = draft_orders.get("entry", [])
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise BadHookRequest("context.draftOrders.entry must be a list", code="draft-orders")
    wanted = None if selections is None else {_norm_selection(s) for s in selections if isinstance(s, str)}
    extra = terms.parse_code_list(getattr(settings, "plex_codes", []) or [])
    orders: list[PlexOrder] = []
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or resource.get("resourceType") != "ServiceRequest":
            continue
        rid = resource.get("id")
        reference = f"ServiceRequest/{rid}" if isinstance(rid, str) and rid else ""
        if wanted is not None and reference not in wanted:
            continue
        sr: _ServiceRequest | None = _validate(resource, strict=False)  # type: ignore[assignment]
        if sr is None:
            log.warning("draft ServiceRequest skipped: malformed")
            continue
        if sr["status"] == "entered-in-error":
            continue
        sr_code = sr.get("code")
        modality = _plex_modality[_codings(sr_code), tuple(_texts(sr_code)), extra]
        if modality is None:
            continue
        key = r4b_shape.parsed_json_key(resource)  # draftOrders come from the request's JSON
        if not r4b_shape.is_known_valid(key):  # full R4B once per shape of draft order
            if not r4b_valid(resource):
                log.warning("draft ServiceRequest skipped: not valid FHIR R4B")
                continue
            r4b_shape.remember(key)
        orders.append(
            PlexOrder(reference, _plan(sr, modality), _label(sr_code) or "plasma exchange", resource)
        )
    return orders


# ================================================================ reading: prefetch, then fhirServer

_KEY_TYPES: dict[str, frozenset[str]] = {
    "patient": frozenset({"Patient"}),
    "labs": frozenset({"Observation"}),
    "lymphocytes": frozenset({"Observation"}),
    "patientStatus": frozenset({"Observation"}),
    "medicationStatements": frozenset({"MedicationStatement", "Medication"}),
    "medicationRequests": frozenset({"MedicationRequest", "Medication"}),
    "medicationAdministrations": frozenset({"MedicationAdministration", "Medication"}),
    "conditions": frozenset({"Condition"}),
    "procedures": frozenset({"Procedure"}),
}
_KEY_LABELS = {
    "patient": "the patient record",
    "labs": "laboratory results",
    "lymphocytes": "lymphocyte counts",
    "patientStatus": "pregnancy, breastfeeding and weight observations",
    "medicationStatements": "medication statements",
    "medicationRequests": "medication orders",
    "medicationAdministrations": "medication administrations",
    "conditions": "conditions",
    "procedures": "procedures",
}
_MEDICATION_KEYS = ("medicationStatements", "medicationRequests", "medicationAdministrations")
_READ = frozenset({"prefetch", "fhir", "cache"})


class _Unreadable(Exception):
    """`reason` is card text; `kind` a bounded label for metrics."""

    def __init__(self, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


@dataclass
class _Fetched:
    resources: list[Any]
    error: str | None = None  # nothing usable: why
    note: str | None = None  # something read, but not all of it: why
    cached: bool = False


def _next_link(bundle: dict[str, Any]) -> str | None:
    links = bundle.get("link")
    if not isinstance(links, list):
        return None
    for link in links:
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return link["url"] or None
    return None


def _bundle_resources(bundle: dict[str, Any], wanted: frozenset[str] | None = None) -> list[Any] | None:
    """The Bundle's resources (None when `entry` is not a list); with `wanted`, as _key_resources keeps them."""
    entries = bundle.get("entry", [])
    if entries is None:
        return []
    if not isinstance(entries, list):
        return None
    out: list[Any] = []
    for entry in entries:
        if not isinstance(entry, dict):
            out.append(entry)  # counted as skipped when parsed
            continue
        search = entry.get("search")
        if isinstance(search, dict) and search.get("mode") == "outcome":
            continue
        r = entry.get("resource")
        if (
            wanted is None
            or not isinstance(r, dict)
            or not isinstance(rtype := r.get("resourceType"), str)  # kept, counted as skipped when parsed
            or rtype in wanted
        ):
            out.append(r)
    return out


def _default_port(scheme: str) -> int | None:
    return {"http": 80, "https": 443}.get(scheme)


def same_base(url: str, base: str) -> bool:
    """True when `url` has the scheme, host, port and base path of `base` (where the token may go)."""
    plain = normalise_url(url)  # as a server that decodes %2e and resolves `..` reads it: inside too
    if plain is None or (plain != url and not same_base(plain, base)):
        return False
    try:
        u, b = urlsplit(url), urlsplit(base)
        u_port, b_port = u.port or _default_port(u.scheme.lower()), b.port or _default_port(b.scheme.lower())
    except ValueError:
        return False
    if u.scheme.lower() not in ("http", "https") or u.scheme.lower() != b.scheme.lower():
        return False
    if not u.hostname or u.hostname != b.hostname or u_port != b_port or u.username or u.password:
        return False
    segments = u.path.split("/")
    if (
        ".." in segments
        or "." in segments
        or posixpath.normpath(u.path or "/") != (u.path.rstrip("/") or "/")
    ):
        return False
    base_path = b.path.rstrip("/")
    return u.path.rstrip("/") == base_path or u.path.startswith(base_path + "/")


def _key_resources(key: str, resources: list[Any]) -> list[Any]:
    """Keep the resource types a key asks for (and malformed entries, to be counted)."""
    wanted = _KEY_TYPES[key]
    return [
        r
        for r in resources
        if not isinstance(r, dict)
        or not isinstance(r.get("resourceType"), str)
        or r.get("resourceType") in wanted
    ]


CacheKey = tuple[str, str, str]  # (fhirServer, query, sha256 of the token): never the raw token


class ReadCache:
    """The FHIR read cache seam: `get` a fresh entry or None, `set` with a TTL in seconds."""

    async def get(self, key: CacheKey) -> list[Any] | None:
        raise NotImplementedError

    async def set(self, key: CacheKey, resources: list[Any], ttl: float) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


# Python dicts of parsed FHIR JSON take about 5 times the JSON's bytes (measured: a 30 KB prefetch, 143 KiB)
_PY_BYTES_PER_JSON_BYTE = 5


def _resident_estimate(resources: list[Any]) -> int:
    try:  # orjson: about a tenth of json.dumps's time (NaN written as null does not matter to a size)
        return len(orjson.dumps(resources, default=str)) * _PY_BYTES_PER_JSON_BYTE
    except TypeError:  # what orjson refuses (ints beyond 64 bits, lone surrogates, non-str keys)
        pass
    try:
        return len(json.dumps(resources, separators=(",", ":"), default=str)) * _PY_BYTES_PER_JSON_BYTE
    except (TypeError, ValueError):
        return 1 << 20


def _json_loads(raw: bytes | bytearray | str) -> Any:
    """`json.loads(raw)`, about twice as fast: orjson reads what it can, and what it refuses (NaN and
    Infinity, lone surrogates, invalid JSON) goes to json.loads, which accepts or rejects it as before.
    One difference: orjson reads an integer beyond 64 bits as a float (cds/hooks/models.py from_body)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


class MemoryReadCache(ReadCache):
    """In-process (one worker): a TTLCache of (expires, resources, size) on the reader's clock, bounded
    both by entries and by estimated resident bytes (`max_bytes`), so a new token per request cannot
    grow a worker past its memory budget; the least recently used entries go first."""

    def __init__(
        self, maxsize: int, ttl: float, clock: Callable[[], float], max_bytes: int = 32 * 1024 * 1024
    ) -> None:
        self._clock = clock
        self._maxsize = maxsize
        self._entries: TTLCache[CacheKey, tuple[float, list[Any], int]] = TTLCache(
            maxsize=max_bytes, ttl=ttl, timer=clock, getsizeof=lambda v: v[2]
        )

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> Iterable[CacheKey]:
        return self._entries.keys()

    async def get(self, key: CacheKey) -> list[Any] | None:
        hit = self._entries.get(key)
        return hit[1] if hit is not None and hit[0] > self._clock() else None

    async def set(self, key: CacheKey, resources: list[Any], ttl: float) -> None:
        size = _resident_estimate(resources)
        if size > self._entries.maxsize:
            return  # larger than the whole budget: not cached
        self._entries[key] = (self._clock() + ttl, resources, size)
        while len(self._entries) > self._maxsize:
            self._entries.popitem()

    async def aclose(self) -> None:
        self._entries.clear()


class RedisReadCache(ReadCache):
    """Shared by every worker and replica: `SET <prefix>fhir:<sha256(server, query, token digest)>
    <resources JSON> PX <ttl>`. The key names neither the patient nor the token. Redis failing is a
    miss, never an error: the read goes to the FHIR server, and Redis is not asked again for
    `retry_after_s` (so an outage costs one short timeout, not one per read).
    """

    def __init__(
        self, url: str, prefix: str = "cds:", *, timeout_s: float = 0.5, retry_after_s: float = 5.0
    ) -> None:
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError

        self._redis = aioredis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self._errors: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)
        self.prefix = prefix + "fhir:"
        self._retry_after_s = retry_after_s
        self._down_until = 0.0

    def key(self, key: CacheKey) -> str:
        return self.prefix + hashlib.sha256("\x00".join(key).encode()).hexdigest()

    def _down(self) -> bool:
        return time.monotonic() < self._down_until

    def _failed(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + self._retry_after_s
        log.warning(
            "fhir read cache: redis unavailable (%s); reading without it for %.0f s",
            type(exc).__name__,
            self._retry_after_s,
        )

    async def get(self, key: CacheKey) -> list[Any] | None:
        if self._down():
            return None
        try:
            raw = await self._redis.get(self.key(key))
        except self._errors as exc:
            self._failed(exc)
            return None
        if raw is None:
            return None
        try:
            value = _json_loads(raw)
        except (ValueError, RecursionError):
            return None
        return value if isinstance(value, list) else None

    async def set(self, key: CacheKey, resources: list[Any], ttl: float) -> None:
        ms = int(ttl * 1000)
        if ms <= 0 or self._down():
            return
        try:
            await self._redis.set(self.key(key), json.dumps(resources, separators=(",", ":")), px=ms)
        except self._errors as exc:
            self._failed(exc)

    async def aclose(self) -> None:
        await self._redis.aclose()


def open_read_cache(settings: Settings, clock: Callable[[], float]) -> ReadCache:
    """Redis when CDS_REDIS_URL is set, else in-process."""
    if settings.redis_url:
        return RedisReadCache(settings.redis_url, settings.redis_key_prefix)
    ttl = int(settings.cache_ttl_s)
    return MemoryReadCache(settings.cache_max_entries, ttl, clock, settings.cache_max_mb * 1024 * 1024)


class FhirReader:
    """Reads what the engine needs for one patient: prefetch first, then fhirServer. One per app."""

    def __init__(self, http: httpx.AsyncClient, settings: Settings) -> None:
        self._http = http
        self._settings = settings
        self._clock = time.monotonic  # tests may replace it to age the cache
        ttl = int(getattr(settings, "cache_ttl_s", 0) or 0)
        self._cache: ReadCache | None = open_read_cache(settings, lambda: self._clock()) if ttl > 0 else None
        self._inflight: dict[tuple[str, str, str], asyncio.Future[_Fetched]] = {}
        # GETs in flight, app-wide, stay below the pool's size (a few slots left for auth's JWKS
        # reads): a request that waits inside httpx for a pool slot and times out there can leave a
        # CONNECTING connection behind that holds its slot for good (encode/httpcore#1093); here
        # the wait is an asyncio.Semaphore, which a timeout leaves intact.
        size = pool_limits(settings).max_connections or 16
        self._slots = asyncio.Semaphore(max(1, size - _POOL_RESERVED))
        import fhir.resources.R4B.servicerequest  # noqa: F401  (warm: draft orders are R4B-validated)

    # ------------------------------------------------------------ public

    async def aclose(self) -> None:
        if self._cache is not None:
            await self._cache.aclose()

    async def load(
        self,
        patient_id: str,
        prefetch: dict[str, Any] | None,
        fhir_server: str | None,
        token: str | None,
        expires_in: int | None,
    ) -> LoadResult:
        s = self._settings
        deadline = time.monotonic() + s.fhir_deadline_s
        given = prefetch if isinstance(prefetch, dict) else {}
        base = fhir_server.rstrip("/") if isinstance(fhir_server, str) and fhir_server else None
        patient_id = patient_id if isinstance(patient_id, str) else ""
        can_fetch = base is not None and bool(patient_id) and (bool(token) or bool(s.allow_open_fhir))
        token = token or None
        ttl = self._ttl(expires_in)
        semaphore = asyncio.Semaphore(s.fhir_max_concurrency)

        collected: dict[str, list[Any]] = {}
        sources: dict[str, str] = {}
        problems: list[str] = []
        jobs: dict[str, Any] = {}
        templates = prefetch_templates(s)
        for key, template in templates.items():
            label = _KEY_LABELS[key]
            value = given.get(key, _ABSENT)
            rtype = value.get("resourceType") if isinstance(value, dict) else None
            if value is None:  # CDS Hooks: present and null = no data
                collected[key], sources[key] = [], "prefetch"
                continue
            if rtype == "Bundle" and (resources := _bundle_resources(value, _KEY_TYPES[key])) is not None:
                collected[key], sources[key] = resources, "prefetch"
                next_url = _next_link(value)
                if next_url is not None:
                    next_url = urljoin(base + "/", next_url) if base else next_url
                    if can_fetch and base and same_base(next_url, base):
                        jobs[key] = self._search(next_url, key, token, semaphore, deadline, base)
                    else:
                        problems.append(f"{label}: only the first prefetched page could be read")
                continue
            if key == "patient" and rtype == "Patient":
                if value.get("id") in (None, patient_id):
                    collected[key], sources[key] = [value], "prefetch"
                else:
                    sources[key] = "error"
                    problems.append("the prefetched patient record is for another patient and was ignored")
                continue
            if not can_fetch:
                sources[key] = "missing"
                verb = "was" if key == "patient" else "were"
                problems.append(f"{label} {verb} not prefetched and the FHIR server could not be asked")
                continue
            query = template.replace("{{context.patientId}}", quote(patient_id, safe=""))
            jobs[key] = self._cached_search(base, query, key, token, ttl, semaphore, deadline)  # type: ignore[arg-type]

        for key, fetched in (await self._run(jobs, deadline)).items():
            label = _KEY_LABELS[key]
            continuation = sources.get(key) == "prefetch"
            if fetched.error is not None:
                if continuation:
                    problems.append(
                        f"{label}: only the first prefetched page could be read ({fetched.error})"
                    )
                else:
                    sources[key] = "error"
                    problems.append(f"{label} could not be read from the FHIR server ({fetched.error})")
                continue
            collected[key] = collected.get(key, []) + _key_resources(key, fetched.resources)
            if not continuation:
                sources[key] = "cache" if fetched.cached else "fhir"
            if fetched.note is not None:
                problems.append(f"{label}: {fetched.note}")

        medications_read = any(sources.get(k) in _READ for k in _MEDICATION_KEYS)
        if not medications_read and sources.get("labs") not in _READ:
            raise DataUnavailable(
                "neither medications nor laboratory results could be read from prefetch or the FHIR server",
                code="fhir-data-unavailable",
                sources=sources,
            )
        in_key_order: list[Any] = []
        for key in templates:
            in_key_order += collected.get(key, ())
        parsed = parse_resources(in_key_order, s, patient_id=patient_id)
        if parsed.other_patient:
            problems.append(
                _count(parsed.other_patient, "entry", "entries") + " about another patient left out"
            )
        if parsed.skipped:
            problems.append(_count(parsed.skipped, "malformed entry", "malformed entries") + " skipped")
        exposure = bool(drugs.has_natalizumab_exposure(parsed.facts))
        return LoadResult(parsed.facts, exposure, sources, tuple(problems), parsed.skipped)

    # ------------------------------------------------------------ fetching

    def _ttl(self, expires_in: int | None) -> float:
        if self._cache is None:
            return 0.0
        ttl = float(self._settings.cache_ttl_s)
        if expires_in is not None:
            try:
                ttl = min(ttl, float(expires_in))
            except (TypeError, ValueError):
                return 0.0
        return max(ttl, 0.0)

    async def _run(self, jobs: dict[str, Any], deadline: float) -> dict[str, _Fetched]:
        tasks = {key: asyncio.ensure_future(job) for key, job in jobs.items()}
        if not tasks:
            return {}
        try:
            await asyncio.wait(tasks.values(), timeout=max(0.0, deadline - time.monotonic()))
        finally:
            pending = [t for t in tasks.values() if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        out: dict[str, _Fetched] = {}
        if pending:  # reads still queued for a connection wrote no `fhir read` line of their own
            log.warning(
                "fhir reads unfinished at the deadline: %s",
                ",".join(sorted({_resource_type(k) for k, t in tasks.items() if t in pending})),
            )
        for key, t in tasks.items():
            if t.cancelled():
                out[key] = _Fetched([], error="timeout")
            elif t.exception() is not None:
                log.error("fhir read failed unexpectedly: %s", type(t.exception()).__name__)
                out[key] = _Fetched([], error="unexpected error")
            else:
                out[key] = t.result()
        return out

    async def _cached_search(
        self,
        base: str,
        query: str,
        key: str,
        token: str | None,
        ttl: float,
        semaphore: asyncio.Semaphore,
        deadline: float,
    ) -> _Fetched:
        url = f"{base}/{query}"
        if self._cache is None or ttl <= 0:
            return await self._search(url, key, token, semaphore, deadline, base)
        ckey = (base, query, hashlib.sha256((token or "").encode()).hexdigest())
        cache = self._cache
        hit = await cache.get(ckey)
        metrics.count_cache("fhir", hit is not None)
        if hit is not None:
            log.info("fhir read type=%s status=cached ms=0 cache=hit", _resource_type(key))
            return _Fetched(hit, cached=True)
        task = self._inflight.get(ckey)
        if task is None:

            async def fetch_and_keep() -> _Fetched:  # one fetch, one cache write, however many wait
                fetched = await self._search(url, key, token, semaphore, deadline, base)
                if fetched.error is None and fetched.note is None:
                    await cache.set(ckey, fetched.resources, ttl)
                return fetched

            task = asyncio.ensure_future(fetch_and_keep())
            self._inflight[ckey] = task

            def _done(t: asyncio.Future[_Fetched], k: tuple[str, str, str] = ckey) -> None:
                if self._inflight.get(k) is t:
                    del self._inflight[k]
                if not t.cancelled():
                    t.exception()  # retrieved: a failure is reported through its waiters

            task.add_done_callback(_done)
        return await asyncio.shield(task)

    async def _search(
        self,
        url: str,
        key: str,
        token: str | None,
        semaphore: asyncio.Semaphore,
        deadline: float,
        base: str,
    ) -> _Fetched:
        resources: list[Any] = []
        max_pages = self._settings.fhir_max_pages
        pages = 0
        next_url: str | None = url
        while next_url is not None:
            if pages >= max_pages:
                return _Fetched(
                    resources, note=f"more than {max_pages} pages; only the first {max_pages} were read"
                )
            try:
                body = await self._page(next_url, key, token, semaphore, deadline)
            except _Unreadable as exc:
                if pages == 0:
                    return _Fetched([], error=exc.reason)
                return _Fetched(resources, note=f"later pages could not be read ({exc.reason})")
            pages += 1
            rtype = body.get("resourceType")
            if rtype == "Bundle" and (found := _bundle_resources(body)) is not None:
                resources.extend(found)
            elif isinstance(rtype, str) and rtype in _KEY_TYPES[key] and pages == 1:
                return _Fetched([body])
            else:
                reason = (
                    "the server answered with an OperationOutcome"
                    if rtype == "OperationOutcome"
                    else "unexpected response"
                )
                if pages == 1:
                    return _Fetched([], error=reason)
                return _Fetched(resources, note=f"later pages could not be read ({reason})")
            next_url = _next_link(body)
            if next_url is not None:
                next_url = urljoin(base + "/", next_url)
                if not same_base(next_url, base):
                    return _Fetched(
                        resources, note="a next-page link outside the FHIR server was not followed"
                    )
        return _Fetched(resources)

    async def _page(
        self, url: str, key: str, token: str | None, semaphore: asyncio.Semaphore, deadline: float
    ) -> dict[str, Any]:
        headers = {"Accept": "application/fhir+json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with semaphore:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Unreadable("timeout", "timeout")
            limit = min(float(self._settings.fhir_timeout_s), remaining)
            started = time.monotonic()
            status: list[str] = ["-"]
            error: str | None = None
            try:
                # The GET runs in its own task that is never cancelled: we stop waiting at `limit` (or
                # when the deadline cancels us) and httpx's own timeouts plus the deadline check in
                # _get end it a little later, closing its connection properly. Cancelling a request
                # inside httpx leaks pool slots (httpcore 1.0.9, encode/httpcore#1093, #830): after an
                # overload whose reads were cut off at the deadline, every later read waited for a
                # slot that never came (bench: 412 after a FHIR server restart; the pool was full of
                # CONNECTING and ACTIVE connections nobody owned).
                get = asyncio.ensure_future(self._get(url, headers, limit, status))
                get.add_done_callback(_retrieve)
                return await asyncio.wait_for(asyncio.shield(get), timeout=limit)
            except _Unreadable as exc:
                error = exc.kind
                raise
            except asyncio.CancelledError:  # the overall deadline ended the read
                status[0], error = "deadline", "timeout"
                raise
            except (TimeoutError, httpx.TimeoutException):
                status[0] = "timeout"
                error = "timeout"
                raise _Unreadable("timeout", "timeout") from None
            except httpx.HTTPError as exc:
                status[0] = type(exc).__name__
                error = "connect"
                raise _Unreadable("connection failed", "connect") from None
            finally:
                seconds = time.monotonic() - started
                log.info(
                    "fhir read type=%s status=%s ms=%.0f cache=miss",
                    _resource_type(key),
                    status[0],
                    seconds * 1000,
                )
                metrics.observe_fhir_fetch(_resource_type(key), seconds, error)

    async def _get(
        self, url: str, headers: dict[str, str], limit: float, status: list[str]
    ) -> dict[str, Any]:
        stop = time.monotonic() + limit  # the caller stops waiting then; so does this read
        if not self._slots.locked():
            await self._slots.acquire()  # a free slot is taken at once: no task or timer for the wait
        else:
            try:
                await asyncio.wait_for(self._slots.acquire(), timeout=limit)
            except TimeoutError:
                raise _Unreadable("timeout", "timeout") from None
        try:
            return await self._get_in_slot(url, headers, max(0.001, stop - time.monotonic()), stop, status)
        finally:
            self._slots.release()

    async def _get_in_slot(
        self, url: str, headers: dict[str, str], limit: float, stop: float, status: list[str]
    ) -> dict[str, Any]:
        cap = int(self._settings.fhir_max_response_bytes)
        request = self._http.build_request("GET", url, headers=headers, timeout=httpx.Timeout(limit))
        response = await self._http.send(request, stream=True, follow_redirects=False)
        try:
            status[0] = str(response.status_code)
            code = response.status_code
            if 300 <= code < 400:
                raise _Unreadable(f"redirect not followed, HTTP {code}", "redirect")
            if code in (401, 403):
                raise _Unreadable(f"access refused, HTTP {code}", "refused")
            if code >= 400 or code < 200:
                raise _Unreadable(f"HTTP {code}", "http-error")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > cap:
                raise _Unreadable("response too large", "too-large")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > cap:
                    raise _Unreadable("response too large", "too-large")
                if time.monotonic() > stop:  # a slow drip: give up, as the caller already has
                    raise _Unreadable("timeout", "timeout")
        finally:
            await response.aclose()
        try:
            data = _json_loads(body)
        except (ValueError, RecursionError):
            raise _Unreadable("invalid JSON", "invalid-json") from None
        if not isinstance(data, dict):
            raise _Unreadable("unexpected response", "unexpected")
        return data


_ABSENT: Any = object()
_POOL_RESERVED = 4  # pool slots FhirReader leaves to the app's other users of the client (JWKS)


def pool_limits(settings: Any) -> httpx.Limits:
    """Connection limits of the app's shared httpx client (cds/app.py); FhirReader stays below them."""
    concurrency = int(getattr(settings, "fhir_max_concurrency", 8))
    return httpx.Limits(
        max_connections=max(concurrency * 4, 16), max_keepalive_connections=max(concurrency, 8)
    )


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Done callback of an abandoned GET: its outcome was reported (or not needed); no asyncio warning."""
    if not task.cancelled():
        task.exception()


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _resource_type(key: str) -> str:
    return min(_KEY_TYPES[key] - {"Medication"})
