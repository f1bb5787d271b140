"""FHIR resources → engine.domain PatientFacts: parse_resources and the handlers of Patient,
Procedure and Condition (Observations: facts_observations.py; medications: facts_medications.py).
Pure: no I/O; cds/fhir_io.py reads the resources and calls parse_resources.

Parsing. Every resource is validated alone against a slim strict pydantic model of the fields read
here (the shapes are declared in `cds/fhir/shapes.py`; with `strict_fhir`, also against fhir.resources
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

Laboratory values (cds/fhir/values.py has the rules): a natalizumab level counts only from serum,
plasma or an unstated specimen; its number is read with grouping separators and decimal commas told
apart; its unit text and UCUM code must agree on a mass concentration. A qualitative result below the
assay's limit ("Not detected", "<LLOQ", "<0.1" without a unit) becomes a level "<" the limit from its
referenceRange or `natalizumab_assay_limit_ug_per_ml`; without a limit, or when the drug is
"detected" without a number, it is named as unusable. JC virus results are never natalizumab
antibodies or levels. Results that share a code and a time are all kept (the engine weighs them).
A value given to the day only carries `date_only`.
"""

from __future__ import annotations

import calendar
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from pydantic import ValidationError

from cds.engine.domain import ConditionFact, PatientDetails, PatientFacts, PlexSession, UnusableValue
from cds.fhir import shapes, terms
from cds.fhir.elements import (
    codings_of,
    concept_label,
    concept_of,
    first_datetime,
    label_from,
    other_patient,
    plasma_volumes_from,
    source_of,
    texts_of,
    validate_resource,
)
from cds.fhir.facts_context import Collected, ParseContext
from cds.fhir.facts_medications import administration_facts, medication_facts
from cds.fhir.facts_observations import CodeHint, observation_facts, prefilter_observation
from cds.fhir.shapes import ALL_MODELS, MODELS
from cds.settings import Settings

__all__ = ["Parsed", "parse_resources"]

_CONDITION_INACTIVE = frozenset({"inactive", "remission", "resolved"})
_CONDITION_EXCLUDED = frozenset({"refuted", "entered-in-error"})


@dataclass
class Parsed:
    """What parse_resources made of a set of resources."""

    facts: PatientFacts
    skipped: int = 0  # malformed (or, with strict_fhir, R4B-invalid) entries
    other_patient: int = 0  # entries whose subject is another patient (left out)


def _patient(p: shapes.Patient, ctx: ParseContext, _hint: None = None) -> None:
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


def _procedure(p: shapes.Procedure, ctx: ParseContext, _hint: None = None) -> None:
    if p["status"] != "completed":
        return
    code = p.get("code")
    codes, texts = concept_of(code)
    modality = terms.plex_modality(codes, texts, ctx.plex_codes)
    if modality is None:
        return
    src = source_of(p, "Procedure")
    period = p.get("performedPeriod")
    when = first_datetime(p.get("performedDateTime"), period.get("start") if period else None)
    if when is None:
        ctx.acc.unusable.append(
            UnusableValue("PLEX procedure", "no date performed", concept_label(code), None, src)
        )
        return
    volumes = plasma_volumes_from(p.get("extension", ()), (*(n["text"] for n in p.get("note", ())), *texts))
    end = first_datetime(period.get("end") if period else None)
    ended_at = end[0] if end is not None and end[1] == "time" and end[0] >= when[0] else None
    ctx.acc.sessions.append(
        PlexSession(when[0], modality, volumes, src, ended_at, when[1] != "time")  # type: ignore[arg-type]
    )


def _condition(c: shapes.Condition, ctx: ParseContext, _hint: None = None) -> None:
    verification = {code for _, code in codings_of(c.get("verificationStatus"))}
    if verification & _CONDITION_EXCLUDED:
        return
    code = c.get("code")
    codes, texts = concept_of(code)
    kind = terms.condition_kind(codes, " ".join(texts))
    descriptions: list[str] = []
    body_site_codes: list[tuple[str, str]] = []
    for site in c.get("bodySite", ()):
        descriptions.extend(texts_of(site))
        body_site_codes.extend(codings_of(site))
    if notes := c.get("note"):
        descriptions.extend(n["text"] for n in notes)
    for stage in c.get("stage", ()):
        descriptions.extend(texts_of(stage.get("summary")))
    for ev in c.get("evidence", ()):
        for cc in ev.get("code", ()):
            descriptions.extend(texts_of(cc))
        descriptions.extend(display for d in ev.get("detail", ()) if (display := d.get("display")))
    onset_period = c.get("onsetPeriod")
    onset = first_datetime(c.get("onsetDateTime"), onset_period.get("start") if onset_period else None)
    clinical = {code for _, code in codings_of(c.get("clinicalStatus"))}
    label = " ".join(texts)
    if (
        not clinical & _CONDITION_INACTIVE
        and terms.names_pregnancy(codes, label)
        and not _HISTORY.search(label)
    ):
        ctx.acc.pregnancy_conditions.append(source_of(c, "Condition"))
    ctx.acc.conditions.append(
        ConditionFact(
            kind,  # type: ignore[arg-type]
            label_from(codes, texts),
            codes,
            tuple(body_site_codes),
            tuple(dict.fromkeys(d for d in descriptions if d.strip())) if descriptions else (),
            onset[0] if onset else None,
            not (clinical & _CONDITION_INACTIVE),
            source_of(c, "Condition"),
        )
    )


_HISTORY = re.compile(r"\bhistory\b|\bprevious\b|\bpast\b", re.IGNORECASE)

# Each handler reads one validated resource (and, for an Observation, the pre-filter's look at its code)
# into the context's lists.
Handler = Callable[..., None]
_HANDLERS: dict[str, Handler] = {
    "Observation": observation_facts,
    "Procedure": _procedure,
    "MedicationStatement": medication_facts,
    "MedicationRequest": medication_facts,
    "MedicationAdministration": administration_facts,
    "Condition": _condition,
    "Patient": _patient,
}


_BY_DRAWN = operator.attrgetter("drawn_at")
_BY_PERFORMED = operator.attrgetter("performed_at")
_BY_GIVEN = operator.attrgetter("given_at")
_BY_TESTED = operator.attrgetter("tested_at")


def parse_resources(
    resources: Iterable[Any],
    settings: Settings,
    *,
    patient_id: str | None = None,
    now: datetime | None = None,
) -> Parsed:
    """Resources (dicts, in any order, duplicates allowed) -> PatientFacts. Never raises for bad data."""
    ctx = ParseContext(settings, now or datetime.now(UTC), medications={})
    picked = _pick(resources, ctx.level_codes)
    models = _validate(picked.candidates, settings.strict_fhir)
    todo, other = _ours(models, picked.hints, patient_id, ctx.medications)
    skipped = picked.skipped + models.count(None)
    for handler, model, hint in todo:
        try:
            handler(model, ctx, hint)
        except (ValueError, TypeError, ArithmeticError):  # e.g. an impossible date like 2024-02-30
            skipped += 1
    return Parsed(_patient_facts(ctx.acc), skipped, other)


@dataclass
class _Picked:
    candidates: list[dict[str, Any]] = field(default_factory=list)
    hints: list[CodeHint | None] = field(default_factory=list)  # per candidate: its Observation code
    skipped: int = 0  # not a resource at all


def _pick(resources: Iterable[Any], level_codes: frozenset[tuple[str, str]]) -> _Picked:
    """The raw resources worth validating: of a type read here, the first of each (type, id), and for
    Observations only those whose code the pre-filter cannot rule out."""
    picked = _Picked()
    seen: set[tuple[str, str]] = set()
    for raw in resources:
        rtype = raw.get("resourceType") if isinstance(raw, dict) else None
        if not isinstance(rtype, str):  # a list or object here must not reach the dict lookup
            picked.skipped += 1
            continue
        if rtype not in MODELS:
            continue  # a resource type nothing here reads
        rid = raw.get("id")
        if isinstance(rid, str):
            if (rtype, rid) in seen:
                continue
            seen.add((rtype, rid))
        hint = None
        if rtype == "Observation":
            read = prefilter_observation(raw, level_codes)
            if read is False:
                continue
            if read is not True:
                hint = read
        picked.candidates.append(raw)
        picked.hints.append(hint)
    return picked


def _validate(candidates: list[dict[str, Any]], strict: bool) -> list[shapes.Resource | None]:
    """Slim copies, None for a malformed entry: one call into pydantic-core for all entries; after any
    failure (or with `strict`), one by one, to skip and count only the bad ones."""
    if not strict and candidates:
        try:
            return list(ALL_MODELS.validate_python(candidates))
        except ValidationError:
            pass
    return [validate_resource(raw, strict) for raw in candidates]


def _ours(
    models: list[shapes.Resource | None],
    hints: list[CodeHint | None],
    patient_id: str | None,
    medications: dict[str, shapes.Medication],
) -> tuple[list[tuple[Handler, shapes.Resource, CodeHint | None]], int]:
    """(handler, resource, hint) for each valid resource about this patient, in order, and how many
    were about another patient. Medications go to `medications` first: statements may name them."""
    refs: dict[str, bool] = {}  # subject reference -> another patient (resolved once per read)
    todo: list[tuple[Handler, shapes.Resource, CodeHint | None]] = []
    other = 0
    for model, hint in zip(models, hints, strict=True):
        if model is None:
            continue
        if patient_id and _about_another_patient(model, patient_id, refs):
            other += 1
            continue
        rtype = model["resourceType"]  # type: ignore[typeddict-item]
        if (handler := _HANDLERS.get(rtype)) is not None:
            todo.append((handler, model, hint))
        elif rtype == "Medication" and (rid := model.get("id")):
            medications[f"Medication/{rid}"] = model  # type: ignore[assignment]
    return todo, other


def _about_another_patient(model: shapes.Resource, patient_id: str, refs: dict[str, bool]) -> bool:
    subject: shapes.Reference | None = model.get("subject")  # type: ignore[assignment]  # None where there is none
    if subject and (ref := subject.get("reference")):
        if (known := refs.get(ref)) is None:
            known = refs[ref] = other_patient(ref, patient_id)
        if known:
            return True
    return model["resourceType"] == "Patient" and model.get("id") not in (None, patient_id)  # type: ignore[typeddict-item]


def _patient_facts(a: Collected) -> PatientFacts:
    epoch = datetime.min.replace(tzinfo=UTC)
    return PatientFacts(
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


def _patient_details(a: Collected) -> PatientDetails:
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
