"""Remaining-PLEX estimate: every expected number cites clinical-reference.md (§ given per case)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import timedelta

import pytest

from cds.engine.domain import (
    AntibodyResult,
    MedicationUse,
    NoteValue,
    PatientFacts,
    PlexEstimate,
    PlexPlan,
    SessionRange,
    UnusableValue,
)
from cds.engine.pk import (
    HALF_LIFE_DAYS,
    decay_factor,
    dosing_history_levels,
    post_session_factor,
    removal_per_session,
    session_remaining_fraction,
)
from cds.engine.remaining import estimate_remaining

from .conftest import NOW, days, dose, level, session

PLAN = PlexPlan()  # 1.5 PV every other day (reference §7)


def note(e: PlexEstimate, code: str) -> Mapping[str, NoteValue]:
    """The values of the estimate's one note with `code` (fails when there is none)."""
    found = [n.values for n in e.notes if n.code == code]
    assert len(found) == 1, [n.code for n in e.notes]
    return found[0]


def est(facts: PatientFacts, plan: PlexPlan = PLAN, target: float = 1.0):  # type: ignore[no-untyped-def]
    return estimate_remaining(facts, plan, target, NOW)


def reference_n(c: float, t: float, r: float) -> int:
    """clinical-reference §7.1: n = 0 if C ≤ T else ceil(ln(T/C)/ln r)."""
    return 0 if c <= t else math.ceil(math.log(t / c) / math.log(r))


# ---------------------------------------------------------------- calibration


def test_per_session_fraction_matches_reference() -> None:
    # §2.1 / §7.1: 0.573 × e^(−2·ln2/11) = 0.505 for 1.5 PV q2d; 0.575 for 1.0 PV q2d.
    assert session_remaining_fraction(1.5, 2.0) == pytest.approx(0.505, abs=0.001)
    assert session_remaining_fraction(1.0, 2.0) == pytest.approx(0.575, abs=0.001)
    # §1.3: single-pool removal 1 − e^(−PV): 1.5 PV removes 78% of the intravascular drug.
    assert 1 - math.exp(-1.5) == pytest.approx(0.777, abs=0.001)
    assert removal_per_session(1.5) == pytest.approx(1 - 0.55 * 0.777, abs=0.001)


def test_khatri_2009_calibration() -> None:
    """Khatri 2009 (§2.1): 3 × 1.5 PV over 5 days → serum natalizumab −92% one week after the 3rd PLEX.

    Model: a pre-PLEX level, sessions on days 0, 2, 4, measured on day 11 (7 days after session 3);
    the reference's working gives 91% (§2.1 consistency check).
    """
    start = NOW - days(11)
    facts = PatientFacts(
        levels=(level(40.0, days_ago=11 + 1 / 24),),  # drawn 1 h before the first session
        sessions=(session(11), session(9), session(7)),
    )
    e = est(facts)
    assert e.adjusted_level_ug_per_ml is not None
    reduction = 1 - e.adjusted_level_ug_per_ml / 40.0
    assert reduction == pytest.approx(0.92, abs=0.02)  # Khatri's mean
    assert reduction == pytest.approx(0.91, abs=0.01)  # reference model
    assert e.sessions_completed == 3
    assert start < NOW
    # With the EU steady-state half-life (16 d) the reference gives 89% (§2.1).
    slow = removal_per_session(1.5) ** 3 * decay_factor(12, 16.0)
    assert 1 - slow == pytest.approx(0.89, abs=0.01)


def test_band_is_calibrated_to_reference_r_low_high() -> None:
    # §7.1: r_low 0.45, r_high 0.60 at 1.5 PV q2d. C = 30 µg/mL → n(0.45) = 5, n(0.60) = 7.
    e = est(PatientFacts(levels=(level(30.0),)))
    assert e.remaining == SessionRange(
        estimate=reference_n(30, 1, 0.505), low=reference_n(30, 1, 0.45), high=reference_n(30, 1, 0.60)
    )


# ---------------------------------------------------------------- reference table (§7.1 formula)


@pytest.mark.parametrize(
    ("c", "target", "expected"),
    [
        (30.0, 1.0, (5, 5, 7)),  # ln(1/30)/ln 0.505 = 4.98 → 5; /ln 0.45 = 4.26 → 5; /ln 0.60 = 6.66 → 7
        (10.0, 1.0, (4, 3, 5)),  # 3.37 → 4; 2.88 → 3; 4.51 → 5
        (2.0, 1.0, (2, 1, 2)),  # 1.02 → 2; 0.87 → 1; 1.36 → 2
        (100.0, 1.0, (7, 6, 10)),  # 6.75 → 7; 5.77 → 6; 9.02 → 10
        (30.0, 2.0, (4, 4, 6)),  # alt target 2.0 µg/mL (§3): 3.97 → 4; 3.39 → 4; 5.30 → 6
        (18.2, 1.0, (5, 4, 6)),  # EID nadir 18.2 µg/mL (Foley 2019, §1.2): 4.25 → 5; 3.63 → 4; 5.68 → 6
        (1.0, 1.0, (0, 0, 0)),  # at target: n = 0 (§7.1)
        (0.8, 1.0, (0, 0, 0)),
    ],
)
def test_reference_table(c: float, target: float, expected: tuple[int, int, int]) -> None:
    e = est(PatientFacts(levels=(level(c),)), target=target)
    assert e.basis == "measured"
    assert e.remaining == SessionRange(*expected)
    assert e.remaining.estimate == reference_n(c, target, 0.505)


def test_one_plasma_volume_needs_more_sessions() -> None:
    # §7.1: r = 0.57 for 1.0 PV: 30 µg/mL → ceil(ln(1/30)/ln 0.575) = 7 (vs 5 at 1.5 PV).
    e = est(PatientFacts(levels=(level(30.0),)), plan=PlexPlan(plasma_volumes_per_session=1.0))
    assert e.remaining is not None and e.remaining.estimate == reference_n(30, 1, 0.575) == 7
    assert e.removal_fraction == pytest.approx(0.575, abs=0.001)
    assert e.remaining.low <= 7 <= e.remaining.high


# ---------------------------------------------------------------- decay of an old level


def test_old_level_decays_with_label_half_life() -> None:
    # §1.1 engine note: C_now = C·exp(−d·ln2/t½), t½ = 11 d; 20 µg/mL 11 days ago → 10 µg/mL.
    e = est(PatientFacts(levels=(level(20.0, days_ago=11),)))
    assert e.half_life_days == HALF_LIFE_DAYS == 11.0
    assert e.adjusted_level_ug_per_ml == pytest.approx(10.0, rel=1e-9)
    assert "decayed" in e.flags
    assert e.remaining is not None and e.remaining.estimate == reference_n(10.0, 1, 0.505)
    # the range spans the published half-lives: 7 d (US 11 - 4) to 28.2 d (EU population model)
    decayed = note(e, "decayed")
    assert (decayed["half_life_short"], decayed["half_life"], decayed["half_life_long"]) == (7.0, 11.0, 28.2)
    hi = est(PatientFacts(levels=(level(20.0, days_ago=11),)))
    assert e.remaining.high == reference_n(20 * 2 ** (-11 / 28.2), 1, 0.60) == hi.remaining.high


def test_level_older_than_a_half_life_asks_for_a_fresh_level() -> None:
    e = est(PatientFacts(levels=(level(20.0, days_ago=22),)))
    assert e.adjusted_level_ug_per_ml == pytest.approx(5.0, rel=1e-9)  # two half-lives
    assert "old-level" in e.flags
    assert e.remeasure_at == NOW


def test_level_carried_through_sessions_since() -> None:
    # sessions after the draw remove 1 − 0.55(1 − e^−1.5) each (§7.1) on top of natural decay
    facts = PatientFacts(levels=(level(30.0, days_ago=4.5),), sessions=(session(4), session(2)))
    e = est(facts)
    expected = 30.0 * removal_per_session(1.5) ** 2 * decay_factor(4.5)
    assert e.adjusted_level_ug_per_ml == pytest.approx(expected, rel=1e-9)
    assert e.sessions_completed == 2


def test_recorded_session_volume_is_used() -> None:
    facts = PatientFacts(levels=(level(30.0, days_ago=3),), sessions=(session(2, pv=1.0),))
    e = est(facts)
    assert e.adjusted_level_ug_per_ml == pytest.approx(
        30.0 * removal_per_session(1.0) * decay_factor(3), rel=1e-9
    )


# ---------------------------------------------------------------- patient-specific removal


def test_two_levels_bracketing_sessions_give_fitted_r() -> None:
    # §7.1: r_obs = (C_later/C_earlier)^(1/k) = (10/40)^(1/3) = 0.630 when sessions are 2 days apart.
    minute = 1 / (24 * 60)
    facts = PatientFacts(
        levels=(level(40.0, days_ago=6), level(10.0, days_ago=0)),
        sessions=(session(6 - minute), session(4 - minute), session(2 - minute)),
    )
    e = est(facts)
    assert e.removal_fraction_fitted == pytest.approx(0.25 ** (1 / 3), abs=0.001)
    assert e.removal_fraction == e.removal_fraction_fitted  # takes precedence
    assert e.removal_fraction_population == pytest.approx(0.505, abs=0.001)  # both shown
    assert "fitted-removal" in e.flags
    assert e.remaining is not None
    assert e.remaining.estimate == reference_n(10.0, 1.0, 0.25 ** (1 / 3)) == 5
    # range r_fit ± 0.05: n(0.58) = 5, n(0.68) = 6
    assert (e.remaining.low, e.remaining.high) == (reference_n(10, 1, 0.58), reference_n(10, 1, 0.68))
    # the population model would have said 4: the patient clears more slowly
    assert reference_n(10.0, 1.0, 0.505) == 4


def test_fit_uses_all_levels_least_squares() -> None:
    # three pre-session levels lying exactly on r = 0.5 per 2-day session (decay included)
    minute = 1 / (24 * 60)
    facts = PatientFacts(
        levels=(level(40.0, days_ago=4), level(20.0, days_ago=2), level(10.0, days_ago=0)),
        sessions=(session(4 - minute), session(2 - minute)),
    )
    e = est(facts)
    assert e.removal_fraction_fitted == pytest.approx(0.5, abs=0.001)


@pytest.mark.parametrize(("later", "clipped"), [(36.0, 0.8), (0.04, 0.3)])
def test_fitted_r_is_clipped(later: float, clipped: float) -> None:
    # §7.1: clipped to [0.3, 0.8]
    minute = 1 / (24 * 60)
    facts = PatientFacts(
        levels=(level(40.0, days_ago=4), level(later, days_ago=0)),
        sessions=(session(4 - minute), session(2 - minute)),
    )
    e = est(facts)
    assert e.removal_fraction_fitted == pytest.approx(clipped)
    assert "fit-clipped" in e.flags
    assert e.remaining is not None and e.remaining.low <= e.remaining.estimate <= e.remaining.high


def test_post_session_levels_are_not_fitted() -> None:
    facts = PatientFacts(levels=(level(40.0, days_ago=3), level(5.0, days_ago=0.1)), sessions=(session(0.3),))
    e = est(facts)
    assert e.removal_fraction_fitted is None


# ---------------------------------------------------------------- post-session sample


@pytest.mark.parametrize(("pv", "factor"), [(1.0, 1.77), (1.5, 2.57), (2.5, 6.03)])
def test_post_session_factor_follows_the_exchanged_volume(pv: float, factor: float) -> None:
    # (1 - f·(1 - e^-PV)) / e^-PV with f = 0.55: the model's own two compartments (issue 15 item 7)
    assert post_session_factor(pv) == pytest.approx(factor, abs=0.01)


def test_post_session_sample_is_corrected_and_flagged() -> None:
    hours = 1 / 24
    facts = PatientFacts(levels=(level(4.0, days_ago=2 * hours),), sessions=(session(8 * hours),))
    e = est(facts)
    assert "post-session-sample" in e.flags
    factor = post_session_factor(1.5)  # the session has no volume: the plan's 1.5 PV
    assert e.adjusted_level_ug_per_ml == pytest.approx(4.0 * factor * decay_factor(2 * hours), rel=1e-9)
    assert e.remaining is not None
    assert e.remaining.estimate == reference_n(4.0 * factor * decay_factor(2 * hours), 1, 0.505)
    assert e.remeasure_at == NOW  # ask for a pre-session redraw
    assert note(e, "post-session-sample")["factor"] == pytest.approx(factor, rel=1e-9)


def test_post_session_sample_below_target_is_never_confirmed() -> None:
    hours = 1 / 24
    facts = PatientFacts(levels=(level(0.2, days_ago=2 * hours),), sessions=(session(8 * hours),))
    e = est(facts)
    assert e.conclusion != "at-or-below-target"


def test_sample_24h_after_session_is_equilibrated() -> None:
    facts = PatientFacts(levels=(level(4.0, days_ago=0.5),), sessions=(session(1.6),))
    assert "post-session-sample" not in est(facts).flags


# ---------------------------------------------------------------- below limit, antibodies


@pytest.mark.parametrize(("limit", "target"), [(0.5, 1.0), (1.0, 1.0), (1.5, 2.0)])
def test_below_limit_at_or_under_target_needs_no_sessions(limit: float, target: float) -> None:
    # §7.1: '<X' with X ≤ target → 0 sessions for drug clearance
    e = est(PatientFacts(levels=(level(limit, comparator="<"),)), target=target)
    assert e.remaining == SessionRange(0, 0, 0)
    assert "below-limit" in e.flags
    assert e.starting_level is not None and e.starting_level.comparator == "<"


def test_below_limit_above_target_is_an_upper_bound() -> None:
    # §7.1: '<X' with X above the target means 'at most X': 5 → at most ceil(ln(1/5)/ln 0.505) = 3
    e = est(PatientFacts(levels=(level(5.0, comparator="<"),)))
    assert e.remaining == SessionRange(estimate=3, low=0, high=reference_n(5, 1, 0.60))
    assert "upper-bound" in e.flags


def test_greater_than_result_is_a_lower_bound() -> None:
    e = est(PatientFacts(levels=(level(100.0, comparator=">"),)))
    assert "lower-bound" in e.flags
    assert e.remaining is not None and e.remaining.estimate == reference_n(100, 1, 0.505)


def test_persistent_antibodies_never_override_a_measured_level() -> None:
    # issue 15 item 1: antibodies raise clearance; the measured level decides; discordance flagged
    ab = (AntibodyResult(True, NOW - days(60)), AntibodyResult(True, NOW - days(10)))
    e = est(PatientFacts(levels=(level(8.0),), antibodies=ab))
    assert e.remaining is not None and e.remaining.estimate == reference_n(8, 1, 0.505) == 4
    assert {"persistent-antibodies", "antibody-level-discordance"} <= set(e.flags)
    assert e.conclusion == "sessions-needed" and e.remeasure_at is None or e.remaining.estimate > 0


def test_persistent_antibodies_without_a_level_ask_for_a_measurement() -> None:
    ab = (AntibodyResult(True, NOW - days(60)), AntibodyResult(True, NOW - days(10)))
    e = est(PatientFacts(doses=(dose(70),), antibodies=ab))
    assert e.conclusion == "measure-first" and e.remaining is None and e.remeasure_at == NOW
    assert "antibodies-no-level" in e.flags
    none = est(PatientFacts(antibodies=ab))
    assert none.basis == "none" and none.remaining is None and none.conclusion == "measure-first"


@pytest.mark.parametrize(
    "results",
    [
        ((True, 10),),  # one positive
        ((True, 30), (True, 10)),  # < 6 weeks apart
        ((True, 60), (False, 30), (True, 10)),  # interrupted by a negative
    ],
)
def test_non_persistent_antibodies_do_not_zero_the_estimate(results: tuple[tuple[bool, int], ...]) -> None:
    ab = tuple(AntibodyResult(pos, NOW - days(d)) for pos, d in results)
    e = est(PatientFacts(levels=(level(8.0),), antibodies=ab))
    assert e.remaining is not None and e.remaining.estimate == reference_n(8, 1, 0.505) == 4
    assert "persistent-antibodies" not in e.flags
    assert "single-positive-antibody" in e.flags


def test_latest_negative_antibody_is_not_flagged() -> None:
    ab = (AntibodyResult(True, NOW - days(90)), AntibodyResult(False, NOW - days(10)))
    e = est(PatientFacts(levels=(level(8.0),), antibodies=ab))
    assert not {"persistent-antibodies", "single-positive-antibody"} & set(e.flags)


# ---------------------------------------------------------------- no level


def test_dosing_history_reproduces_the_label_steady_state() -> None:
    # issue 15 item 10: peak 110 ± 52 µg/mL; q4w trough 23-29 µg/mL; q6w troughs 60-70% lower
    low, mid, high = dosing_history_levels(0)
    assert (low, mid, high) == pytest.approx((58.0, 110.0, 162.0))
    q4w = dosing_history_levels(28)[1]
    q6w = dosing_history_levels(42, interval_days=42)[1]
    assert 23.0 <= round(q4w, 1) <= 29.0
    assert 0.60 <= round(1 - q6w / q4w, 2) <= 0.70
    # the range spans the published half-lives (7 d low end, 28.2 d high end)
    assert dosing_history_levels(90)[0] < dosing_history_levels(90)[1] < dosing_history_levels(90)[2]
    assert dosing_history_levels(90)[2] == pytest.approx(162 * 2 ** (-90 / 28.2), rel=1e-9)


def test_dosing_history_projection_is_low_confidence() -> None:
    e = est(PatientFacts(doses=(dose(28),)))
    assert e.basis == "dosing-history"
    assert e.starting_level is None and e.levels_used == ()
    assert e.adjusted_level_ug_per_ml == pytest.approx(dosing_history_levels(28)[1], rel=1e-9)
    assert "dosing-history" in e.flags
    assert e.remeasure_at == NOW
    assert e.remaining is not None
    assert e.remaining.estimate == reference_n(dosing_history_levels(28)[1], 1, 0.505) == 5
    assert e.remaining.high == reference_n(dosing_history_levels(28)[2], 1, 0.60)
    assert note(e, "dosing-history")["last_dose_on"] == (NOW - days(28)).date().isoformat()


def test_a_dosing_history_below_target_is_never_a_conclusion() -> None:
    e = est(PatientFacts(doses=(dose(200),)))
    assert e.basis == "dosing-history" and e.conclusion == "measure-first" and e.remaining is None
    assert "projected-below-target" in e.flags


def test_an_order_date_is_never_a_dose_date() -> None:
    # issue 15 item 3: a standing order's authoredOn is when it was written, not when a dose was given
    med = MedicationUse(
        ingredient="natalizumab", text="Tysabri", active=True, last_date=NOW - days(1000), record="request"
    )
    e = est(PatientFacts(medications=(med,)))
    assert e.basis == "none" and e.conclusion == "measure-first" and "last-dose-unknown" in e.flags
    assert e.remeasure_at == NOW


def test_half_dose_halves_the_projection() -> None:
    e = est(PatientFacts(doses=(dose(28, mg=150.0),)))
    assert e.adjusted_level_ug_per_ml == pytest.approx(dosing_history_levels(28)[1] / 2, rel=1e-9)


def test_nothing_usable_gives_basis_none() -> None:
    e = est(PatientFacts())
    assert e.basis == "none"
    assert e.remaining is None
    assert e.projection == ()
    assert "no-data" in e.flags


def test_level_before_last_infusion_is_not_used() -> None:
    e = est(PatientFacts(levels=(level(5.0, days_ago=40),), doses=(dose(10),)))
    assert e.basis == "dosing-history"
    assert note(e, "levels-before-last-dose") == {"count": 1}


# ---------------------------------------------------------------- implausible values


@pytest.mark.parametrize(
    ("value", "comparator", "days_ago", "reason_part"),
    [
        (-3.0, None, 1, "negative"),
        (0.0, None, 1, "zero"),
        (1500.0, None, 1, "266"),  # > Cmax + 3 SD = 110 + 3 × 52 (label)
        (300.0, None, 1, "266"),
        (float("nan"), None, 1, "not a number"),
        (12.0, None, -1, "after"),  # drawn in the future
    ],
)
def test_implausible_values_are_excluded_and_named(
    value: float, comparator: str | None, days_ago: float, reason_part: str
) -> None:
    good = level(10.0, days_ago=2)
    e = est(PatientFacts(levels=(good, level(value, days_ago=days_ago, comparator=comparator))))
    assert e.levels_used == (good,)
    assert len(e.unusable) == 1 and reason_part in e.unusable[0].reason
    assert "unusable-values" in e.flags
    assert e.starting_level == good


def test_a_censored_zero_is_not_a_limit() -> None:
    # "<0" names no assay limit: not below target, measure
    e = est(PatientFacts(levels=(level(0.0, comparator="<"),)))
    assert e.unusable == () and e.conclusion == "measure-first"


def test_unusable_values_from_fhir_io_are_passed_on() -> None:
    u = UnusableValue(
        kind="natalizumab level", reason="unit 'IU/mL' is not a mass concentration", reported="25 IU/mL"
    )
    other = UnusableValue(kind="lymphocyte count", reason="percent")
    e = est(PatientFacts(unusable=(u, other)))
    assert e.unusable == (u,)
    assert e.basis == "none"


# ---------------------------------------------------------------- ordered course, projection, re-measure


@pytest.mark.parametrize(
    ("ordered", "flag"),
    [
        (3, "ordered-course-short"),
        (5, None),
        (8, None),
        (9, "ordered-course-long"),
        (12, "ordered-course-long"),
    ],
)
def test_ordered_course_compared_with_estimate(ordered: int, flag: str | None) -> None:
    # 30 µg/mL → 5 (range 5–7); "much longer" = at least high + 2 = 9
    e = est(PatientFacts(levels=(level(30.0),)), plan=PlexPlan(ordered_sessions=ordered))
    course_flags = {f for f in e.flags if f.startswith("ordered-course")}
    assert course_flags == ({flag} if flag else set())
    assert e.ordered_sessions == ordered


def test_projection_per_session() -> None:
    e = est(PatientFacts(levels=(level(30.0),)))
    assert e.remaining is not None
    assert [p.session_number for p in e.projection] == list(range(1, e.remaining.high + 1))
    r = session_remaining_fraction(1.5, 2.0)
    for p in e.projection:
        assert p.level_ug_per_ml == pytest.approx(30.0 * r**p.session_number)
        assert p.low_ug_per_ml <= p.level_ug_per_ml <= p.high_ug_per_ml
        assert p.at == NOW + timedelta(days=2 * p.session_number)
    reached = [p for p in e.projection if p.level_ug_per_ml <= 1.0]
    assert reached[0].session_number == e.remaining.estimate
    assert e.target_expected_at == NOW + timedelta(days=2 * e.remaining.estimate)


def test_projection_covers_the_ordered_course() -> None:
    e = est(PatientFacts(levels=(level(3.0),)), plan=PlexPlan(ordered_sessions=6))
    assert len(e.projection) == 6


@pytest.mark.parametrize(("c", "after"), [(30.0, 2), (10.0, 2), (2.0, 1), (1.5, 1)])
def test_remeasure_before_the_session_that_should_reach_target(c: float, after: int) -> None:
    e = est(PatientFacts(levels=(level(c),)))
    assert e.remeasure_after_session == after
    assert e.remeasure_at == NOW + timedelta(days=2 * after)


def test_future_first_session_adds_decay() -> None:
    plan = PlexPlan(first_session_at=NOW + days(11))
    e = est(PatientFacts(levels=(level(2.2),)), plan=plan)
    # 2.2 µg/mL halves to 1.1 by the first session: one session suffices
    assert e.remaining is not None and e.remaining.estimate == 1
    assert e.projection[0].at == NOW + days(13)


def test_invalid_plan_falls_back_to_reference_schedule() -> None:
    e = est(
        PatientFacts(levels=(level(30.0),)), plan=PlexPlan(plasma_volumes_per_session=0.0, interval_days=-1)
    )
    assert "plan-defaulted" in e.flags
    assert e.remaining == SessionRange(5, 5, 7)


def test_invalid_target_raises() -> None:
    with pytest.raises(ValueError):
        est(PatientFacts(levels=(level(30.0),)), target=0.0)


def test_notes_say_clearance_only_and_cite_landi() -> None:
    e = est(PatientFacts(levels=(level(30.0),)))
    assert e.notes[-1].code == "clearance-only"
    assert any("Landi" in r.citation for r in e.references)
    assert any("Khatri" in r.citation for r in e.references)
