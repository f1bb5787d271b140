"""The pharmacokinetic model of natalizumab under plasma exchange: parameters and formulas.

Drug-clearance arithmetic only: PLEX did not reduce mortality or poor outcome in natalizumab-PML
(Landi 2017). The model is the reference model of clinical-reference.md §7, written per session:

    removal(PV)        = 1 - F_IV * (1 - exp(-PV))          fraction left after one session, once
                                                            the extravascular drug has re-equilibrated
    decay(days)        = exp(-days * ln2 / t½)              natural elimination, t½ = 11 d (US PI)
    r(PV, interval)    = removal(PV) * decay(interval)      per-session remaining fraction
                         = 0.505 for 1.5 PV q2d, 0.575 for 1.0 PV q2d (clinical-reference §7.1)
    level after n sessions (first session now) = C_now * r**n
    sessions needed    = smallest n with C_now * r**n <= target

The range uses an intravascular fraction calibrated so that the reference band r_low 0.45 / r_high
0.60 holds at 1.5 PV q2d (`F_IV_FAST`, `F_IV_SLOW`), which scales the band consistently to other
volumes and intervals. Every number is listed with its source in docs/clinical-model.md.

The estimate built on this model is `remaining.estimate_remaining`; the screening of levels is in
`levels.py`, the patient-specific removal fit in `removal_fit.py`, and the one place a below-target
conclusion comes from in `below_target.py` (docs/safety.md, hazard H1).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import TypeGuard

__all__ = [
    "ALTERNATIVE_TARGET_UG_PER_ML",
    "DEFAULT_TARGET_UG_PER_ML",
    "FLAGS",
    "F_IV_FAST",
    "F_IV_SLOW",
    "HALF_LIFE_DAYS",
    "HALF_LIFE_LONG_DAYS",
    "HALF_LIFE_SHORT_DAYS",
    "INTRAVASCULAR_FRACTION",
    "days_between",
    "decay_factor",
    "dosing_history_levels",
    "positive",
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
    scale = dose_mg / STANDARD_DOSE_MG if positive(dose_mg) else 1.0
    tau = interval_days if positive(interval_days) else LABEL_INTERVAL_DAYS
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


F_IV_FAST = _fraction_for_reference_r(R_LOW_REFERENCE)  # ≈ 0.63: more removed per session
F_IV_SLOW = _fraction_for_reference_r(R_HIGH_REFERENCE)  # ≈ 0.41: less removed per session


def positive(x: float | None) -> TypeGuard[float]:
    """A finite number above 0."""
    return x is not None and math.isfinite(x) and x > 0


def days_between(a: datetime, b: datetime) -> float:
    """b - a in days."""
    return (b - a) / _DAY
