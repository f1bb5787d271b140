"""The safety invariant of the estimate (docs/safety.md H1) and the paths of issue 15 that reach it."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import date, timedelta

import pytest

from cds.engine.below_target import BelowTargetEvidence, below_target_confirmed
from cds.engine.domain import (
    MedicationUse,
    NatalizumabDose,
    NatalizumabLevel,
    Note,
    PatientDetails,
    PatientFacts,
    PlexPlan,
    PlexSession,
    UnusableValue,
)
from cds.engine.drugs import LastDose
from cds.engine.remaining import estimate_remaining

from .conftest import NOW, days, dose, level


def est(facts: PatientFacts, target: float = 1.0):  # type: ignore[no-untyped-def]
    return estimate_remaining(facts, PlexPlan(), target, NOW)


KNOWN = LastDose(NOW - days(30), 300.0, known=True)


def evidence(lv: NatalizumabLevel | None, **kw: object) -> BelowTargetEvidence:
    return BelowTargetEvidence(level=lv, target_ug_per_ml=1.0, dose=KNOWN, now=NOW, **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------- the invariant, case by case


def test_a_serum_level_at_or_below_target_after_the_last_dose_confirms() -> None:
    assert below_target_confirmed(evidence(level(0.8, 1)))
    assert below_target_confirmed(evidence(level(1.0, 1)))
    assert below_target_confirmed(evidence(level(0.5, 1, comparator="<")))


@pytest.mark.parametrize(
    ("lv", "kw"),
    [
        (None, {}),
        (level(1.2, 1), {}),  # above target
        (level(2.0, 1, comparator="<"), {}),  # a limit above target
        (level(0.5, 1, comparator=">"), {}),
        (level(0.0, 1, comparator="<"), {}),  # "<0" names no limit
        (level(0.5, -1), {}),  # future
        (level(0.5, 31), {}),  # before the last dose
        (level(0.5, 1), {"post_session": True}),
        (level(0.5, 1), {"ambiguous_day": True}),
        (level(0.5, 1), {"same_time_above_target": True}),
        (level(0.5, 1), {"newer_unusable": True}),
        (replace(level(0.5, 1), value_ug_per_ml=math.nan), {}),
    ],
)
def test_everything_else_does_not_confirm(lv: NatalizumabLevel | None, kw: dict[str, bool]) -> None:
    assert not below_target_confirmed(evidence(lv, **kw))


def test_an_unknown_last_dose_never_confirms() -> None:
    e = BelowTargetEvidence(level(0.5, 1), 1.0, LastDose(None, None, known=False), NOW)
    assert not below_target_confirmed(e)


# ---------------------------------------------------------------- issue 15 paths through estimate_remaining


def test_item03_active_order_newer_than_the_last_infusion_makes_the_dose_unknown() -> None:
    order = MedicationUse("natalizumab", "Tysabri", active=True, last_date=NOW - days(5), record="request")
    e = est(PatientFacts(levels=(level(0.5, 2),), doses=(dose(60),), medications=(order,)))
    assert "last-dose-unknown" in e.flags and e.conclusion == "measure-first"


def test_item08_date_only_level_on_a_session_day_widens_the_range_and_never_confirms() -> None:
    day = (NOW - days(3)).replace(hour=0, minute=0)
    lv = NatalizumabLevel(6.0, day, date_only=True)
    s = PlexSession(day + timedelta(hours=10), plasma_volumes=1.5)
    e = est(PatientFacts(levels=(lv,), sessions=(s,)))
    plain = est(PatientFacts(levels=(NatalizumabLevel(6.0, day),), sessions=(s,)))
    assert "date-ambiguous" in e.flags and e.remeasure_at == NOW
    assert e.remaining is not None and plain.remaining is not None
    assert e.remaining.high > plain.remaining.high
    low = est(PatientFacts(levels=(NatalizumabLevel(0.4, day, date_only=True),), sessions=(s,)))
    assert low.conclusion != "at-or-below-target"


def test_item08_date_only_level_on_an_infusion_day_never_confirms() -> None:
    day = (NOW - days(3)).replace(hour=0, minute=0)
    lv = NatalizumabLevel(0.4, day, date_only=True)
    e = est(PatientFacts(levels=(lv,), doses=(NatalizumabDose(day, 300.0, 28.0, date_only=True),)))
    assert "date-ambiguous" in e.flags and e.conclusion != "at-or-below-target"


def test_item09_the_fit_uses_only_levels_drawn_within_the_course() -> None:
    # true per-session remaining fraction 0.53 (removal 0.53 / decay(2 d)); a 34-day-old baseline
    # carried with t½ 11 d would bias the fit
    r_true = 0.53
    first = NOW - days(8)
    sessions = tuple(PlexSession(first + days(2 * i), plasma_volumes=1.5) for i in range(4))
    pre = 20.0
    levels = [NatalizumabLevel(pre, first - timedelta(hours=2))]
    levels.append(NatalizumabLevel(pre * r_true**2, first + days(4) - timedelta(hours=2)))
    levels.append(NatalizumabLevel(pre * r_true**4, NOW - timedelta(hours=2)))
    old = NatalizumabLevel(pre * 2.6, first - days(34))  # a baseline drawn a month before the course
    e = est(PatientFacts(levels=(old, *levels), sessions=sessions))
    assert "fit-excluded-old-level" in e.flags
    assert e.removal_fraction_fitted == pytest.approx(r_true, abs=0.01)


def test_item14_same_time_discordant_results_use_the_highest_and_never_confirm() -> None:
    a, b = level(0.5, 1), level(4.0, 1)
    for order in ((a, b), (b, a)):
        e = est(PatientFacts(levels=order))
        assert "discordant-same-time" in e.flags
        assert e.starting_level == b and e.conclusion == "sessions-needed"


@pytest.mark.parametrize(
    ("value", "unit", "code"),
    [(300.0, "ug/mL", "implausible-high"), (0.025, "ng/mL", "implausible-low-for-unit")],
)
def test_item14_implausible_values_are_named_not_used(value: float, unit: str, code: str) -> None:
    reported = value * 1000 if unit == "ng/mL" else value
    lv = NatalizumabLevel(value, NOW - days(1), reported_value=reported, reported_unit=unit)
    e = est(PatientFacts(levels=(lv,), doses=(dose(40),)))
    assert [u.code for u in e.unusable] == [code]
    assert e.conclusion != "at-or-below-target"


def test_a_newer_unusable_result_blocks_the_conclusion() -> None:
    newer = UnusableValue(
        "natalizumab level",
        "qualitative, no limit",
        "Not detected",
        NOW - days(1),
        code="qualitative-no-limit",
    )
    e = est(PatientFacts(levels=(level(0.5, 5),), unusable=(newer,)))
    assert "newer-unusable-result" in e.flags and e.conclusion == "measure-first"


def test_a_newer_unusable_result_stops_the_dosing_history_projection() -> None:
    newer = UnusableValue(
        "natalizumab level",
        "qualitative, no limit",
        "Not detected",
        NOW - days(1),
        code="qualitative-no-limit",
    )
    e = est(PatientFacts(doses=(dose(20),), unusable=(newer,)))
    assert e.conclusion == "measure-first" and e.remaining is None


def test_item15_a_child_is_named_as_outside_the_population() -> None:
    e = est(PatientFacts(levels=(level(5.0, 1),), patient=PatientDetails(birth_date=date(2010, 1, 1))))
    assert (
        "outside-population-age" in e.flags and Note("outside-population-age", {"age_years": 14}) in e.notes
    )
    adult = est(PatientFacts(levels=(level(5.0, 1),), patient=PatientDetails(birth_date=date(1980, 1, 1))))
    assert "outside-population-age" not in adult.flags


def test_item15_body_weight_is_named() -> None:
    e = est(PatientFacts(levels=(level(5.0, 1),), patient=PatientDetails(weight_kg=48.0)))
    assert "weight-not-modelled" in e.flags and Note("weight-not-modelled", {"weight_kg": 48.0}) in e.notes


def test_item01_a_censored_level_below_target_with_antibodies_still_confirms() -> None:
    from cds.engine.domain import AntibodyResult

    ab = (AntibodyResult(True, NOW - days(60)), AntibodyResult(True, NOW - days(10)))
    e = est(PatientFacts(levels=(level(0.5, 1, comparator="<"),), antibodies=ab, doses=(dose(40),)))
    assert e.conclusion == "at-or-below-target" and "antibody-level-discordance" not in e.flags


def test_sessions_after_the_level_are_counted_from_their_end() -> None:
    # drawn 6 h after the session ended (it ran 2 h): a post-session sample, timed from the end
    end = NOW - timedelta(hours=6)
    s = PlexSession(end - timedelta(hours=2), plasma_volumes=1.0, ended_at=end)
    e = est(PatientFacts(levels=(NatalizumabLevel(3.0, NOW - timedelta(hours=0)),), sessions=(s,)))
    assert "post-session-sample" in e.flags
    (post,) = [n for n in e.notes if n.code == "post-session-sample"]
    assert post.values["hours"] == pytest.approx(6.0)


def test_the_engine_has_one_path_to_at_or_below_target() -> None:
    """After the engine was split into modules, the conclusion still has one source: the only call
    that builds a confirmed estimate sits in the branch where below_target_confirmed() said yes."""
    import ast
    from pathlib import Path

    engine = Path(__file__).resolve().parents[2] / "cds" / "engine"
    confirming: list[tuple[str, int]] = []
    literal: list[tuple[str, int]] = []
    for path in sorted(engine.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "below_target_confirmed" in ast.unparse(node.test):
                for inner in ast.walk(ast.Module(body=node.body, type_ignores=[])):
                    if isinstance(inner, ast.Call) and any(
                        k.arg == "confirmed" and ast.unparse(k.value) == "True" for k in inner.keywords
                    ):
                        confirming.append((path.name, inner.lineno))
            if isinstance(node, ast.Call) and any(
                k.arg == "confirmed" and ast.unparse(k.value) != "False" for k in node.keywords
            ):
                literal.append((path.name, node.lineno))
            if isinstance(node, ast.Constant) and node.value == "at-or-below-target":
                literal.append((path.name, node.lineno))
    assert len(confirming) == 1, confirming
    # every other mention: the Literal type, PlexEstimate's own check and projection.finish's mapping
    places = {name for name, _ in literal}
    assert places <= {"domain.py", "projection.py", "remaining.py"}, literal
    assert [c for c in literal if c[0] == "remaining.py"] == confirming, literal
