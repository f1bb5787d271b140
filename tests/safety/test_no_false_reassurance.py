"""Issue 15's safety invariant as a property: adversarial records never turn a patient whose serum
natalizumab is above target into a card that says "at or below target".

The base patient: natalizumab infusions given (MedicationAdministration, and a stopped
MedicationStatement ending at the last one), a PML diagnosis, a draft PLEX order, maybe PLEX sessions,
and one serum level of 12 µg/mL drawn after the last infusion. Hypothesis adds records shaped like
real hospital data that must never be read as "below target": antibody results of every kind (JC
virus ones with "Tysabri" in the text too), other specimens with tiny values, qualitative and censored
values, numbers with grouping commas, spaces and other scripts, conflicting or ambiguous units,
undated or old orders, duplicates and same-time results, future, imprecise and date-only times,
post-session samples and PLEX sessions done after the level. No record is ever a genuine newer serum
result below target: every low value is disqualified by its specimen, its format, its unit, its date
or its timing (docs/safety.md: the invariant). The positive control below shows that one genuine
low serum result does reach the conclusion, so the property is not vacuous.

The records go through the real pipeline in process: cds.fhir.facts.parse_resources -> engine (remaining, iris,
dmt) -> cards.render -> CDS Hooks JSON, as cds/hooks/routes.py calls them.

Runs: a few hundred examples by default; CDS_SAFETY_EXAMPLES=20000 for the slow run (issue 15 asks
for at least 20,000). The test prints how many examples it ran:

    .venv/bin/python -m pytest -q tests/safety                                  # default (300)
    CDS_SAFETY_EXAMPLES=20000 .venv/bin/python -m pytest -q tests/safety -k property   # slow run
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from cds import fhir_io
from cds.engine import dmt as dmt_engine
from cds.engine import drugs, remaining
from cds.engine import iris as iris_engine
from cds.engine.domain import PlexEstimate
from cds.fhir.facts import parse_resources
from cds.fhir.orders import plex_orders
from cds.fhir_io import LoadResult
from cds.hooks import cards
from cds.hooks.models import CdsResponse
from cds.settings import Settings
from tests.safety import records as fhir
from tests.safety.adversarial import (
    DOSES,
    LAST_DOSE,
    NOW,
    ORDER,
    PID,
    TARGET_UG_PER_ML,
    TWELVE,
    Base,
    Case,
    base_patient,
    cases,
)
from tests.safety.invariant import assert_not_reassuring, estimate_card

TARGET = TARGET_UG_PER_ML
SETTINGS = Settings(_env_file=None, auth="off", plex_target_ug_per_ml=TARGET)
EXAMPLES = int(os.environ.get("CDS_SAFETY_EXAMPLES", "300"))
SAFETY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)

# ---------------------------------------------------------------- the real pipeline, in process


def run_pipeline(resources: list[dict[str, Any]], order: dict[str, Any]) -> tuple[PlexEstimate, list[Any]]:
    """(the engine's estimate, the cards as CDS Hooks JSON) for `resources`, as routes.py makes them."""
    parsed = parse_resources(resources, SETTINGS, patient_id=PID, now=NOW)
    assert drugs.has_natalizumab_exposure(parsed.facts)  # else the service answers no cards at all
    load = LoadResult(
        parsed.facts,
        exposure=True,
        sources=dict.fromkeys(fhir_io.prefetch_templates(SETTINGS), "prefetch"),
        skipped=parsed.skipped,
    )
    draft = {"resourceType": "Bundle", "entry": [{"resource": order}]}
    plex = plex_orders(draft, None, SETTINGS)[0]
    estimate = remaining.estimate_remaining(parsed.facts, plex.plan, TARGET, NOW)
    iris = iris_engine.assess_iris(parsed.facts, plex.plan, NOW)
    dmt = dmt_engine.advise_dmt(parsed.facts, NOW)
    rendered = cards.render(
        cards.CardInput(estimate=estimate, iris=iris, dmt=dmt, load=load, order=plex, now=NOW, patient_id=PID)
    )
    return estimate, CdsResponse(cards=rendered).to_json()["cards"]


def assert_no_false_reassurance(estimate: PlexEstimate, body_cards: list[Any], why: str) -> None:
    assert estimate.conclusion != "at-or-below-target", f"PlexEstimate.conclusion: {why}"
    assert_not_reassuring(body_cards, why)


# ---------------------------------------------------------------- the generator's own check

# µg/mL per unit, for the oracle below (written out here, independent of cds.engine.units)
_MASS_UNITS = {
    "ug/mL": 1.0,
    "µg/mL": 1.0,
    "mg/L": 1.0,
    "ng/mL": 0.001,
    "ug/L": 0.001,
    "mg/mL": 1000.0,
    "g/L": 1000.0,
}
_PLAIN_VALUE = re.compile(r"^\s*(<=|<|≤)?\s*([0-9]+(?:[.,][0-9]+)?)\s*([A-Za-zµ/]*)\s*$", re.ASCII)
_QUALITATIVE_LOW = re.compile(r"not detected|negative|below|undetect|<", re.IGNORECASE)
_NOT_SERUM = re.compile(r"csf|cerebrospinal|urine", re.IGNORECASE)
_NOT_A_LEVEL = re.compile(r"antibod|\bjcv?\b|jc virus|\bada\b", re.IGNORECASE)


def _could_be_low(o: dict[str, Any]) -> bool:
    """Whether some reasonable reading of the value is a usable result at or below target (generous
    on purpose; a zero, a negative number and a plain number without a unit are never usable)."""
    if (q := o.get("valueQuantity")) is not None:
        factor = _MASS_UNITS.get(q.get("code") or "") if q.get("code") == q.get("unit") else None
        low = factor is not None and 0 < q["value"] * factor <= TARGET
        return low and q.get("comparator") in (None, "<", "<=")
    if (text := o.get("valueString")) is not None:
        if m := _PLAIN_VALUE.match(text):
            comparator, number, unit = m.groups()
            grouped = re.fullmatch(r"[0-9]{1,3},[0-9]{3}", number)  # "1,100": a grouping comma
            value = float(number.replace(",", "" if grouped else "."))
            factor = _MASS_UNITS.get(unit) if unit else (1.0 if comparator else None)  # "<0.1": qualitative
            return factor is not None and 0 < value * factor <= TARGET
        return bool(_QUALITATIVE_LOW.search(text))
    if (concept := o.get("valueCodeableConcept")) is not None:
        return bool(_QUALITATIVE_LOW.search(json.dumps(concept)))
    return False


def genuine_low_serum_results(resources: tuple[dict[str, Any], ...], base: Base) -> list[dict[str, Any]]:
    """Natalizumab results that could be a genuine serum level at or below target after the last dose:
    not withdrawn, no other specimen named, a possibly-low value, a precise time after the last
    infusion and not in the future, not at the time of the 12 µg/mL level, not within 24 h after a
    completed PLEX session, and (date-only) not on the day of an infusion or a completed session.
    The generator must never add one: the property would then test nothing but a false alarm."""
    sessions = [
        datetime.fromisoformat(r.get("performedDateTime") or r["performedPeriod"]["start"])
        for r in resources
        if r["resourceType"] == "Procedure" and r["status"] == "completed"
    ]
    busy_days = {fhir.day(at) for at in (*DOSES, *sessions)}
    found = []
    for r in resources:
        if r["resourceType"] != "Observation" or r["status"] in ("entered-in-error", "cancelled"):
            continue
        words = json.dumps([r["code"], r.get("specimen"), r.get("contained")], ensure_ascii=False)
        if _NOT_A_LEVEL.search(words) or _NOT_SERUM.search(words) or not _could_be_low(r):
            continue
        when = r.get("effectiveDateTime")
        if when is None or len(when) < 10:  # no time, or a year or month only
            continue
        if len(when) == 10:  # date-only
            if when not in busy_days and fhir.day(LAST_DOSE) < when <= fhir.day(NOW):
                found.append(r)
            continue
        at = datetime.fromisoformat(when)
        post_session = any(s < at < s + timedelta(hours=24) for s in sessions)
        if LAST_DOSE <= at <= NOW and at != base.level_at and not post_session:
            found.append(r)
    return found


# ---------------------------------------------------------------- the tests


def test_base_patient_needs_sessions() -> None:
    """The starting point: 12 µg/mL after the last infusion needs sessions (else the property is moot)."""
    base = base_patient(days_ago=3, hours=0, sessions_before=1, twelve=TWELVE[0])
    estimate, body = run_pipeline(list(base.resources), ORDER)
    ext = estimate_card(body)["extension"]["pml-plex"]
    assert ext["basis"] == "measured" and ext["latestLevel"]["value"] == 12
    assert ext["remainingSessions"]["estimate"] >= 1
    assert_no_false_reassurance(estimate, body, "base patient alone")


@pytest.mark.parametrize(
    "genuine",
    [
        pytest.param({"valueQuantity": fhir.qty(0.4, "ug/mL")}, id="0.4-ug-per-mL"),
        pytest.param({"valueQuantity": fhir.qty(0.5, "ug/mL", comparator="<")}, id="censored-below-0.5"),
    ],
)
def test_positive_control_a_genuine_low_serum_level_after_the_last_dose_reaches_below_target(
    genuine: dict[str, Any],
) -> None:
    """The same base patient plus one genuine serum result below target, drawn after the 12 µg/mL level
    and the last infusion, with no session since: the conclusion the property forbids is reachable."""
    base = base_patient(days_ago=5, hours=0, sessions_before=2, twelve=TWELVE[0])
    low = fhir.serum_level("ntz-low", PID, fhir.iso(NOW - timedelta(hours=6)), **genuine)
    assert genuine_low_serum_results((*base.resources, low), base) == [low]  # the oracle sees it
    estimate, body = run_pipeline([*base.resources, low], ORDER)
    card = estimate_card(body)
    ext = card["extension"]["pml-plex"]
    assert ext.get("conclusion") == "at-or-below-target", (card["summary"], ext)
    assert estimate.conclusion == "at-or-below-target"
    assert ext["remainingSessions"] == {"estimate": 0, "low": 0, "high": 0}
    if "comparator" in genuine["valueQuantity"]:
        assert "<0.5 µg/mL" in card["summary"] and "about 0.4" not in card["summary"], card["summary"]


@SAFETY
@given(case=cases())
def test_generator_adds_no_genuine_low_serum_result(case: Case) -> None:
    """The property's precondition on its own (no pipeline): every low value the generator adds is
    disqualified by specimen, format, unit, date or timing. Passes whatever the service does."""
    assert not genuine_low_serum_results(case.resources, case.base)


def test_property_no_adversarial_record_reaches_at_or_below_target(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 15 property: base patient above target + adversarial records -> never "at or below target"."""
    ran = 0

    @SAFETY
    @given(case=cases())
    def check(case: Case) -> None:
        nonlocal ran
        ran += 1
        genuine = genuine_low_serum_results(case.resources, case.base)
        assert not genuine, f"generator bug: a genuine low serum result was added: {genuine}"
        estimate, body = run_pipeline(list(case.resources), ORDER)
        assert_no_false_reassurance(estimate, body, case.describe())

    try:
        check()
    finally:
        with capsys.disabled():
            print(f"\n[issue 15 property] examples run: {ran} (asked for {EXAMPLES}, CDS_SAFETY_EXAMPLES)")
    assert ran >= EXAMPLES
