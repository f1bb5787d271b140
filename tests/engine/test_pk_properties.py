"""Property tests of the PLEX estimate (issue 2 acceptance): monotone in drug and target, range ⊇ estimate."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from cds.engine.domain import (
    AntibodyResult,
    NatalizumabLevel,
    PatientFacts,
    PlexEstimate,
    PlexPlan,
    PlexSession,
    SessionRange,
)
from cds.engine.remaining import estimate_remaining

from .conftest import NOW, days

values = st.floats(min_value=0.01, max_value=260.0, allow_nan=False)  # within MAX_PLAUSIBLE_UG_PER_ML
targets = st.floats(min_value=0.1, max_value=5.0, allow_nan=False)
ages = st.floats(min_value=0.0, max_value=60.0, allow_nan=False)
plans = st.builds(
    PlexPlan,
    plasma_volumes_per_session=st.sampled_from([0.7, 1.0, 1.5, 2.0, 2.5]),
    interval_days=st.sampled_from([1.0, 2.0, 3.0, 7.0]),
    ordered_sessions=st.none() | st.integers(0, 12),
    first_session_at=st.none() | st.floats(0, 10).map(lambda d: NOW + days(d)),
)
session_ages = st.lists(st.floats(min_value=0.05, max_value=20.0), max_size=6, unique=True)


@st.composite
def facts(draw: st.DrawFn) -> PatientFacts:
    levels = tuple(
        NatalizumabLevel(
            draw(values), NOW - days(draw(ages)), comparator=draw(st.sampled_from([None, None, "<", ">"]))
        )
        for _ in range(draw(st.integers(0, 4)))
    )
    sessions = tuple(
        PlexSession(NOW - days(a), plasma_volumes=draw(st.sampled_from([None, 1.0, 1.5])))
        for a in draw(session_ages)
    )
    antibodies = tuple(
        AntibodyResult(draw(st.booleans()), NOW - days(draw(ages))) for _ in range(draw(st.integers(0, 2)))
    )
    return PatientFacts(levels=levels, sessions=sessions, antibodies=antibodies)


def _counted(e: PlexEstimate) -> SessionRange | None:
    """The range, with "measure-first" (a projected 0, not confirmed) counted as 0 sessions."""
    if e.remaining is None and e.conclusion == "measure-first" and e.basis != "none":
        return SessionRange(0, 0, 0)
    return e.remaining


@settings(max_examples=300)
@given(facts(), plans, targets)
def test_below_target_only_from_a_level_at_or_below_target(
    f: PatientFacts, plan: PlexPlan, target: float
) -> None:
    e = estimate_remaining(f, plan, target, NOW)
    if e.conclusion == "at-or-below-target":
        lv = e.starting_level
        assert lv is not None and lv.value_ug_per_ml <= target and lv.comparator not in (">", ">=")
        assert e.remaining == SessionRange(0, 0, 0)
    elif e.remaining is not None:
        assert e.remaining.estimate > 0  # a 0 is never shown without the invariant


@settings(max_examples=300)
@given(facts(), plans, targets)
def test_range_always_contains_the_estimate(f: PatientFacts, plan: PlexPlan, target: float) -> None:
    e = estimate_remaining(f, plan, target, NOW)
    if e.basis == "none" or e.remaining is None:
        assert e.remaining is None and e.conclusion == "measure-first"
        return
    if e.basis == "measured":
        assert e.starting_level is not None and e.starting_level in e.levels_used  # cards rely on it
    else:
        assert e.starting_level is None
    assert 0 <= e.remaining.low <= e.remaining.estimate <= e.remaining.high
    for p in e.projection:
        assert p.low_ug_per_ml <= p.level_ug_per_ml <= p.high_ug_per_ml
    if e.remaining.estimate == 0:
        assert e.target_expected_at is None and e.conclusion == "at-or-below-target"


@settings(max_examples=300)
@given(values, values, ages, plans, targets, session_ages)
def test_more_drug_never_needs_fewer_sessions(
    a: float, b: float, age: float, plan: PlexPlan, target: float, past: list[float]
) -> None:
    low, high = sorted((a, b))
    sessions = tuple(PlexSession(NOW - days(s)) for s in past)

    def run(v: float):  # type: ignore[no-untyped-def]
        return _counted(
            estimate_remaining(
                PatientFacts(levels=(NatalizumabLevel(v, NOW - days(age)),), sessions=sessions),
                plan,
                target,
                NOW,
            )
        )

    r_low, r_high = run(low), run(high)
    assert r_low is not None and r_high is not None
    assert r_low.estimate <= r_high.estimate
    assert r_low.low <= r_high.low
    assert r_low.high <= r_high.high


@settings(max_examples=300)
@given(facts(), plans, targets, targets)
def test_higher_target_never_needs_more(f: PatientFacts, plan: PlexPlan, t1: float, t2: float) -> None:
    lo, hi = sorted((t1, t2))
    e_lo, e_hi = estimate_remaining(f, plan, lo, NOW), estimate_remaining(f, plan, hi, NOW)
    r_lo, r_hi = _counted(e_lo), _counted(e_hi)
    if r_lo is None:
        assert r_hi is None
        return
    assert r_hi is not None
    assert r_hi.estimate <= r_lo.estimate
    assert r_hi.high <= r_lo.high


@given(values, ages, targets)
def test_a_dosing_history_is_never_reported_as_measured(v: float, age: float, target: float) -> None:
    from cds.engine.domain import NatalizumabDose

    f = PatientFacts(doses=(NatalizumabDose(NOW - days(age)),))
    e = estimate_remaining(f, PlexPlan(), target, NOW)
    assert e.basis == "dosing-history" and e.starting_level is None and e.levels_used == ()
    measured = estimate_remaining(replace(f, levels=(NatalizumabLevel(v, NOW),)), PlexPlan(), target, NOW)
    assert measured.basis == "measured"
