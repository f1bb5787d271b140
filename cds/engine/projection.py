"""The session count and the course: from the carried level to the PlexEstimate.

`count_sessions` turns the (low, central, high) level at `now` into the sessions needed at the plan's
per-session remaining fraction; `finish` adds the projection per planned session, the re-measurement,
the ordered-course check and builds the PlexEstimate. The state the estimate's paths share is an
`EstimateContext` (cds.engine.remaining builds it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypedDict

from cds.engine.domain import (
    Basis,
    Conclusion,
    NatalizumabLevel,
    Note,
    PlexEstimate,
    PlexPlan,
    PlexSession,
    ProjectedPoint,
    Reference,
    SessionRange,
    UnusableValue,
)
from cds.engine.drugs import LastDose
from cds.engine.pk import MAX_SESSIONS, ORDERED_EXCESS_SESSIONS, REMEASURE_AFTER_SESSIONS
from cds.engine.removal_fit import Scenario

__all__ = ["CommonFields", "EstimateContext", "count_sessions", "finish"]


class CommonFields(TypedDict):
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
class EstimateContext:
    """Per-call state shared by the estimate paths; flags, notes and refs are appended to in place."""

    levels: tuple[NatalizumabLevel, ...]
    sessions: tuple[PlexSession, ...]
    scenarios: tuple[Scenario, ...]
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
    notes: list[Note]
    refs: list[Reference]
    common: CommonFields
    newer_unusable: bool = False


def _sessions_needed(start: float, target: float, r: float) -> tuple[int, bool]:
    """Smallest n with start·r**n ≤ target (0 if already there); capped at MAX_SESSIONS."""
    n, value = 0, start
    while value > target:
        if n >= MAX_SESSIONS:
            return n, True
        value *= r
        n += 1
    return n, False


def count_sessions(
    starts: tuple[float, ...],
    latest: NatalizumabLevel | None,
    ctx: EstimateContext,
    basis: Basis,
    remeasure_now: bool,
    upper: bool = False,
) -> PlexEstimate:
    counts = [
        _sessions_needed(start * ctx.lead, ctx.target, sc.r_plan) for start, sc in zip(starts, ctx.scenarios)
    ]
    if any(capped for _, capped in counts):
        ctx.flags.append("capped")
        ctx.notes.append(Note("capped", {"max_sessions": MAX_SESSIONS}))
    low, est, high = (n for n, _ in counts)
    if upper:
        low = 0
    remaining = SessionRange(estimate=est, low=min(low, est), high=max(high, est))
    measure = remaining.estimate == 0
    if measure:
        ctx.flags.append("projected-below-target")
        ctx.notes.append(
            Note(
                "projected-below-target",
                {
                    "target": ctx.target,
                    "level_now": starts[1],
                    "level_high": max(starts),
                    "sessions_high": remaining.high,
                },
            )
        )
    return finish(
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


def _projection(
    rng: SessionRange, starts: tuple[float, ...], ctx: EstimateContext
) -> tuple[tuple[ProjectedPoint, ...], datetime | None]:
    """(the projected level after each planned session, when the target is expected)."""
    step = timedelta(days=ctx.interval)
    count = min(max(rng.high, ctx.plan.ordered_sessions or 0, 1 if rng.estimate else 0), MAX_SESSIONS)
    low0, mid0, high0 = (s * ctx.lead for s in starts)
    r_low, r_mid, r_high = (sc.r_plan for sc in ctx.scenarios)
    points: list[ProjectedPoint] = []
    for j in range(1, count + 1):
        a, b, c = low0 * r_low**j, mid0 * r_mid**j, high0 * r_high**j
        points.append(
            ProjectedPoint(
                session_number=j,
                # session j happens at first_at + (j-1)·step; its equilibrated level is
                # what the next pre-session draw would show, one interval later
                at=ctx.first_at + step * j,
                level_ug_per_ml=b,
                low_ug_per_ml=min(a, b, c),
                high_ug_per_ml=max(a, b, c),
            )
        )
    target_at = ctx.first_at + step * rng.estimate if rng.estimate > 0 else None
    return tuple(points), target_at


def _ordered_course(rng: SessionRange, ctx: EstimateContext) -> None:
    """Names an ordered course shorter than the estimate, or much longer than its high end."""
    ordered = ctx.plan.ordered_sessions
    if ordered is None:
        return
    if ordered < rng.estimate:
        ctx.flags.append("ordered-course-short")
        ctx.notes.append(
            Note(
                "ordered-course-short",
                {"ordered": ordered, "estimate": rng.estimate, "low": rng.low, "high": rng.high},
            )
        )
    elif ordered >= rng.high + ORDERED_EXCESS_SESSIONS:
        ctx.flags.append("ordered-course-long")
        ctx.notes.append(
            Note(
                "ordered-course-long",
                {"ordered": ordered, "excess": ORDERED_EXCESS_SESSIONS, "high": rng.high},
            )
        )


def finish(
    ctx: EstimateContext,
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
    conclusion: Conclusion = (
        "at-or-below-target"
        if confirmed
        else "measure-first"
        if (measure or rng is None)
        else "sessions-needed"
    )
    projection: tuple[ProjectedPoint, ...] = ()
    target_at = None
    if rng is not None and starts is not None:
        projection, target_at = _projection(rng, starts, ctx)
    remeasure_after = None
    if rng is not None and rng.estimate > 0 and remeasure_at is None:
        remeasure_after = max(1, min(rng.estimate - 1, REMEASURE_AFTER_SESSIONS))
        # before session remeasure_after + 1
        remeasure_at = ctx.first_at + timedelta(days=ctx.interval) * remeasure_after
        ctx.notes.append(Note("remeasure-after-session", {"after_session": remeasure_after}))
    elif remeasure_at is not None:
        ctx.notes.append(Note("measure-before-next-session"))
    if rng is not None:
        _ordered_course(rng, ctx)
    ctx.notes.append(Note("clearance-only"))
    return PlexEstimate(
        basis=basis,
        remaining=rng,
        starting_level=starting_level,
        adjusted_level_ug_per_ml=adjusted_level,
        levels_used=levels_used,
        projection=projection,
        target_expected_at=target_at,
        remeasure_at=remeasure_at,
        remeasure_after_session=remeasure_after,
        flags=tuple(dict.fromkeys(ctx.flags)),
        notes=tuple(ctx.notes),
        references=tuple(dict.fromkeys(ctx.refs)),
        conclusion=conclusion,
        **ctx.common,
    )
