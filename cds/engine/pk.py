"""How many PLEX sessions are still needed to bring serum natalizumab below a target?

Drug-clearance arithmetic only: PLEX did not reduce mortality or poor outcome in natalizumab-PML
(Landi 2017). The model is the reference model of clinical-reference.md §7, written per session:

    removal(PV)        = 1 - F_IV * (1 - exp(-PV))          fraction left after one session, once
                                                            the extravascular drug has re-equilibrated
    decay(days)        = exp(-days * ln2 / t½)              natural elimination, t½ = 11 d (US PI)
    r(PV, interval)    = removal(PV) * decay(interval)      per-session remaining fraction
                         = 0.505 for 1.5 PV q2d, 0.575 for 1.0 PV q2d (clinical-reference §7.1)
    level after n sessions (first session now) = C_now * r**n
    sessions needed    = smallest n with C_now * r**n <= target

A measured level is carried to `now` through the sessions since it was drawn and natural decay
(`_carry`). The range uses an intravascular fraction calibrated so that the reference band
r_low 0.45 / r_high 0.60 holds at 1.5 PV q2d, which scales the band consistently to other
volumes and intervals. With two or more equilibrated levels bracketing sessions, a patient-specific
per-session removal is fitted to all of them (least squares on log level after correcting for
natural decay; with two levels this is the reference's (C_later/C_earlier)^(1/k)), clipped to
[0.3, 0.8], and takes precedence; the range is then r_fit ± 0.05 (clipped), so it always contains
the estimate. Every number is listed with its source in docs/clinical-model.md.

THE SAFETY INVARIANT (docs/safety.md, hazard H1). The estimate concludes "at or below target"
(0 sessions, "no more PLEX needed") only in `below_target.below_target_confirmed`, and only from a usable serum or
plasma natalizumab result drawn after the last known dose: quantitative in a mass-concentration unit
whose text and code agree (fhir_io lets no other through), or "<X" / qualitative below the assay's
limit X, with the value (or X) at or below the target. Not when the last dose is unknown, the sample
was drawn within 24 h after a session or on the same (date-only) day as a session or dose, a result
at the same time is above target, or a newer natalizumab result could not be used. Every other path
that would give 0 sessions concludes "measure-first" instead: the card says what to measure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypedDict, TypeGuard

from cds.engine.below_target import BelowTargetEvidence, below_target_confirmed
from cds.engine.domain import (
    AntibodyResult,
    Basis,
    Conclusion,
    NatalizumabLevel,
    PatientFacts,
    PlexEstimate,
    PlexPlan,
    PlexSession,
    ProjectedPoint,
    Reference,
    SessionRange,
    UnusableValue,
)
from cds.engine.drugs import LastDose, last_dose
from cds.engine.references import (
    HANAFUSA_2014,
    KHATRI_2009,
    LANDI_2017,
    MURALIDHARAN_2017,
    SMPC_EU,
    US_PI,
    VENNEGOOR_2015,
)
from cds.engine.units import to_ug_per_ml

__all__ = [
    "ALTERNATIVE_TARGET_UG_PER_ML",
    "DEFAULT_TARGET_UG_PER_ML",
    "FLAGS",
    "HALF_LIFE_DAYS",
    "HALF_LIFE_LONG_DAYS",
    "HALF_LIFE_SHORT_DAYS",
    "INTRAVASCULAR_FRACTION",
    "decay_factor",
    "dosing_history_levels",
    "estimate_remaining",
    "post_session_factor",
    "removal_per_session",
    "session_remaining_fraction",
]

# ---------------------------------------------------------------- parameters (sources: docs/clinical-model.md)

DEFAULT_TARGET_UG_PER_ML = 1.0  # α4 saturation < 50% only below 1 µg/mL (Khatri 2009)
ALTERNATIVE_TARGET_UG_PER_ML = 2.0  # "therapeutic" trough in EID studies (Zhovtis Ryerson 2020)
HALF_LIFE_DAYS = 11.0  # elimination t½ 11 ± 4 d, US PI §12.3 [V]; the central value everywhere
HALF_LIFE_SHORT_DAYS = (
    7.0  # 11 - 4 d, low end of the US label's t½ (US PI §12.3) [V]: low end of a carried level
)
HALF_LIFE_LONG_DAYS = (
    28.2  # median t½ of the EU label's population model (CL 6.08 mL/h, V 5.96 L) [R]: high end
)
HALF_LIFE_DOSING_DAYS = 12.4  # effective t½ that reproduces both label anchors of the dosing history [D]
INTRAVASCULAR_FRACTION = 0.55  # ≈ plasma volume / Vd ≈ 3 L / 5.7 L [D], clinical-reference §1.3
REFERENCE_PLASMA_VOLUMES = 1.5  # reference schedule: 1.5 PV every other day (Khatri 2009; reference §7)
REFERENCE_INTERVAL_DAYS = 2.0
R_LOW_REFERENCE = 0.45  # uncertainty band of r at the reference schedule, clinical-reference §7.1 [D]
R_HIGH_REFERENCE = 0.60
R_FIT_MIN = 0.3  # bounds on a patient-fitted r, clinical-reference §7.1
R_FIT_MAX = 0.8
R_FIT_HALF_WIDTH = 0.05  # range r_fit ± 0.05, clinical-reference §7.1
FIT_PRE_COURSE_DAYS = (
    2.0  # a level counts in the fit when drawn at most one reference interval before the course [D]
)
POST_SESSION_WINDOW_HOURS = 24.0  # a sample < 24 h after a session is not re-equilibrated (reference §7.1)
STEADY_STATE_CMAX_UG_PER_ML = (
    110.0  # steady-state Cmax 110 ± 52 µg/mL, 300 mg IV q4w, US PI §12.3 / EU SmPC §5.2 [R]
)
STEADY_STATE_CMAX_SD_UG_PER_ML = 52.0  # its SD, same source [R]
LABEL_INTERVAL_DAYS = 28.0  # the label's dosing interval (q4w) at which Cmax was measured [R]
MAX_PLAUSIBLE_UG_PER_ML = 266.0  # Cmax + 3 SD = 110 + 3 × 52: above it a result is implausible [D]
MIN_PLAUSIBLE_NG_PER_ML = 100.0  # a quantitative result under 100 "ng/mL" reads as a µg/mL slip [D]
STANDARD_DOSE_MG = 300.0  # 300 mg IV q4w (label)
PERSISTENT_ANTIBODY_DAYS = 42.0  # "persistent" = positive twice ≥ 6 weeks apart (label definition) [R]
ADULT_AGE_YEARS = (
    18  # the label's PK data come from adults (US PI §8.4: safety and efficacy not established < 18) [R]
)
ORDERED_EXCESS_SESSIONS = 2  # an ordered course ≥ high end + 2 is called "much longer" (engine choice)
REMEASURE_AFTER_SESSIONS = 2  # re-measure pre-session after at most 2 sessions (Vennegoor 2015) [D]
MAX_SESSIONS = 50  # arithmetic cap; far beyond any real course (5-10 sessions, ClinicSpeak 2014)

FLAGS: dict[str, str] = {
    "post-session-sample": "level drawn < 24 h after a session; corrected by the volume-derived factor, redraw",
    "below-limit": "level reported under the assay's limit, the limit at or under the target",
    "upper-bound": "level reported as '<X' with X above target: the estimate is an upper bound",
    "lower-bound": "level reported as '>X': the estimate is a lower bound",
    "persistent-antibodies": "persistent anti-natalizumab antibodies on record (they never replace a level)",
    "single-positive-antibody": "one positive antibody result: persistence not shown",
    "antibody-level-discordance": "antibody-positive with a measurable level above target: re-test both",
    "antibodies-no-level": "antibody-positive and no usable level: measure the level",
    "last-dose-unknown": "natalizumab on record without a dose date, or an active course newer than the last dose",
    "date-ambiguous": "a date-only sample on the day of a session or dose: before/after unknown, range widened",
    "discordant-same-time": "results at the same time disagree: the highest was used",
    "newer-unusable-result": "a natalizumab result newer than the level used could not be used",
    "projected-below-target": "projected at or below target, not measured: confirm with a level",
    "fit-excluded-old-level": "levels drawn before the course were left out of the patient fit",
    "outside-population-age": "younger than 18: outside the population the PK data come from",
    "weight-not-modelled": "body weight is a clearance covariate the model does not use",
    "dosing-history": "no usable level: low-confidence projection from the dosing history",
    "no-data": "neither a level nor a dosing history: no estimate",
    "decayed": "level carried to now with natural decay (and sessions since, if any)",
    "old-level": "the level is older than one half-life: a fresh pre-session level is advised",
    "fitted-removal": "patient-specific removal fitted from levels bracketing sessions",
    "fit-clipped": "the fitted removal was outside [0.3, 0.8] and was clipped",
    "unusable-values": "some natalizumab results were excluded (see unusable)",
    "ordered-course-short": "the ordered course is shorter than the estimate",
    "ordered-course-long": "the ordered course is much longer than the estimate's high end",
    "plan-defaulted": "the planned volume or interval was not usable; the reference schedule was used",
    "immunoadsorption": "immunoadsorption modelled as PLEX of the same processed volume",
    "capped": "the arithmetic reached the session cap",
}

_LN2 = math.log(2)
_DAY = timedelta(days=1)


# ---------------------------------------------------------------- the single-rate model


def decay_factor(days: float, half_life_days: float = HALF_LIFE_DAYS) -> float:
    """exp(-days·ln2/t½): fraction left after `days` of natural elimination (days ≥ 0)."""
    return math.exp(-max(days, 0.0) * _LN2 / half_life_days)


def removal_per_session(
    plasma_volumes: float, intravascular_fraction: float = INTRAVASCULAR_FRACTION
) -> float:
    """1 - f_iv·(1 - e^-PV): fraction left after one session once drug has re-equilibrated.

    Single-pool removal of the intravascular drug (Kaplan 2008: 1 - e^-PV) applied to the
    intravascular fraction only (clinical-reference §1.3, §7.1).
    """
    return 1.0 - intravascular_fraction * (1.0 - math.exp(-plasma_volumes))


def session_remaining_fraction(
    plasma_volumes: float,
    interval_days: float,
    half_life_days: float = HALF_LIFE_DAYS,
    intravascular_fraction: float = INTRAVASCULAR_FRACTION,
) -> float:
    """r(PV, interval): remaining fraction per session including the interval's natural decay.

    r(1.5, 2) = 0.505 and r(1.0, 2) = 0.575 (clinical-reference §7.1, Khatri-calibrated).
    """
    return removal_per_session(plasma_volumes, intravascular_fraction) * decay_factor(
        interval_days, half_life_days
    )


def post_session_factor(
    plasma_volumes: float, intravascular_fraction: float = INTRAVASCULAR_FRACTION
) -> float:
    """Equilibrated / immediately-post-session level after one exchange of `plasma_volumes`.

    By the model's two compartments: right after the session the plasma holds e^-PV of its drug;
    once the extravascular drug has flowed back, the level is 1 - f·(1 - e^-PV) of the pre-session
    level (removal_per_session). The ratio (1 - f·(1 - e^-PV)) / e^-PV is about 1.8 at 1.0 PV, 2.6 at
    1.5 PV and 6.0 at 2.5 PV (immunoadsorption) with f = 0.55. Hanafusa 2014 (about 1/3-1/4 of IgG
    right after 1-1.5 PV, about 1/2 after re-equilibration: a factor of 1.5-2) agrees at 1.0 PV.
    """
    remaining_plasma = math.exp(-plasma_volumes)
    return removal_per_session(plasma_volumes, intravascular_fraction) / remaining_plasma


def _peak(peak_q4w: float, interval_days: float, half_life_days: float) -> float:
    """Steady-state peak for another dosing interval: Cmax(τ) = Cmax(28 d)·(1 - e^-28k)/(1 - e^-τk).

    One-compartment accumulation (each dose adds the same amount on top of what is left)."""
    k = _LN2 / half_life_days
    return peak_q4w * (1.0 - math.exp(-LABEL_INTERVAL_DAYS * k)) / (1.0 - math.exp(-interval_days * k))


def dosing_history_levels(
    days_since_dose: float, dose_mg: float | None = None, interval_days: float | None = None
) -> tuple[float, float, float]:
    """(low, central, high) serum level in µg/mL, `days_since_dose` after a steady-state infusion.

    Central: the label's peak of 110 µg/mL (300 mg q4w) decayed with HALF_LIFE_DOSING_DAYS = 12.4 d,
    the one linear half-life that reproduces both label anchors: the q4w trough of 23-29 µg/mL
    (gives 23.0) and every-6-week troughs 60-70% lower (gives 60%). Low: peak 110 - 52 decayed with
    7 d; high: peak 110 + 52 decayed with 28.2 d (EU population model), so the range spans the
    published half-lives. Another recorded dose scales linearly; another interval changes the peak
    by accumulation (`_peak`). Low confidence by nature: never a basis for "below target".
    """
    scale = dose_mg / STANDARD_DOSE_MG if _positive(dose_mg) else 1.0
    tau = interval_days if _positive(interval_days) else LABEL_INTERVAL_DAYS
    cases = (
        (STEADY_STATE_CMAX_UG_PER_ML - STEADY_STATE_CMAX_SD_UG_PER_ML, HALF_LIFE_SHORT_DAYS),
        (STEADY_STATE_CMAX_UG_PER_ML, HALF_LIFE_DOSING_DAYS),
        (STEADY_STATE_CMAX_UG_PER_ML + STEADY_STATE_CMAX_SD_UG_PER_ML, HALF_LIFE_LONG_DAYS),
    )
    low, mid, high = (
        scale * _peak(peak, tau, t_half) * decay_factor(days_since_dose, t_half) for peak, t_half in cases
    )
    return low, mid, high


def _fraction_for_reference_r(r_reference: float) -> float:
    """The intravascular fraction that gives `r_reference` at 1.5 PV q2d (calibrates the band)."""
    removal = r_reference / decay_factor(REFERENCE_INTERVAL_DAYS)
    return (1.0 - removal) / (1.0 - math.exp(-REFERENCE_PLASMA_VOLUMES))


_F_IV_FAST = _fraction_for_reference_r(R_LOW_REFERENCE)  # ≈ 0.63: more removed per session
_F_IV_SLOW = _fraction_for_reference_r(R_HIGH_REFERENCE)  # ≈ 0.41: less removed per session


# ---------------------------------------------------------------- scenarios


@dataclass(slots=True)
class _Scenario:
    """One of low / central / high: how each past session removes drug and r per planned session.

    Private and never mutated after construction (not frozen: a frozen __init__ costs a
    object.__setattr__ per field on every call)."""

    removal: float | None  # per-session removal for a patient fit (any volume); None: population
    intravascular_fraction: float
    r_plan: float

    def session_factor(self, session: PlexSession, plan_pv: float) -> float:
        if self.removal is not None:
            return self.removal
        pv = session.plasma_volumes if _positive(session.plasma_volumes) else plan_pv
        return removal_per_session(pv, self.intravascular_fraction)


def _positive(x: float | None) -> TypeGuard[float]:
    return x is not None and math.isfinite(x) and x > 0


def _ymd(dt: datetime) -> str:
    """f"{dt:%Y-%m-%d}" (isoformat is cheaper; it zero-pads years before 1000, strftime does not)."""
    text = dt.date().isoformat()
    return text if text[0] != "0" else f"{dt:%Y-%m-%d}"


def _days(a: datetime, b: datetime) -> float:
    """b - a in days."""
    return (b - a) / _DAY


def _products(window: list[PlexSession], scenarios: tuple[_Scenario, ...], plan_pv: float) -> list[float]:
    """Per scenario, the product of the removal factors of the sessions in `window`, in order.

    `window` is the sessions in (since, now] (every session kept by estimate_remaining is ≤ now):
    a level at `since` carried to `now` is level · decay(now - since) · product.
    """
    products: list[float] = []
    for sc in scenarios:
        product = 1.0
        removal, f_iv = sc.removal, sc.intravascular_fraction
        if removal is not None:
            for _ in window:
                product *= removal
        else:
            for s in window:
                pv = s.plasma_volumes
                product *= removal_per_session(pv if _positive(pv) else plan_pv, f_iv)
        products.append(product)
    return products


def _sessions_needed(start: float, target: float, r: float) -> tuple[int, bool]:
    """Smallest n with start·r**n ≤ target (0 if already there); capped at MAX_SESSIONS."""
    n, value = 0, start
    while value > target:
        if n >= MAX_SESSIONS:
            return n, True
        value *= r
        n += 1
    return n, False


# ---------------------------------------------------------------- input screening


def _screened(lv: NatalizumabLevel, code: str, reason: str) -> UnusableValue:
    shown = lv.reported_value if lv.reported_value is not None else lv.value_ug_per_ml
    return UnusableValue(
        kind="natalizumab level",
        reason=reason,
        reported=f"{lv.comparator or ''}{shown:g} {lv.reported_unit}",
        at=lv.drawn_at,
        source=lv.source,
        code=code,
    )


def _in_ng_per_ml(unit: str) -> bool:
    """A unit of the ng/mL scale (ng/mL, µg/L), by the engine's one unit table."""
    return to_ug_per_ml(1.0, unit) == 0.001


def _screen_levels(
    levels: tuple[NatalizumabLevel, ...], now: datetime
) -> tuple[list[NatalizumabLevel], list[UnusableValue]]:
    """Usable levels (oldest first) and the rest, each named with a code and a reason."""
    usable: list[NatalizumabLevel] = []
    unusable: list[UnusableValue] = []
    for lv in levels:
        v = lv.value_ug_per_ml
        if not math.isfinite(v):
            unusable.append(_screened(lv, "nan", "value is not a number"))
        elif v < 0:
            unusable.append(_screened(lv, "negative", "negative concentration"))
        elif v == 0 and lv.comparator is None:
            unusable.append(
                _screened(lv, "zero", "zero without a '<' comparator (no assay gives a true zero)")
            )
        elif v > MAX_PLAUSIBLE_UG_PER_ML and lv.comparator not in ("<", "<="):
            unusable.append(
                _screened(
                    lv,
                    "implausible-high",
                    f"above {MAX_PLAUSIBLE_UG_PER_ML:g} µg/mL (label peak 110 ± 52 + 3 SD): implausible, "
                    "check the unit with the lab",
                )
            )
        elif (
            lv.comparator is None
            and not lv.qualitative
            and lv.reported_value is not None
            and _in_ng_per_ml(lv.reported_unit)
            and lv.reported_value < MIN_PLAUSIBLE_NG_PER_ML
        ):
            unusable.append(
                _screened(
                    lv,
                    "implausible-low-for-unit",
                    f"under {MIN_PLAUSIBLE_NG_PER_ML:g} ng/mL: reads like a µg/mL value with the wrong unit; "
                    "confirm the unit with the lab",
                )
            )
        elif lv.drawn_at > now:
            unusable.append(_screened(lv, "future", "drawn after the time of this request"))
        else:
            usable.append(lv)
    usable.sort(key=lambda lv: lv.drawn_at)
    return usable, unusable


_POST_SESSION_WINDOW = timedelta(hours=POST_SESSION_WINDOW_HOURS)


def _session_end(s: PlexSession) -> datetime:
    return s.ended_at if s.ended_at is not None and s.ended_at >= s.performed_at else s.performed_at


def _post_session(level: NatalizumabLevel, sessions: tuple[PlexSession, ...]) -> PlexSession | None:
    """The session a level was drawn within 24 h after (counted from the session's end)."""
    drawn_at = level.drawn_at
    for s in sessions:
        if s.performed_at < drawn_at < _session_end(s) + _POST_SESSION_WINDOW:
            return s
    return None


def _same_day_session(level: NatalizumabLevel, sessions: tuple[PlexSession, ...]) -> PlexSession | None:
    """A session on the same calendar day as the level, when either time is known to the day only."""
    day = level.drawn_at.date()
    for s in sessions:
        if s.performed_at.date() == day and (level.date_only or s.date_only):
            return s
    return None


def _persistent_antibodies(results: tuple[AntibodyResult, ...], now: datetime) -> tuple[bool, bool]:
    """(persistent, single positive). Persistent: two positives ≥ 6 weeks apart, none negative since
    the earlier of the two, and the latest result positive (label definition of persistence)."""
    ordered = sorted((a for a in results if a.tested_at <= now), key=lambda a: a.tested_at)
    if not ordered or not ordered[-1].positive:
        return False, False
    run: list[AntibodyResult] = []
    for a in reversed(ordered):  # trailing run of positives
        if not a.positive:
            break
        run.append(a)
    persistent = _days(run[-1].tested_at, run[0].tested_at) >= PERSISTENT_ANTIBODY_DAYS
    return persistent, not persistent


# ---------------------------------------------------------------- patient fit


def _fit_removal(
    levels: list[NatalizumabLevel], sessions: tuple[PlexSession, ...]
) -> tuple[float, int] | None:
    """Per-session removal q fitted to equilibrated levels: ln C_i + k·t_i = a + n_i·ln q.

    n_i = sessions before sample i. Least squares over all levels; with two levels bracketing k
    sessions it is (C2/C1 / decay(t2 - t1))^(1/k), the reference formula corrected for any gap
    between sessions. Returns (q, number of levels used) or None without ≥ 2 distinct n_i.
    """
    if len(levels) < 2:
        return None
    t0 = levels[0].drawn_at
    k = _LN2 / HALF_LIFE_DAYS
    done = [s.performed_at for s in sessions]
    xs = [float(len([at for at in done if at < lv.drawn_at])) for lv in levels]
    ys = [math.log(lv.value_ug_per_ml) + k * ((lv.drawn_at - t0) / _DAY) for lv in levels]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum([(x - mx) ** 2 for x in xs])
    if sxx == 0:
        return None
    slope = sum([(x - mx) * (y - my) for x, y in zip(xs, ys)]) / sxx
    return math.exp(slope), len(levels)


# ---------------------------------------------------------------- public entry point


class _Common(TypedDict):
    """PlexEstimate fields shared by every return path of estimate_remaining."""

    target_ug_per_ml: float
    sessions_completed: int
    removal_fraction: float
    removal_fraction_population: float
    removal_fraction_fitted: float | None
    half_life_days: float
    ordered_sessions: int | None
    unusable: tuple[UnusableValue, ...]


@dataclass(slots=True)
class _Context:
    """Per-call state shared by the estimate paths; flags, notes and refs are appended to in place."""

    levels: tuple[NatalizumabLevel, ...]
    sessions: tuple[PlexSession, ...]
    scenarios: tuple[_Scenario, ...]
    plan_pv: float
    interval: float
    first_at: datetime
    lead: float
    now: datetime
    target: float
    plan: PlexPlan
    dose: LastDose
    dose_interval_days: float | None
    flags: list[str]
    notes: list[str]
    refs: list[Reference]
    common: _Common
    newer_unusable: bool = False


def _last_dose_interval(facts: PatientFacts, dose: LastDose) -> float | None:
    for d in facts.doses:
        if d.given_at == dose.at and d.interval_days is not None:
            return d.interval_days
    return None


def _population_notes(facts: PatientFacts, now: datetime, flags: list[str], notes: list[str]) -> None:
    """Age and weight: named when they put the patient outside what the model rests on."""
    born = facts.patient.birth_date
    if born is not None:
        today = now.date()
        age = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
        if 0 <= age < ADULT_AGE_YEARS:
            flags.append("outside-population-age")
            notes.append(
                f"The patient is {age} years old: natalizumab's PK data come from adults, so the "
                "estimate is outside the population it rests on."
            )
    if facts.patient.weight_kg is not None:
        flags.append("weight-not-modelled")
        notes.append(
            f"Body weight {facts.patient.weight_kg:.0f} kg: weight changes natalizumab clearance "
            "(Muralidharan 2017); the model uses population values."
        )


def estimate_remaining(
    facts: PatientFacts, plan: PlexPlan, target_ug_per_ml: float, now: datetime
) -> PlexEstimate:
    """Sessions still needed to bring serum natalizumab to `target_ug_per_ml` (default 1.0 µg/mL).

    Units: µg/mL, days; `now` timezone-aware. Basis "measured" (a usable level; `starting_level` is
    then always set), "dosing-history" (no usable level; low confidence, never shown as measured), or
    "none". `conclusion` is "at-or-below-target" only through `below_target_confirmed`; a count of 0
    from any other path becomes "measure-first" with `remaining` None. Antibodies never replace a level.
    """
    if not (math.isfinite(target_ug_per_ml) and target_ug_per_ml > 0):
        raise ValueError("target_ug_per_ml must be a positive number")
    target = target_ug_per_ml
    flags: list[str] = []
    notes: list[str] = []
    refs: list[Reference] = [KHATRI_2009, US_PI, LANDI_2017]

    # -- plan
    plan_pv, interval = plan.plasma_volumes_per_session, plan.interval_days
    if not _positive(plan_pv) or not _positive(interval):
        flags.append("plan-defaulted")
        notes.append(
            "The planned exchange volume or interval was missing or invalid; "
            "the reference schedule (1.5 plasma volumes every other day) was used."
        )
        plan_pv, interval = REFERENCE_PLASMA_VOLUMES, REFERENCE_INTERVAL_DAYS
    if plan.modality == "immunoadsorption" or any(s.modality == "immunoadsorption" for s in facts.sessions):
        flags.append("immunoadsorption")
        notes.append(
            "Immunoadsorption is modelled like plasma exchange of the same processed volume; "
            "no natalizumab-specific removal data for immunoadsorption were found."
        )
    first_at = plan.first_session_at if plan.first_session_at and plan.first_session_at > now else now
    lead = decay_factor(_days(now, first_at))
    _population_notes(facts, now, flags, notes)

    # -- history
    dose = last_dose(facts, now)
    if not dose.known:
        flags.append("last-dose-unknown")
        notes.append(
            "The date of the last natalizumab infusion is unknown (an order or course on record without "
            "an administration after it): no level can be shown to follow the last dose."
        )
    sessions = tuple(
        sorted((s for s in facts.sessions if s.performed_at <= now), key=lambda s: s.performed_at)
    )
    if dose.at is not None:
        sessions = tuple(s for s in sessions if s.performed_at > dose.at)
    levels, unusable = _screen_levels(facts.levels, now)
    unusable += [u for u in facts.unusable if u.kind == "natalizumab level"]
    if unusable:
        flags.append("unusable-values")
        notes.append(
            f"{len(unusable)} natalizumab result(s) were not used: "
            + "; ".join(f"{u.reported or 'value'} ({u.reason})" for u in unusable)
            + "."
        )
    if dose.at is not None:
        before = [lv for lv in levels if lv.drawn_at < dose.at]
        if before:
            notes.append(f"{len(before)} level(s) drawn before the last infusion were not used.")
        levels = [lv for lv in levels if lv.drawn_at >= dose.at]
    latest = _latest_of(levels, flags, notes)
    newer_unusable = any(
        u.at is None
        or (latest is not None and u.at >= latest.drawn_at)
        or (latest is None and (dose.at is None or u.at > dose.at))
        for u in unusable
        if u.code != "future"
    )
    if newer_unusable:
        flags.append("newer-unusable-result")
        notes.append(
            "A natalizumab result newer than any level used could not be used: ask the lab for a "
            "quantitative serum result before deciding on the course."
        )

    # -- population and fitted removal
    interval_decay = decay_factor(interval)
    r_population = removal_per_session(plan_pv) * interval_decay
    population: tuple[_Scenario, ...] = (
        _Scenario(None, _F_IV_FAST, removal_per_session(plan_pv, _F_IV_FAST) * interval_decay),
        _Scenario(None, INTRAVASCULAR_FRACTION, r_population),
        _Scenario(None, _F_IV_SLOW, removal_per_session(plan_pv, _F_IV_SLOW) * interval_decay),
    )
    scenarios = population
    course_start = sessions[0].performed_at - timedelta(days=FIT_PRE_COURSE_DAYS) if sessions else now
    equilibrated = [
        lv
        for lv in levels
        if lv.comparator is None and _post_session(lv, sessions) is None and not lv.date_only
    ]
    in_course = [lv for lv in equilibrated if lv.drawn_at >= course_start]
    fit = _fit_removal(in_course, sessions)
    r_fitted: float | None = None
    if fit is not None:
        left_out = len(equilibrated) - len(in_course)
        if left_out:
            flags.append("fit-excluded-old-level")
            notes.append(
                f"{left_out} level(s) drawn more than {FIT_PRE_COURSE_DAYS:g} days before the first session "
                "were left out of the patient fit: natural decay over that time is too uncertain."
            )
        q, used = fit
        raw = q * interval_decay
        r_fitted = min(max(raw, R_FIT_MIN), R_FIT_MAX)
        flags.append("fitted-removal")
        if r_fitted != raw:
            flags.append("fit-clipped")
        notes.append(
            f"Patient-specific remaining fraction per session r = {r_fitted:.3f} "
            f"(fitted to {used} levels bracketing sessions; population default {r_population:.3f}); "
            "the fitted value is used."
        )
        rs = (
            max(r_fitted - R_FIT_HALF_WIDTH, R_FIT_MIN),
            r_fitted,
            min(r_fitted + R_FIT_HALF_WIDTH, R_FIT_MAX),
        )
        scenarios = tuple(_Scenario(r / interval_decay, INTRAVASCULAR_FRACTION, r) for r in rs)
        refs.append(VENNEGOOR_2015)

    common: _Common = {
        "target_ug_per_ml": target,
        "sessions_completed": len(sessions),
        "removal_fraction": scenarios[1].r_plan,
        "removal_fraction_population": r_population,
        "removal_fraction_fitted": r_fitted,
        "half_life_days": HALF_LIFE_DAYS,
        "ordered_sessions": plan.ordered_sessions,
        "unusable": tuple(unusable),
    }
    ctx = _Context(
        levels=tuple(levels),
        sessions=sessions,
        scenarios=scenarios,
        plan_pv=plan_pv,
        interval=interval,
        first_at=first_at,
        lead=lead,
        now=now,
        target=target,
        plan=plan,
        dose=dose,
        dose_interval_days=_last_dose_interval(facts, dose),
        flags=flags,
        notes=notes,
        refs=refs,
        common=common,
        newer_unusable=newer_unusable,
    )

    # -- antibodies: they raise clearance; they never replace a measurement (Muralidharan 2017, EU SmPC)
    persistent, single = _persistent_antibodies(facts.antibodies, now)
    if persistent or single:
        flags.append("persistent-antibodies" if persistent else "single-positive-antibody")
        refs.extend([MURALIDHARAN_2017, SMPC_EU])
        if latest is None:
            flags.append("antibodies-no-level")
            notes.append(
                "Anti-natalizumab antibodies are on record but no usable level: antibodies raise "
                "clearance (about 2.45-fold) but do not show the drug is gone. Measure serum natalizumab."
            )
            return _finish(ctx, "none", None, None, None, (), remeasure_at=now, measure=True)
        if latest.comparator is None and latest.value_ug_per_ml > target:
            flags.append("antibody-level-discordance")
            notes.append(
                "Anti-natalizumab antibodies are on record, yet the level is measurable above the target: "
                "the two disagree. The level decides the estimate; re-test both."
            )

    if latest is not None:
        return _from_level(latest, ctx)

    if not dose.known or newer_unusable:
        refs.append(VENNEGOOR_2015)
        notes.append("Measure serum natalizumab before the first session.")
        return _finish(ctx, "none", None, None, None, (), remeasure_at=now, measure=True)

    if dose.at is None:
        flags.append("no-data")
        notes.append(
            "No natalizumab level and no dosing history on record: the sessions needed cannot be "
            "estimated. Measure serum natalizumab before the first session."
        )
        refs.append(VENNEGOOR_2015)
        return _finish(ctx, "none", None, None, None, (), remeasure_at=now, measure=True)

    # -- dosing history only: the label's steady state decayed since the last infusion
    flags.append("dosing-history")
    low, mid, high = dosing_history_levels(_days(dose.at, now), dose.dose_mg, ctx.dose_interval_days)
    products = _products(list(sessions), scenarios, plan_pv)
    starts = (low * products[0], mid * products[1], high * products[2])
    notes.append(
        f"No usable natalizumab level: projected from the last infusion ({_ymd(dose.at)}) from the label's "
        f"steady state (peak {STEADY_STATE_CMAX_UG_PER_ML:g} ± {STEADY_STATE_CMAX_SD_UG_PER_ML:g} µg/mL; "
        f"half-lives {HALF_LIFE_SHORT_DAYS:g}-{HALF_LIFE_LONG_DAYS:g} days). Low confidence, not a "
        "measurement: measure serum natalizumab before the first session."
    )
    refs.extend([SMPC_EU, VENNEGOOR_2015])
    return _estimate(starts, None, ctx, basis="dosing-history", remeasure_now=True)


def _latest_of(levels: list[NatalizumabLevel], flags: list[str], notes: list[str]) -> NatalizumabLevel | None:
    """The latest level; among results at the same time, the highest (never the first in input order)."""
    if not levels:
        return None
    newest = levels[-1].drawn_at
    same_time = [lv for lv in levels if lv.drawn_at == newest]
    highest = max(same_time, key=lambda lv: (lv.comparator is None, lv.value_ug_per_ml))
    if len({(lv.comparator, round(lv.value_ug_per_ml, 6)) for lv in same_time}) > 1:
        flags.append("discordant-same-time")
        notes.append(
            f"{len(same_time)} results drawn at the same time disagree: the highest was used; ask the lab "
            "which one stands."
        )
    return highest


def _same_time_above(latest: NatalizumabLevel, ctx: _Context) -> bool:
    return any(
        lv.drawn_at == latest.drawn_at
        and lv.value_ug_per_ml > ctx.target
        and lv.comparator not in ("<", "<=")
        for lv in ctx.levels
    )


def _from_level(latest: NatalizumabLevel, ctx: _Context) -> PlexEstimate:
    sessions, scenarios, now, target = ctx.sessions, ctx.scenarios, ctx.now, ctx.target
    flags, notes, refs = ctx.flags, ctx.notes, ctx.refs
    value = latest.value_ug_per_ml
    age_days = _days(latest.drawn_at, now)
    factors = (1.0, 1.0, 1.0)
    remeasure_now = ctx.newer_unusable or not ctx.dose.known
    since = [s for s in sessions if s.performed_at > latest.drawn_at]  # all in (drawn_at, now]
    post = _post_session(latest, sessions)
    same_day = _same_day_session(latest, sessions)
    ambiguous = same_day is not None or (
        ctx.dose.at is not None
        and ctx.dose.at.date() == latest.drawn_at.date()
        and (latest.date_only or ctx.dose.date_only)
    )
    if post is not None:
        flags.append("post-session-sample")
        pv = post.plasma_volumes if _positive(post.plasma_volumes) else ctx.plan_pv
        factors = tuple(post_session_factor(pv, sc.intravascular_fraction) for sc in scenarios)  # type: ignore[assignment]
        hours = (latest.drawn_at - _session_end(post)) / timedelta(hours=1)
        notes.append(
            f"The latest level was drawn {max(hours, 0):.0f} h after a session ended, before re-equilibration: "
            f"the equilibrated level is about {factors[1]:.1f} times higher after {pv:g} plasma volumes "
            f"(range {min(factors):.1f}-{max(factors):.1f}). Redraw the level before the next session."
        )
        refs.append(HANAFUSA_2014)
        remeasure_now = True
    elif ambiguous:
        flags.append("date-ambiguous")
        remeasure_now = True
        notes.append(
            f"The level from {_ymd(latest.drawn_at)} has a date but no time, on the same day as a "
            "session or an infusion: whether it was drawn before or after is unknown, so the range "
            "covers both. Record the draw time or redraw."
        )
        if same_day is not None:
            pv = same_day.plasma_volumes if _positive(same_day.plasma_volumes) else ctx.plan_pv
            factor_high = post_session_factor(pv, scenarios[2].intravascular_fraction)
            factors = (1.0, 1.0, factor_high)
    decays = (
        decay_factor(age_days, HALF_LIFE_SHORT_DAYS),
        decay_factor(age_days),
        decay_factor(age_days, HALF_LIFE_LONG_DAYS),
    )
    products = _products(since, scenarios, ctx.plan_pv)
    if ambiguous and same_day is not None:
        # high end: drawn just after the same-day session, which then is not "since" the sample
        products[2] = _products([s for s in since if s is not same_day], scenarios, ctx.plan_pv)[2]
    starts = [value * f * d * p for f, d, p in zip(factors, decays, products)]
    if ambiguous and ctx.dose.at is not None and ctx.dose.at.date() == latest.drawn_at.date():
        # the sample may predate the infusion: the high end is then the dose's projection
        dh = dosing_history_levels(_days(ctx.dose.at, now), ctx.dose.dose_mg, ctx.dose_interval_days)
        starts[2] = max(starts[2], dh[2] * products[2])
    if age_days > 0:
        flags.append("decayed")
        carried = f" through {len(since)} session(s) since then and" if since else ""
        # a censored value stays censored: no "about X now" from a "<X"
        now_txt = (
            ""
            if latest.comparator
            else f": about {starts[1]:.2g} µg/mL now (range {min(starts):.2g}-{max(starts):.2g})"
        )
        notes.append(
            f"The level from {_ymd(latest.drawn_at)} was carried to now{carried} with natural decay "
            f"(half-life {HALF_LIFE_DAYS:g} days; the range uses {HALF_LIFE_SHORT_DAYS:g}-"
            f"{HALF_LIFE_LONG_DAYS:g} days){now_txt}."
        )
    if age_days > HALF_LIFE_DAYS:
        flags.append("old-level")
        remeasure_now = True
        notes.append(f"The level is {age_days:.0f} days old: a fresh pre-session level is advised.")

    upper = False
    if latest.comparator in ("<", "<="):
        if value <= target:
            flags.append("below-limit")
            words = f"'{latest.qualitative}', " if latest.qualitative else ""
            notes.append(
                f"The level is reported under the assay's limit ({words}{latest.comparator}{value:g} µg/mL)."
            )
        else:
            flags.append("upper-bound")
            upper = True
            notes.append(
                f"The level is reported as {latest.comparator}{value:g} µg/mL, above the target: it was used "
                "as an upper bound, so the estimate is a maximum and the low end is 0."
            )
    elif latest.comparator in (">", ">="):
        flags.append("lower-bound")
        notes.append(
            f"The level is reported as {latest.comparator}{value:g} µg/mL: the true level may be higher, "
            "so the estimate is a minimum. Ask for a quantified result."
        )
    evidence = BelowTargetEvidence(
        level=latest,
        target_ug_per_ml=target,
        dose=ctx.dose,
        now=now,
        post_session=post is not None,
        ambiguous_day=ambiguous,
        same_time_above_target=_same_time_above(latest, ctx),
        newer_unusable=ctx.newer_unusable,
    )
    if below_target_confirmed(evidence):
        refs.append(VENNEGOOR_2015)
        return _finish(ctx, "measured", SessionRange(0, 0, 0), latest, starts[1], ctx.levels, confirmed=True)
    return _estimate(tuple(starts), latest, ctx, basis="measured", remeasure_now=remeasure_now, upper=upper)


def _estimate(
    starts: tuple[float, ...],
    latest: NatalizumabLevel | None,
    ctx: _Context,
    basis: Basis,
    remeasure_now: bool,
    upper: bool = False,
) -> PlexEstimate:
    counts = [
        _sessions_needed(start * ctx.lead, ctx.target, sc.r_plan) for start, sc in zip(starts, ctx.scenarios)
    ]
    if any(capped for _, capped in counts):
        ctx.flags.append("capped")
        ctx.notes.append(
            f"The arithmetic reached {MAX_SESSIONS} sessions: re-check the level and the target."
        )
    low, est, high = (n for n, _ in counts)
    if upper:
        low = 0
    remaining = SessionRange(estimate=est, low=min(low, est), high=max(high, est))
    measure = remaining.estimate == 0
    if measure:
        ctx.flags.append("projected-below-target")
        ctx.notes.append(
            f"The projection reaches the {ctx.target:g} µg/mL target (about {starts[1]:.2g} µg/mL now; high end "
            f"{max(starts):.2g} µg/mL, {remaining.high} session(s)), but a projection is not a measurement: "
            "confirm with a serum level drawn now."
        )
    return _finish(
        ctx,
        basis,
        None if measure else remaining,
        latest,
        starts[1],
        ctx.levels,
        starts=None if measure else starts,
        remeasure_at=ctx.now if (remeasure_now or measure) else None,
        measure=measure,
    )


def _finish(
    ctx: _Context,
    basis: Basis,
    rng: SessionRange | None,
    starting_level: NatalizumabLevel | None,
    adjusted_level: float | None,
    levels_used: tuple[NatalizumabLevel, ...],
    starts: tuple[float, ...] | None = None,
    remeasure_at: datetime | None = None,
    confirmed: bool = False,
    measure: bool = False,
) -> PlexEstimate:
    """Projection per planned session, expected target date, re-measurement, ordered-course check;
    builds the PlexEstimate (with `ctx.common`). `confirmed` only from below_target_confirmed."""
    flags, notes, plan, first_at, lead = ctx.flags, ctx.notes, ctx.plan, ctx.first_at, ctx.lead
    conclusion: Conclusion = (
        "at-or-below-target"
        if confirmed
        else "measure-first"
        if (measure or rng is None)
        else "sessions-needed"
    )
    step = timedelta(days=ctx.interval)
    projection: list[ProjectedPoint] = []
    target_at = None
    if rng is not None and starts is not None:
        count = min(max(rng.high, plan.ordered_sessions or 0, 1 if rng.estimate else 0), MAX_SESSIONS)
        (low0, mid0, high0), (r_low, r_mid, r_high) = (
            [s * lead for s in starts],
            [sc.r_plan for sc in ctx.scenarios],
        )
        for j in range(1, count + 1):
            a, b, c = low0 * r_low**j, mid0 * r_mid**j, high0 * r_high**j
            projection.append(
                ProjectedPoint(
                    session_number=j,
                    # session j happens at first_at + (j-1)·step; its equilibrated level is
                    # what the next pre-session draw would show, one interval later
                    at=first_at + step * j,
                    level_ug_per_ml=b,
                    low_ug_per_ml=min(a, b, c),
                    high_ug_per_ml=max(a, b, c),
                )
            )
        if rng.estimate > 0:
            target_at = first_at + step * rng.estimate

    remeasure_after = None
    if rng is not None and rng.estimate > 0 and remeasure_at is None:
        remeasure_after = max(1, min(rng.estimate - 1, REMEASURE_AFTER_SESSIONS))
        remeasure_at = first_at + step * remeasure_after  # before session remeasure_after + 1
        notes.append(
            f"Re-measure serum natalizumab before session {remeasure_after + 1} (after session "
            f"{remeasure_after}) and adjust the course to the measured level."
        )
    elif remeasure_at is not None:
        notes.append("Measure serum natalizumab before the next session.")

    if rng is not None and plan.ordered_sessions is not None:
        ordered = plan.ordered_sessions
        if ordered < rng.estimate:
            flags.append("ordered-course-short")
            notes.append(
                f"The order is for {ordered} session(s); the estimate is {rng.estimate} "
                f"(range {rng.low}-{rng.high})."
            )
        elif ordered >= rng.high + ORDERED_EXCESS_SESSIONS:
            flags.append("ordered-course-long")
            notes.append(
                f"The order is for {ordered} session(s), at least {ORDERED_EXCESS_SESSIONS} more than the "
                f"high end of the estimate ({rng.high})."
            )
    notes.append(
        "This estimate concerns drug clearance only; PLEX has not been shown to improve PML outcome."
    )
    return PlexEstimate(
        basis=basis,
        remaining=rng,
        starting_level=starting_level,
        adjusted_level_ug_per_ml=adjusted_level,
        levels_used=levels_used,
        projection=tuple(projection),
        target_expected_at=target_at,
        remeasure_at=remeasure_at,
        remeasure_after_session=remeasure_after,
        flags=tuple(dict.fromkeys(flags)),
        notes=tuple(notes),
        references=tuple(dict.fromkeys(ctx.refs)),
        conclusion=conclusion,
        **ctx.common,
    )
