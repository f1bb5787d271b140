"""MedicationStatement, MedicationRequest and MedicationAdministration → MedicationUse facts, and
natalizumab doses from what says a dose was or may have been given (never an order's authoredOn)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime

from pydantic import ValidationError

from cds.engine import drugs
from cds.engine.domain import MedicationUse, NatalizumabDose, UnusableValue
from cds.fhir import shapes, terms
from cds.fhir.elements import (
    codings_of,
    concept_label,
    concept_of,
    first_datetime,
    label_from,
    source_of,
    texts_of,
)
from cds.fhir.facts_context import ParseContext
from cds.fhir.shapes import MODELS

__all__ = ["administration_facts", "medication_facts"]

_STATEMENT_ACTIVE = frozenset({"active", "intended", "on-hold"})
_REQUEST_ACTIVE = frozenset({"active", "on-hold"})
_ADMINISTRATION_ACTIVE = frozenset({"in-progress", "on-hold"})
# a statement of a dose that was or may have been taken (`unknown`: the cautious reading, as for
# administrations); never `intended` (a plan), `not-taken` or `entered-in-error`
_STATEMENT_GIVEN = frozenset({"active", "completed", "stopped", "on-hold", "unknown"})
# an administration that was or may have been started: some drug may be in the blood (R4 `stopped` =
# halted before all of it occurred; `unknown` = the status is not known); only `not-done` says no drug
_ADMINISTRATION_GIVEN = frozenset({"completed", "in-progress", "on-hold", "stopped", "unknown"})
_DOSE = "natalizumab dose"
_MEDICATION_REF = re.compile(r"(?:^|/)(Medication/[A-Za-z0-9\-.]{1,64})(?:/_history/[^/]*)?$")


def _medication_concept(
    m: shapes.MedicationUse, ctx: ParseContext
) -> tuple[tuple[tuple[str, str], ...], str, str]:
    """(codes, label as written, text for identification) of the medication a statement/request names."""
    if (cc := m.get("medicationCodeableConcept")) is not None:
        concept_codes, concept_texts = concept_of(cc)
        return concept_codes, label_from(concept_codes, concept_texts), " ".join(concept_texts)
    ref = m.get("medicationReference")
    if ref is None:
        return (), "", ""
    med: shapes.Medication | None = None
    reference, display = ref.get("reference"), ref.get("display")
    if reference and reference.startswith("#"):
        for item in m.get("contained", ()):
            if isinstance(item, dict) and item.get("id") == reference[1:]:
                try:
                    med = MODELS["Medication"].validate_python(item)
                except ValidationError:
                    med = None
                break
    elif reference:
        found = _MEDICATION_REF.search(reference)
        med = ctx.medications.get(found.group(1)) if found else None  # a Medication in the same read
    if med is None:
        return (), display or "", display or ""
    med_code = med.get("code")
    codes = list(codings_of(med_code))
    texts = texts_of(med_code)
    for ing in med.get("ingredient", ()):
        concept = ing.get("itemCodeableConcept")
        codes.extend(codings_of(concept))
        texts.extend(texts_of(concept))
    label = display or concept_label(med_code) or (texts[0] if texts else "")
    return tuple(codes), label, " ".join([display or "", *texts]).strip()


def _dose_facts(dosages: Iterable[shapes.Dosage]) -> tuple[float | None, float | None]:
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
                interval = terms.interval_from_text(" ".join(texts_of(tcode)))
        if interval is None:
            interval = terms.interval_from_text(d.get("text"))
    return dose_mg, interval


def medication_facts(
    m: shapes.MedicationStatement | shapes.MedicationRequest, ctx: ParseContext, _hint: None = None
) -> None:
    status = m["status"]
    if status == "entered-in-error":
        return
    codes, label, text = _medication_concept(m, ctx)
    ingredient = drugs.identify(codes, text or label)
    if m["resourceType"] == "MedicationStatement":
        rtype, record, active = "MedicationStatement", "statement", status in _STATEMENT_ACTIVE
        p = m.get("effectivePeriod")
        # a dose date only: effectivePeriod.start is the first dose and dateAsserted when it was recorded
        when = first_datetime(m.get("effectiveDateTime"), p.get("end") if p else None)
    else:  # an order: authoredOn is when it was written, never when a dose was given
        rtype, record, active = "MedicationRequest", "request", status in _REQUEST_ACTIVE
        when = first_datetime(m.get("authoredOn"))
    src = source_of(m, rtype)
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


def administration_facts(m: shapes.MedicationAdministration, ctx: ParseContext, _hint: None = None) -> None:
    """An administration given (or started): a MedicationUse of any drug, and for natalizumab a dose."""
    status = m["status"]
    if status == "entered-in-error":
        return
    codes, label, text = _medication_concept(m, ctx)
    ingredient = drugs.identify(codes, text or label)
    p = m.get("effectivePeriod")
    when = first_datetime(
        m.get("effectiveDateTime"), p.get("end") if p else None, p.get("start") if p else None
    )
    src = source_of(m, "MedicationAdministration")
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
    ctx: ParseContext,
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
