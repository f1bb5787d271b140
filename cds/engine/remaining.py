"""How many PLEX sessions are still needed to bring serum natalizumab below a target?

The estimate on the model of pk.py: a measured level is carried to `now` through the sessions since it
was drawn and natural decay, then projected session by session (`estimate_remaining`). Without a usable
level it projects from the dosing history (low confidence), or asks for a measurement.

THE SAFETY INVARIANT (docs/safety.md, hazard H1). The estimate concludes "at or below target"
(0 sessions, "no more PLEX needed") only in `below_target.below_target_confirmed`, and only from a usable
serum or plasma natalizumab result drawn after the last known dose: quantitative in a mass-concentration
unit whose text and code agree (fhir_io lets no other through), or "<X" / qualitative below the assay's
limit X, with the value (or X) at or below the target. Not when the last dose is unknown, the sample
was drawn within 24 h after a session or on the same (date-only) day as a session or dose, a result
at the same time is above target, or a newer natalizumab result could not be used. Every other path
that would give 0 sessions concludes "measure-first" instead: the card says what to measure.

What the estimate rests on is returned as `PlexEstimate.notes`, each a Note with a code of NOTE_CODES
and its values; the estimate card writes the words.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from cds.engine.below_target import BelowTargetEvidence, below_target_confirmed
from cds.engine.domain import (
    NatalizumabLevel,
    Note,
    PatientFacts,
    PlexEstimate,
    PlexPlan,
    PlexSession,
    Reference,
    SessionRange,
    UnusableValue,
)
from cds.engine.drugs import LastDose, last_dose
from cds.engine.levels import (
    latest_of,
    persistent_antibodies,
    post_session_of,
    same_day_session,
    screen_levels,
    session_end,
)
from cds.engine.pk import (
    ADULT_AGE_YEARS,
    HALF_LIFE_DAYS,
    HALF_LIFE_LONG_DAYS,
    HALF_LIFE_SHORT_DAYS,
    REFERENCE_INTERVAL_DAYS,
    REFERENCE_PLASMA_VOLUMES,
    STEADY_STATE_CMAX_SD_UG_PER_ML,
    STEADY_STATE_CMAX_UG_PER_ML,
    days_between,
    decay_factor,
    dosing_history_levels,
    positive,
    post_session_factor,
)
from cds.engine.projection import CommonFields, EstimateContext, count_sessions, finish
from cds.engine.references import (
    HANAFUSA_2014,
    KHATRI_2009,
    LANDI_2017,
    MURALIDHARAN_2017,
    SMPC_EU,
    US_PI,
    VENNEGOOR_2015,
)
from cds.engine.removal_fit import removal_band, session_products

__all__ = ["NOTE_CODES", "estimate_remaining"]

# The codes of PlexEstimate.notes and the values each carries: levels in µg/mL, days as ISO dates
# ("2024-05-10", UTC); plain JSON values, so a stored estimate (cds.views.link_store) keeps them as they are.
NOTE_CODES: dict[str, tuple[str, ...]] = {
    "plan-defaulted": (),
    "immunoadsorption": (),
    "outside-population-age": ("age_years",),
    "weight-not-modelled": ("weight_kg",),
    "last-dose-unknown": (),
    "unusable-values": ("count",),
    "levels-before-last-dose": ("count",),
    "discordant-same-time": ("count",),
    "newer-unusable-result": (),
    "fit-excluded-old-level": ("count", "days"),
    "fitted-removal": ("r", "levels", "population"),
    "antibodies-no-level": (),
    "antibody-level-discordance": (),
    "measure-before-first-session": (),
    "no-data": (),
    "dosing-history": ("last_dose_on", "peak", "peak_sd", "half_life_short", "half_life_long"),
    "post-session-sample": ("hours", "factor", "plasma_volumes", "factor_low", "factor_high"),
    "date-ambiguous": ("drawn_on",),
    "decayed": (
        "drawn_on",
        "sessions_since",
        "half_life",
        "half_life_short",
        "half_life_long",
        "level_now",  # None for a censored level: no "about X now" from a "<X"
        "level_low",
        "level_high",
    ),
    "old-level": ("age_days",),
    "below-limit": ("comparator", "value", "qualitative"),
    "upper-bound": ("comparator", "value"),
    "lower-bound": ("comparator", "value"),
    "capped": ("max_sessions",),
    "projected-below-target": ("target", "level_now", "level_high", "sessions_high"),
    "remeasure-after-session": ("after_session",),
    "measure-before-next-session": (),
    "ordered-course-short": ("ordered", "estimate", "low", "high"),
    "ordered-course-long": ("ordered", "excess", "high"),
    "clearance-only": (),
}


@dataclass(frozen=True, slots=True)
class _History:
    """What the record says before any projection: the last dose, the sessions since, the levels."""

    dose: LastDose
    sessions: tuple[PlexSession, ...]
    levels: list[NatalizumabLevel]  # usable, drawn after the last dose, oldest first
    unusable: list[UnusableValue]
    latest: NatalizumabLevel | None
    newer_unusable: bool


# ---------------------------------------------------------------- the record before any projection


def _day(dt: datetime) -> str:
    """The (UTC) day of `dt` as YYYY-MM-DD."""
    return f"{dt:%Y-%m-%d}"


def _schedule(
    facts: PatientFacts, plan: PlexPlan, flags: list[str], notes: list[Note]
) -> tuple[float, float]:
    """(plasma volumes per session, interval in days) of the plan, or the reference schedule."""
    plan_pv, interval = plan.plasma_volumes_per_session, plan.interval_days
    if not positive(plan_pv) or not positive(interval):
        flags.append("plan-defaulted")
        notes.append(Note("plan-defaulted"))
        plan_pv, interval = REFERENCE_PLASMA_VOLUMES, REFERENCE_INTERVAL_DAYS
    if plan.modality == "immunoadsorption" or any(s.modality == "immunoadsorption" for s in facts.sessions):
        flags.append("immunoadsorption")
        notes.append(Note("immunoadsorption"))
    return plan_pv, interval


def _population_notes(facts: PatientFacts, now: datetime, flags: list[str], notes: list[Note]) -> None:
    """Age and weight: named when they put the patient outside what the model rests on."""
    born = facts.patient.birth_date
    if born is not None:
        today = now.date()
        age = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
        if 0 <= age < ADULT_AGE_YEARS:
            flags.append("outside-population-age")
            notes.append(Note("outside-population-age", {"age_years": age}))
    if facts.patient.weight_kg is not None:
        flags.append("weight-not-modelled")
        notes.append(Note("weight-not-modelled", {"weight_kg": facts.patient.weight_kg}))


def _newer_unusable(unusable: list[UnusableValue], latest: NatalizumabLevel | None, dose: LastDose) -> bool:
    """Whether a result that could not be used is newer than the level used (or than the last dose)."""
    return any(
        u.at is None
        or (latest is not None and u.at >= latest.drawn_at)
        or (latest is None and (dose.at is None or u.at > dose.at))
        for u in unusable
        if u.code != "future"
    )


def _history(facts: PatientFacts, now: datetime, flags: list[str], notes: list[Note]) -> _History:
    dose = last_dose(facts, now)
    if not dose.known:
        flags.append("last-dose-unknown")
        notes.append(Note("last-dose-unknown"))
    sessions = tuple(
        sorted((s for s in facts.sessions if s.performed_at <= now), key=lambda s: s.performed_at)
    )
    if dose.at is not None:
        sessions = tuple(s for s in sessions if s.performed_at > dose.at)
    levels, unusable = screen_levels(facts.levels, now)
    unusable += [u for u in facts.unusable if u.kind == "natalizumab level"]
    if unusable:
        flags.append("unusable-values")
        notes.append(Note("unusable-values", {"count": len(unusable)}))
    if dose.at is not None:
        before = [lv for lv in levels if lv.drawn_at < dose.at]
        if before:
            notes.append(Note("levels-before-last-dose", {"count": len(before)}))
        levels = [lv for lv in levels if lv.drawn_at >= dose.at]
    latest = latest_of(levels, flags, notes)
    newer_unusable = _newer_unusable(unusable, latest, dose)
    if newer_unusable:
        flags.append("newer-unusable-result")
        notes.append(Note("newer-unusable-result"))
    return _History(dose, sessions, levels, unusable, latest, newer_unusable)


def _last_dose_interval(facts: PatientFacts, dose: LastDose) -> float | None:
    for d in facts.doses:
        if d.given_at == dose.at and d.interval_days is not None:
            return d.interval_days
    return None


# ---------------------------------------------------------------- public entry point


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
    flags: list[str] = []
    notes: list[Note] = []
    refs: list[Reference] = [KHATRI_2009, US_PI, LANDI_2017]
    plan_pv, interval = _schedule(facts, plan, flags, notes)
    first_at = plan.first_session_at if plan.first_session_at and plan.first_session_at > now else now
    _population_notes(facts, now, flags, notes)
    history = _history(facts, now, flags, notes)
    removal = removal_band(history.levels, history.sessions, plan_pv, interval, flags, notes)
    if removal.r_fitted is not None:
        refs.append(VENNEGOOR_2015)
    common: CommonFields = {
        "target_ug_per_ml": target_ug_per_ml,
        "sessions_completed": len(history.sessions),
        "removal_fraction": removal.scenarios[1].r_plan,
        "removal_fraction_population": removal.r_population,
        "removal_fraction_fitted": removal.r_fitted,
        "half_life_days": HALF_LIFE_DAYS,
        "ordered_sessions": plan.ordered_sessions,
        "unusable": tuple(history.unusable),
    }
    ctx = EstimateContext(
        levels=tuple(history.levels),
        sessions=history.sessions,
        scenarios=removal.scenarios,
        plan_pv=plan_pv,
        interval=interval,
        first_at=first_at,
        lead=decay_factor(days_between(now, first_at)),
        now=now,
        target=target_ug_per_ml,
        plan=plan,
        dose=history.dose,
        dose_interval_days=_last_dose_interval(facts, history.dose),
        flags=flags,
        notes=notes,
        refs=refs,
        common=common,
        newer_unusable=history.newer_unusable,
    )
    return _conclude(facts, history.latest, ctx)


def _conclude(facts: PatientFacts, latest: NatalizumabLevel | None, ctx: EstimateContext) -> PlexEstimate:
    """From the latest level, else from the dosing history, else "measure first"."""
    if _antibodies_without_level(facts, latest, ctx):
        return _measure_first(ctx)
    if latest is not None:
        return _from_level(latest, ctx)
    if not ctx.dose.known or ctx.newer_unusable:
        ctx.refs.append(VENNEGOOR_2015)
        ctx.notes.append(Note("measure-before-first-session"))
        return _measure_first(ctx)
    if ctx.dose.at is None:
        ctx.flags.append("no-data")
        ctx.notes.append(Note("no-data"))
        ctx.refs.append(VENNEGOOR_2015)
        return _measure_first(ctx)
    return _from_dosing_history(ctx.dose.at, ctx)


def _antibodies_without_level(
    facts: PatientFacts, latest: NatalizumabLevel | None, ctx: EstimateContext
) -> bool:
    """Antibodies raise clearance; they never replace a measurement (Muralidharan 2017, EU SmPC).

    True when antibodies are on record and no usable level: the estimate then asks for a level."""
    persistent, single = persistent_antibodies(facts.antibodies, ctx.now)
    if not (persistent or single):
        return False
    ctx.flags.append("persistent-antibodies" if persistent else "single-positive-antibody")
    ctx.refs.extend([MURALIDHARAN_2017, SMPC_EU])
    if latest is None:
        ctx.flags.append("antibodies-no-level")
        ctx.notes.append(Note("antibodies-no-level"))
        return True
    if latest.comparator is None and latest.value_ug_per_ml > ctx.target:
        ctx.flags.append("antibody-level-discordance")
        ctx.notes.append(Note("antibody-level-discordance"))
    return False


def _measure_first(ctx: EstimateContext) -> PlexEstimate:
    return finish(ctx, "none", None, None, None, (), remeasure_at=ctx.now, measure=True)


def _from_dosing_history(dose_at: datetime, ctx: EstimateContext) -> PlexEstimate:
    """No usable level: the label's steady state decayed since the last infusion (low confidence)."""
    ctx.flags.append("dosing-history")
    low, mid, high = dosing_history_levels(
        days_between(dose_at, ctx.now), ctx.dose.dose_mg, ctx.dose_interval_days
    )
    products = session_products(list(ctx.sessions), ctx.scenarios, ctx.plan_pv)
    starts = (low * products[0], mid * products[1], high * products[2])
    ctx.notes.append(
        Note(
            "dosing-history",
            {
                "last_dose_on": _day(dose_at),
                "peak": STEADY_STATE_CMAX_UG_PER_ML,
                "peak_sd": STEADY_STATE_CMAX_SD_UG_PER_ML,
                "half_life_short": HALF_LIFE_SHORT_DAYS,
                "half_life_long": HALF_LIFE_LONG_DAYS,
            },
        )
    )
    ctx.refs.extend([SMPC_EU, VENNEGOOR_2015])
    return count_sessions(starts, None, ctx, basis="dosing-history", remeasure_now=True)


# ---------------------------------------------------------------- from a measured level


@dataclass(frozen=True, slots=True)
class _Timing:
    """When the latest level was drawn relative to the sessions and the last dose."""

    post: PlexSession | None  # the session it was drawn within 24 h after
    same_day: PlexSession | None  # a session on its (date-only) day
    ambiguous: bool  # drawn on the day of a session or dose, the order unknown
    dose_same_day: bool  # ambiguous about the last dose
    factors: tuple[float, float, float]  # equilibrated / measured, per scenario


def _timing(latest: NatalizumabLevel, ctx: EstimateContext) -> _Timing:
    """The sample's timing; names a post-session or ambiguous sample (both call for a redraw)."""
    post = post_session_of(latest, ctx.sessions)
    same_day = same_day_session(latest, ctx.sessions)
    dose_same_day = ctx.dose.at is not None and ctx.dose.at.date() == latest.drawn_at.date()
    ambiguous = same_day is not None or (dose_same_day and (latest.date_only or ctx.dose.date_only))
    factors = (1.0, 1.0, 1.0)
    if post is not None:
        ctx.flags.append("post-session-sample")
        pv = post.plasma_volumes if positive(post.plasma_volumes) else ctx.plan_pv
        low, mid, high = (post_session_factor(pv, sc.intravascular_fraction) for sc in ctx.scenarios)
        factors = (low, mid, high)
        hours = (latest.drawn_at - session_end(post)) / timedelta(hours=1)
        ctx.notes.append(
            Note(
                "post-session-sample",
                {
                    "hours": max(hours, 0),
                    "factor": mid,
                    "plasma_volumes": pv,
                    "factor_low": min(factors),
                    "factor_high": max(factors),
                },
            )
        )
        ctx.refs.append(HANAFUSA_2014)
    elif ambiguous:
        ctx.flags.append("date-ambiguous")
        ctx.notes.append(Note("date-ambiguous", {"drawn_on": _day(latest.drawn_at)}))
        if same_day is not None:
            pv = same_day.plasma_volumes if positive(same_day.plasma_volumes) else ctx.plan_pv
            factors = (1.0, 1.0, post_session_factor(pv, ctx.scenarios[2].intravascular_fraction))
    return _Timing(post, same_day, ambiguous, dose_same_day, factors)


def _carried(latest: NatalizumabLevel, timing: _Timing, ctx: EstimateContext) -> list[float]:
    """(low, central, high) level at `now`: the level corrected, decayed and carried through sessions."""
    age_days = days_between(latest.drawn_at, ctx.now)
    since = [s for s in ctx.sessions if s.performed_at > latest.drawn_at]  # all in (drawn_at, now]
    decays = (
        decay_factor(age_days, HALF_LIFE_SHORT_DAYS),
        decay_factor(age_days),
        decay_factor(age_days, HALF_LIFE_LONG_DAYS),
    )
    products = session_products(since, ctx.scenarios, ctx.plan_pv)
    if timing.ambiguous and timing.same_day is not None:
        # high end: drawn just after the same-day session, which then is not "since" the sample
        others = [s for s in since if s is not timing.same_day]
        products[2] = session_products(others, ctx.scenarios, ctx.plan_pv)[2]
    value = latest.value_ug_per_ml
    starts = [value * f * d * p for f, d, p in zip(timing.factors, decays, products)]
    if timing.ambiguous and timing.dose_same_day and ctx.dose.at is not None:
        # the sample may predate the infusion: the high end is then the dose's projection
        dh = dosing_history_levels(
            days_between(ctx.dose.at, ctx.now), ctx.dose.dose_mg, ctx.dose_interval_days
        )
        starts[2] = max(starts[2], dh[2] * products[2])
    if age_days > 0:
        ctx.flags.append("decayed")
        censored = latest.comparator is not None
        ctx.notes.append(
            Note(
                "decayed",
                {
                    "drawn_on": _day(latest.drawn_at),
                    "sessions_since": len(since),
                    "half_life": HALF_LIFE_DAYS,
                    "half_life_short": HALF_LIFE_SHORT_DAYS,
                    "half_life_long": HALF_LIFE_LONG_DAYS,
                    "level_now": None if censored else starts[1],
                    "level_low": min(starts),
                    "level_high": max(starts),
                },
            )
        )
    if age_days > HALF_LIFE_DAYS:
        ctx.flags.append("old-level")
        ctx.notes.append(Note("old-level", {"age_days": age_days}))
    return starts


def _censoring(latest: NatalizumabLevel, ctx: EstimateContext) -> bool:
    """Names a censored level ("<X", ">X"); True when "<X" is above target (the estimate is a maximum)."""
    value = latest.value_ug_per_ml
    if latest.comparator in ("<", "<="):
        if value <= ctx.target:
            ctx.flags.append("below-limit")
            ctx.notes.append(
                Note(
                    "below-limit",
                    {"comparator": latest.comparator, "value": value, "qualitative": latest.qualitative},
                )
            )
            return False
        ctx.flags.append("upper-bound")
        ctx.notes.append(Note("upper-bound", {"comparator": latest.comparator, "value": value}))
        return True
    if latest.comparator in (">", ">="):
        ctx.flags.append("lower-bound")
        ctx.notes.append(Note("lower-bound", {"comparator": latest.comparator, "value": value}))
    return False


def _same_time_above(latest: NatalizumabLevel, ctx: EstimateContext) -> bool:
    return any(
        lv.drawn_at == latest.drawn_at
        and lv.value_ug_per_ml > ctx.target
        and lv.comparator not in ("<", "<=")
        for lv in ctx.levels
    )


def _from_level(latest: NatalizumabLevel, ctx: EstimateContext) -> PlexEstimate:
    timing = _timing(latest, ctx)
    starts = _carried(latest, timing, ctx)
    old = days_between(latest.drawn_at, ctx.now) > HALF_LIFE_DAYS
    remeasure_now = (
        ctx.newer_unusable or not ctx.dose.known or timing.post is not None or timing.ambiguous or old
    )
    upper = _censoring(latest, ctx)
    evidence = BelowTargetEvidence(
        level=latest,
        target_ug_per_ml=ctx.target,
        dose=ctx.dose,
        now=ctx.now,
        post_session=timing.post is not None,
        ambiguous_day=timing.ambiguous,
        same_time_above_target=_same_time_above(latest, ctx),
        newer_unusable=ctx.newer_unusable,
    )
    if below_target_confirmed(evidence):
        ctx.refs.append(VENNEGOOR_2015)
        return finish(ctx, "measured", SessionRange(0, 0, 0), latest, starts[1], ctx.levels, confirmed=True)
    return count_sessions(
        tuple(starts), latest, ctx, basis="measured", remeasure_now=remeasure_now, upper=upper
    )
