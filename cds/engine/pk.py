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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypedDict, TypeGuard

from cds.engine.domain import (
    AntibodyResult,
    Basis,
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
from cds.engine.drugs import last_natalizumab_dose
from cds.engine.references import (
    HANAFUSA_2014,
    KHATRI_2009,
    LANDI_2017,
    MURALIDHARAN_2017,
    SMPC_EU,
    US_PI,
    VENNEGOOR_2015,
)

__all__ = [
    "ALTERNATIVE_TARGET_UG_PER_ML",
    "DEFAULT_TARGET_UG_PER_ML",
    "FLAGS",
    "HALF_LIFE_DAYS",
    "HALF_LIFE_SENSITIVITY_DAYS",
    "INTRAVASCULAR_FRACTION",
    "decay_factor",
    "estimate_remaining",
    "removal_per_session",
    "session_remaining_fraction",
]

# ---------------------------------------------------------------- parameters (sources: docs/clinical-model.md)

DEFAULT_TARGET_UG_PER_ML = 1.0  # α4 saturation < 50% only below 1 µg/mL (Khatri 2009)
ALTERNATIVE_TARGET_UG_PER_ML = 2.0  # "therapeutic" trough in EID studies (Zhovtis Ryerson 2020)
HALF_LIFE_DAYS = 11.0  # elimination t½ 11 ± 4 d, US PI §12.3 [V]
HALF_LIFE_SENSITIVITY_DAYS = 16.0  # steady-state t½ 16 ± 4 d, EU SmPC §5.2 [R]
INTRAVASCULAR_FRACTION = 0.55  # ≈ plasma volume / Vd ≈ 3 L / 5.7 L [D], clinical-reference §1.3
REFERENCE_PLASMA_VOLUMES = 1.5  # reference schedule: 1.5 PV every other day (Khatri 2009; reference §7)
REFERENCE_INTERVAL_DAYS = 2.0
R_LOW_REFERENCE = 0.45  # uncertainty band of r at the reference schedule, clinical-reference §7.1 [D]
R_HIGH_REFERENCE = 0.60
R_FIT_MIN = 0.3  # bounds on a patient-fitted r, clinical-reference §7.1
R_FIT_MAX = 0.8
R_FIT_HALF_WIDTH = 0.05  # range r_fit ± 0.05, clinical-reference §7.1
POST_SESSION_WINDOW_HOURS = 24.0  # a sample < 24 h after a session is not re-equilibrated (reference §7.1)
POST_SESSION_FACTOR_LOW = 1.5  # equilibrated ≈ 1.5-2.0 × post-session level (Hanafusa 2014: 1/3-1/4 vs 1/2)
POST_SESSION_FACTOR_HIGH = 2.0
POST_SESSION_FACTOR = 1.75  # central value of that range [D]
MAX_PLAUSIBLE_UG_PER_ML = 1000.0  # ≈ 9 × the steady-state Cmax of 110 ± 52 µg/mL (US PI) [D]
STEADY_STATE_CMAX_UG_PER_ML = 110.0  # 300 mg IV q4w, US PI §12.3 / EU SmPC §5.2 [R]
STANDARD_DOSE_MG = 300.0  # 300 mg IV q4w (label)
PERSISTENT_ANTIBODY_DAYS = 42.0  # "persistent" = positive twice ≥ 6 weeks apart (label definition) [R]
ORDERED_EXCESS_SESSIONS = 2  # an ordered course ≥ high end + 2 is called "much longer" (engine choice)
REMEASURE_AFTER_SESSIONS = 2  # re-measure pre-session after at most 2 sessions (Vennegoor 2015) [D]
MAX_SESSIONS = 50  # arithmetic cap; far beyond any real course (5-10 sessions, ClinicSpeak 2014)

FLAGS: dict[str, str] = {
    "post-session-sample": "level drawn < 24 h after a session; corrected, ask for a pre-session redraw",
    "below-limit": "level below the assay limit, at or below the target: no sessions for clearance",
    "upper-bound": "level reported as '<X' with X above target: the estimate is an upper bound",
    "lower-bound": "level reported as '>X': the estimate is a lower bound",
    "persistent-antibodies": "persistent anti-natalizumab antibodies: no sessions for clearance",
    "single-positive-antibody": "one positive antibody result: persistence not shown, estimate unchanged",
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


def _screen_levels(
    levels: tuple[NatalizumabLevel, ...], now: datetime
) -> tuple[list[NatalizumabLevel], list[UnusableValue]]:
    usable: list[NatalizumabLevel] = []
    unusable: list[UnusableValue] = []
    for lv in levels:
        v = lv.value_ug_per_ml
        reason = ""
        if not math.isfinite(v):
            reason = "value is not a number"
        elif v < 0:
            reason = "negative concentration"
        elif v == 0 and lv.comparator is None:
            reason = "zero without a '<' comparator (no assay gives a true zero)"
        elif v > MAX_PLAUSIBLE_UG_PER_ML:
            reason = f"above {MAX_PLAUSIBLE_UG_PER_ML:g} µg/mL, implausible for natalizumab"
        elif lv.drawn_at > now:
            reason = "drawn after the time of this request"
        if reason:
            shown = lv.reported_value if lv.reported_value is not None else v
            unusable.append(
                UnusableValue(
                    kind="natalizumab level",
                    reason=reason,
                    reported=f"{lv.comparator or ''}{shown:g} {lv.reported_unit}",
                    at=lv.drawn_at,
                    source=lv.source,
                )
            )
        else:
            usable.append(lv)
    usable.sort(key=lambda lv: lv.drawn_at)
    return usable, unusable


_POST_SESSION_WINDOW = timedelta(hours=POST_SESSION_WINDOW_HOURS)


def _post_session(level: NatalizumabLevel, sessions: tuple[PlexSession, ...]) -> PlexSession | None:
    drawn_at = level.drawn_at
    for s in sessions:
        at = s.performed_at
        if at < drawn_at < at + _POST_SESSION_WINDOW:
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
    """Per-call state shared by the estimate paths; flags, notes and refs are appended to in place.

    Private and never reassigned after construction (not frozen: cheaper to build once per call)."""

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
    flags: list[str]
    notes: list[str]
    refs: list[Reference]
    common: _Common


def estimate_remaining(
    facts: PatientFacts, plan: PlexPlan, target_ug_per_ml: float, now: datetime
) -> PlexEstimate:
    """Sessions still needed to bring serum natalizumab to `target_ug_per_ml` (default 1.0 µg/mL).

    Units: µg/mL, days; `now` timezone-aware. Basis "measured" (a usable level; `starting_level` is
    then always set), "dosing-history" (no usable level; low confidence, never shown as measured), or
    "none" (remaining is None). Persistent anti-natalizumab antibodies give 0/0/0 sessions on either
    of the first two bases. Implausible levels are excluded and returned in `unusable`.
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

    # -- history
    last_dose_at, last_dose_mg = last_natalizumab_dose(facts, now)
    sessions = tuple(
        sorted((s for s in facts.sessions if s.performed_at <= now), key=lambda s: s.performed_at)
    )
    if last_dose_at is not None:
        sessions = tuple(s for s in sessions if s.performed_at > last_dose_at)
    levels, unusable = _screen_levels(facts.levels, now)
    unusable += [u for u in facts.unusable if u.kind == "natalizumab level"]
    if unusable:
        flags.append("unusable-values")
        notes.append(
            f"{len(unusable)} natalizumab result(s) were not used: "
            + "; ".join(f"{u.reported or 'value'} ({u.reason})" for u in unusable)
            + "."
        )
    if last_dose_at is not None:
        before = [lv for lv in levels if lv.drawn_at < last_dose_at]
        if before:
            notes.append(f"{len(before)} level(s) drawn before the last infusion were not used.")
        levels = [lv for lv in levels if lv.drawn_at >= last_dose_at]

    # -- population and fitted removal
    # session_remaining_fraction(plan_pv, interval, f) = removal_per_session(plan_pv, f) · decay(interval)
    interval_decay = decay_factor(interval)
    r_population = removal_per_session(plan_pv) * interval_decay
    population: tuple[_Scenario, ...] = (
        _Scenario(None, _F_IV_FAST, removal_per_session(plan_pv, _F_IV_FAST) * interval_decay),
        _Scenario(None, INTRAVASCULAR_FRACTION, r_population),
        _Scenario(None, _F_IV_SLOW, removal_per_session(plan_pv, _F_IV_SLOW) * interval_decay),
    )
    scenarios = population
    equilibrated = [lv for lv in levels if lv.comparator is None and _post_session(lv, sessions) is None]
    fit = _fit_removal(equilibrated, sessions)
    r_fitted: float | None = None
    if fit is not None:
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
        flags=flags,
        notes=notes,
        refs=refs,
        common=common,
    )

    # -- persistent antibodies: drug effect abolished, clearance ≈ 3-fold (Muralidharan 2017, label)
    persistent, single = _persistent_antibodies(facts.antibodies, now)
    if single:
        flags.append("single-positive-antibody")
        notes.append(
            "One positive anti-natalizumab antibody result: persistence (two positives at least "
            "6 weeks apart) is not shown, so the estimate is unchanged."
        )
    latest = levels[-1] if levels else None
    if persistent:
        flags.append("persistent-antibodies")
        notes.append(
            "Persistent anti-natalizumab antibodies: drug effect is abolished and clearance is about "
            "3-fold faster, so no sessions are needed for drug clearance."
        )
        refs.extend([MURALIDHARAN_2017, SMPC_EU])

    # -- starting level
    if latest is not None:
        return _from_level(latest, ctx, zero=persistent)

    if last_dose_at is None:
        flags.append("no-data")
        notes.append(
            "No natalizumab level and no dosing history on record: the sessions needed cannot be "
            "estimated. Measure serum natalizumab before the first session."
        )
        refs.append(VENNEGOOR_2015)
        return _finish(ctx, "none", None, None, None, (), remeasure_at=now)

    # -- dosing history only: steady-state Cmax decayed since the last infusion
    flags.append("dosing-history")
    scale = last_dose_mg / STANDARD_DOSE_MG if _positive(last_dose_mg) else 1.0
    cmax = STEADY_STATE_CMAX_UG_PER_ML * scale
    elapsed = _days(last_dose_at, now)
    products = _products([s for s in sessions if s.performed_at > last_dose_at], scenarios, plan_pv)
    central_decay = decay_factor(elapsed)
    starts = (
        cmax * central_decay * products[0],
        cmax * central_decay * products[1],
        cmax * decay_factor(elapsed, HALF_LIFE_SENSITIVITY_DAYS) * products[2],
    )
    notes.append(
        f"No usable natalizumab level: projected from the last infusion ({_ymd(last_dose_at)}) "
        f"using the steady-state peak of {cmax:g} µg/mL decayed with a half-life of {HALF_LIFE_DAYS:g} days "
        f"({HALF_LIFE_SENSITIVITY_DAYS:g} days for the high end). Low confidence, not a measurement: "
        "measure serum natalizumab before the first session."
    )
    refs.extend([SMPC_EU, VENNEGOOR_2015])
    return _estimate(
        starts,
        None,
        ctx,
        basis="dosing-history",
        remeasure_now=not persistent,
        zero=persistent,
    )


def _from_level(latest: NatalizumabLevel, ctx: _Context, zero: bool = False) -> PlexEstimate:
    sessions, scenarios, now, target = ctx.sessions, ctx.scenarios, ctx.now, ctx.target
    flags, notes, refs = ctx.flags, ctx.notes, ctx.refs
    value = latest.value_ug_per_ml
    age_days = _days(latest.drawn_at, now)
    factors = (1.0, 1.0, 1.0)
    remeasure_now = False
    post = _post_session(latest, sessions)
    if post is not None and latest.comparator is None:
        flags.append("post-session-sample")
        hours = (latest.drawn_at - post.performed_at) / timedelta(hours=1)
        notes.append(
            f"The latest level was drawn {hours:.0f} h after a session, before re-equilibration; it was "
            f"multiplied by {POST_SESSION_FACTOR:g} (range {POST_SESSION_FACTOR_LOW:g}-"
            f"{POST_SESSION_FACTOR_HIGH:g}). Please redraw the level before the next session."
        )
        factors = (POST_SESSION_FACTOR_LOW, POST_SESSION_FACTOR, POST_SESSION_FACTOR_HIGH)
        refs.append(HANAFUSA_2014)
        remeasure_now = True
    since = [s for s in sessions if s.performed_at > latest.drawn_at]  # all in (drawn_at, now]
    decay = decay_factor(age_days)
    starts = tuple(
        value * f * decay * product for f, product in zip(factors, _products(since, scenarios, ctx.plan_pv))
    )
    if age_days > 0 and not since:
        flags.append("decayed")
        notes.append(
            f"The level from {_ymd(latest.drawn_at)} was decayed to now with a half-life of "
            f"{HALF_LIFE_DAYS:g} days (US label); with the EU steady-state half-life of "
            f"{HALF_LIFE_SENSITIVITY_DAYS:g} days it would be "
            f"{value * decay_factor(age_days, HALF_LIFE_SENSITIVITY_DAYS):.2g} µg/mL."
        )
    elif since:
        flags.append("decayed")
        notes.append(
            f"The level from {_ymd(latest.drawn_at)} was carried through {len(since)} session(s) "
            f"since then and natural decay (half-life {HALF_LIFE_DAYS:g} days)."
        )
    if age_days > HALF_LIFE_DAYS:
        flags.append("old-level")
        remeasure_now = True
        notes.append(f"The level is {age_days:.0f} days old: a fresh pre-session level is advised.")

    upper = None
    if latest.comparator in ("<", "<="):
        if value <= target:
            flags.append("below-limit")
            notes.append(
                f"The level is below the assay limit ({latest.comparator}{value:g} µg/mL), at or below the "
                f"target of {target:g} µg/mL: no sessions are needed for drug clearance."
            )
            return _finish(ctx, "measured", SessionRange(0, 0, 0), latest, starts[1], ctx.levels)
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
    return _estimate(
        starts,
        latest,
        ctx,
        basis="measured",
        remeasure_now=remeasure_now and not zero,
        upper=bool(upper),
        zero=zero,
    )


def _estimate(
    starts: tuple[float, ...],
    latest: NatalizumabLevel | None,
    ctx: _Context,
    basis: Basis,
    remeasure_now: bool,
    upper: bool = False,
    zero: bool = False,
) -> PlexEstimate:
    """`zero`: persistent antibodies, no sessions needed whatever the level (the level is still shown)."""
    counts = [
        (0, False) if zero else _sessions_needed(start * ctx.lead, ctx.target, sc.r_plan)
        for start, sc in zip(starts, ctx.scenarios)
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
    return _finish(
        ctx,
        basis,
        remaining,
        latest,
        starts[1],
        ctx.levels,
        starts=starts,
        remeasure_at=ctx.now if remeasure_now else None,
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
) -> PlexEstimate:
    """Projection per planned session, expected target date, re-measurement, ordered-course check;
    builds the PlexEstimate (with `ctx.common`).

    `starts` (levels at now, before `ctx.lead`) is given when there is a projection to draw.
    """
    flags, notes, plan, first_at, lead = ctx.flags, ctx.notes, ctx.plan, ctx.first_at, ctx.lead
    step = timedelta(days=ctx.interval)
    projection: list[ProjectedPoint] = []
    target_at = None
    if rng is not None and starts is not None:
        count = min(max(rng.high, plan.ordered_sessions or 0, 1 if rng.estimate else 0), MAX_SESSIONS)
        (low0, mid0, high0), (r_low, r_mid, r_high) = (
            [s * lead for s in starts],
            [sc.r_plan for sc in ctx.scenarios],
        )
        at = first_at
        for j in range(1, count + 1):
            a, b, c = low0 * r_low**j, mid0 * r_mid**j, high0 * r_high**j
            at += step  # = first_at + step * j (timedelta arithmetic is exact)
            projection.append(
                ProjectedPoint(
                    session_number=j,
                    # equilibrated: when the next session (and a pre-session draw) would be
                    at=at,
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
                f"high end of the estimate ({rng.high}); consider stopping once a level confirms the target."
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
        **ctx.common,
    )
