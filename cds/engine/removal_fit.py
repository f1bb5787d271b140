"""How much each PLEX session removes: the population band, or a patient-specific fit to measured levels.

With two or more equilibrated levels bracketing sessions, a patient-specific per-session removal is
fitted to all of them (least squares on log level after correcting for natural decay; with two levels
this is the reference's (C_later/C_earlier)^(1/k)), clipped to [0.3, 0.8], and takes precedence; the
range is then r_fit ± 0.05 (clipped), so it always contains the estimate (clinical-reference §7.1).
Without a fit, the band is the population one (pk.F_IV_FAST / INTRAVASCULAR_FRACTION / pk.F_IV_SLOW).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

from cds.engine.domain import NatalizumabLevel, Note, PlexSession
from cds.engine.levels import post_session_of
from cds.engine.pk import (
    F_IV_FAST,
    F_IV_SLOW,
    FIT_PRE_COURSE_DAYS,
    HALF_LIFE_DAYS,
    INTRAVASCULAR_FRACTION,
    R_FIT_HALF_WIDTH,
    R_FIT_MAX,
    R_FIT_MIN,
    days_between,
    decay_factor,
    positive,
    removal_per_session,
)

__all__ = ["Removal", "Scenario", "fit_removal", "removal_band", "session_products"]


@dataclass(frozen=True, slots=True)
class Scenario:
    """One of low / central / high: how each past session removes drug and r per planned session."""

    removal: float | None  # per-session removal for a patient fit (any volume); None: population
    intravascular_fraction: float
    r_plan: float


@dataclass(frozen=True, slots=True)
class Removal:
    """The low / central / high scenarios and the two removal figures the estimate reports."""

    scenarios: tuple[Scenario, Scenario, Scenario]
    r_population: float
    r_fitted: float | None


def session_products(
    window: list[PlexSession], scenarios: tuple[Scenario, ...], plan_pv: float
) -> list[float]:
    """Per scenario, the product of the removal factors of the sessions in `window`, in order.

    `window` is the sessions in (since, now] (every session the estimate keeps is ≤ now):
    a level at `since` carried to `now` is level · decay(now - since) · product.
    """
    products: list[float] = []
    for sc in scenarios:
        product = 1.0
        for s in window:
            if sc.removal is not None:
                product *= sc.removal
            else:
                pv = s.plasma_volumes
                product *= removal_per_session(pv if positive(pv) else plan_pv, sc.intravascular_fraction)
        products.append(product)
    return products


def fit_removal(
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
    k = math.log(2) / HALF_LIFE_DAYS
    done = [s.performed_at for s in sessions]
    xs = [float(len([at for at in done if at < lv.drawn_at])) for lv in levels]
    ys = [math.log(lv.value_ug_per_ml) + k * days_between(t0, lv.drawn_at) for lv in levels]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum([(x - mx) ** 2 for x in xs])
    if sxx == 0:
        return None
    slope = sum([(x - mx) * (y - my) for x, y in zip(xs, ys)]) / sxx
    return math.exp(slope), len(levels)


def _fit_levels(
    levels: list[NatalizumabLevel], sessions: tuple[PlexSession, ...]
) -> tuple[list[NatalizumabLevel], int]:
    """(the equilibrated levels drawn in the course, how many equilibrated levels were older).

    Without a session no fit is possible (every level has the same session count)."""
    equilibrated = [
        lv
        for lv in levels
        if lv.comparator is None and post_session_of(lv, sessions) is None and not lv.date_only
    ]
    if not sessions:
        return equilibrated, 0
    course_start = sessions[0].performed_at - timedelta(days=FIT_PRE_COURSE_DAYS)
    in_course = [lv for lv in equilibrated if lv.drawn_at >= course_start]
    return in_course, len(equilibrated) - len(in_course)


def removal_band(
    levels: list[NatalizumabLevel],
    sessions: tuple[PlexSession, ...],
    plan_pv: float,
    interval_days: float,
    flags: list[str],
    notes: list[Note],
) -> Removal:
    """The scenarios for the plan: fitted to the patient's levels when they allow it, else the population's.

    Appends the fit's flags and notes; `levels` are the usable levels, oldest first."""
    interval_decay = decay_factor(interval_days)
    r_population = removal_per_session(plan_pv) * interval_decay
    population = (
        Scenario(None, F_IV_FAST, removal_per_session(plan_pv, F_IV_FAST) * interval_decay),
        Scenario(None, INTRAVASCULAR_FRACTION, r_population),
        Scenario(None, F_IV_SLOW, removal_per_session(plan_pv, F_IV_SLOW) * interval_decay),
    )
    in_course, left_out = _fit_levels(levels, sessions)
    fit = fit_removal(in_course, sessions)
    if fit is None:
        return Removal(population, r_population, None)
    if left_out:
        flags.append("fit-excluded-old-level")
        notes.append(Note("fit-excluded-old-level", {"count": left_out, "days": FIT_PRE_COURSE_DAYS}))
    q, used = fit
    raw = q * interval_decay
    r_fitted = min(max(raw, R_FIT_MIN), R_FIT_MAX)
    flags.append("fitted-removal")
    if r_fitted != raw:
        flags.append("fit-clipped")
    notes.append(Note("fitted-removal", {"r": r_fitted, "levels": used, "population": r_population}))
    low, high = max(r_fitted - R_FIT_HALF_WIDTH, R_FIT_MIN), min(r_fitted + R_FIT_HALF_WIDTH, R_FIT_MAX)
    fitted = (
        Scenario(low / interval_decay, INTRAVASCULAR_FRACTION, low),
        Scenario(r_fitted / interval_decay, INTRAVASCULAR_FRACTION, r_fitted),
        Scenario(high / interval_decay, INTRAVASCULAR_FRACTION, high),
    )
    return Removal(fitted, r_population, r_fitted)
