"""Which MS disease-modifying therapy is safe to start during natalizumab-PML, and when rebound comes.

Classes (engine.drugs, clinical-reference.md §5.2): immunomodulators allowed; fumarates conditional on
an absolute lymphocyte count ≥ 0.5 × 10⁹/L (ClinicSpeak 2014 "possibly DMF ... unless it causes a very
low lymphocyte count"; EU SmPC/US PI threshold [R]) drawn after the last natalizumab dose (natalizumab
raises circulating lymphocytes, US PI §6, so a count on it overstates the count off it) and within
182 days (the fumarate label asks for a count within 6 months before starting, Tecfidera US PI §2.1);
everything immunosuppressive avoided, natalizumab included. The engine never offers an avoid-class
drug: `suggestible` holds only allowed ingredients (fumarates are never drafted: clarifications.md),
and nothing at all in pregnancy or breastfeeding (`blocked_by`, named on the card).

Rebound window after the last natalizumab dose: relapses from 4 weeks (RESTORE, Fox 2014), severe
rebound a mean 3.5 months after stopping (Brain Behav 2017), most activity within about 6 months;
clinical-reference §5.1 [D]: 4 weeks to 6 months, peak around 3-4 months. PLEX clears the drug earlier,
so the window can open from the first session. What the window rests on comes as `rebound_notes`
(codes of REBOUND_NOTE_CODES and their values); the DMT card writes the words, as it does for each
fumarate's `reason_code`.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from cds.engine.domain import ConditionalDmt, DmtAdvice, LymphocyteCount, MedicationUse, Note, PatientFacts
from cds.engine.drugs import ALLOWED, AVOID, FUMARATES, LastDose, drug_class, identify, last_dose
from cds.engine.references import (
    CLINICSPEAK_2014,
    FOX_2014,
    PAPEIX_2016,
    REBOUND_2017,
    TECFIDERA_US_PI,
    US_PI_LYMPHOCYTES,
)

__all__ = [
    "LYMPHOCYTE_MAX_AGE_DAYS",
    "LYMPHOCYTE_THRESHOLD_10E9_PER_L",
    "REBOUND_FROM_DAYS",
    "REBOUND_NOTE_CODES",
    "REBOUND_PEAK_DAYS",
    "REBOUND_UNTIL_DAYS",
    "RELAPSE_WITHIN_A_YEAR_PERCENT",
    "advise_dmt",
]

LYMPHOCYTE_THRESHOLD_10E9_PER_L = 0.5  # fumarates not advised below 0.5 × 10⁹/L (EU SmPC / US PI) [R]
LYMPHOCYTE_MAX_AGE_DAYS = 182.0  # a count within 6 months before a fumarate starts (Tecfidera US PI §2.1) [R]
REBOUND_FROM_DAYS = 28.0  # relapses as early as 4-8 weeks after the last dose (RESTORE, Fox 2014) [V]
REBOUND_PEAK_DAYS = 105.0  # severe rebound a mean 3.5 months (≈ 105 d) after stopping (Brain Behav 2017) [V]
REBOUND_UNTIL_DAYS = 182.0  # about 6 months (clinical-reference §5.1 engine rule) [D]
RELAPSE_WITHIN_A_YEAR_PERCENT = 45  # relapse within a year of stopping (TYSEDMUS, Papeix 2016) [V]

# The codes of DmtAdvice.rebound_notes and the values each carries (days as ISO dates, "2024-05-10"):
# plain JSON values; the DMT card writes the words.
REBOUND_NOTE_CODES: dict[str, tuple[str, ...]] = {
    "rebound-after-last-dose": ("last_dose_on",),  # the window counts from the last dose
    "plex-brings-forward": (),  # PLEX clears the drug sooner: the window opens earlier
    "last-dose-unknown": (),  # no window from the last dose: watch from the start of PLEX
    "relapse-within-a-year": ("percent",),
    "no-dmt-drafted": ("blocked_by",),  # ("pregnancy",), ("pregnancy", "breastfeeding"), ...
}


def _latest_count(facts: PatientFacts, now: datetime) -> LymphocyteCount | None:
    counts = [
        c
        for c in facts.lymphocytes
        if c.drawn_at <= now and math.isfinite(c.value_10e9_per_l) and c.value_10e9_per_l >= 0
    ]
    return max(counts, key=lambda c: c.drawn_at) if counts else None


def _fumarate_advice(count: LymphocyteCount | None, dose: LastDose, now: datetime) -> tuple[bool, str]:
    """(advised, reason code) for a fumarate: the same for every fumarate, worked out once."""
    if count is None:
        return False, "no-count"
    after_dose = dose.known and (dose.at is None or count.drawn_at > dose.at)
    recent = (now - count.drawn_at) <= timedelta(days=LYMPHOCYTE_MAX_AGE_DAYS)
    if not after_dose:
        return False, "no-count-after-last-dose"
    if not recent:
        return False, "count-too-old"
    if count.value_10e9_per_l >= LYMPHOCYTE_THRESHOLD_10E9_PER_L:
        return True, "ok"
    return False, "low-count"


def _blocked_by(facts: PatientFacts) -> tuple[str, ...]:
    p = facts.patient
    return tuple(
        name for name, recorded in (("pregnancy", p.pregnant), ("breastfeeding", p.breastfeeding)) if recorded
    )


def _conflicts(medications: tuple[MedicationUse, ...]) -> tuple[MedicationUse, ...]:
    found = []
    for m in medications:
        ingredient = m.ingredient or identify(m.codes, m.text)
        if m.active and ingredient is not None and drug_class(ingredient) == "avoid":
            found.append(m)
    return tuple(found)


def advise_dmt(facts: PatientFacts, now: datetime) -> DmtAdvice:
    """Allowed / conditional / avoid DMTs, active avoid-class conflicts and the rebound window."""
    count = _latest_count(facts, now)
    dose = last_dose(facts, now)
    blocked = _blocked_by(facts)
    advised, code = _fumarate_advice(count, dose, now)
    if blocked:
        advised, code = False, blocked[0]
    conditional = tuple(ConditionalDmt(f, advised, count, code) for f in FUMARATES)
    suggestible = () if blocked else ALLOWED

    last = dose.at if dose.known else None
    first_plex = min(
        (
            s.performed_at
            for s in facts.sessions
            if s.performed_at <= now and (dose.at is None or s.performed_at > dose.at)
        ),
        default=None,
    )
    notes: list[Note] = []
    rebound_from = rebound_peak = rebound_until = None
    if last is not None:
        rebound_from = last + timedelta(days=REBOUND_FROM_DAYS)
        rebound_peak = last + timedelta(days=REBOUND_PEAK_DAYS)
        rebound_until = last + timedelta(days=REBOUND_UNTIL_DAYS)
        notes.append(Note("rebound-after-last-dose", {"last_dose_on": last.date().isoformat()}))
        if first_plex is not None and first_plex < rebound_from:
            rebound_from = first_plex
        notes.append(Note("plex-brings-forward"))
    else:
        if first_plex is not None:
            rebound_from = first_plex
        notes.append(Note("last-dose-unknown"))
    notes.append(Note("relapse-within-a-year", {"percent": RELAPSE_WITHIN_A_YEAR_PERCENT}))
    if blocked:
        notes.append(Note("no-dmt-drafted", {"blocked_by": blocked}))
    return DmtAdvice(
        allowed=ALLOWED,
        conditional=conditional,
        avoid=AVOID,
        active_conflicts=_conflicts(facts.medications),
        rebound_from=rebound_from,
        rebound_peak=rebound_peak,
        rebound_until=rebound_until,
        rebound_notes=tuple(notes),
        suggestible=suggestible,
        references=(
            CLINICSPEAK_2014,
            FOX_2014,
            REBOUND_2017,
            PAPEIX_2016,
            TECFIDERA_US_PI,
            US_PI_LYMPHOCYTES,
        ),
        blocked_by=blocked,
    )
