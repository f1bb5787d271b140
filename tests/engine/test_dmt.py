"""DMT classes, fumarate lymphocyte condition, conflicts, rebound window (clinical-reference §5)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cds.engine.dmt import REBOUND_NOTE_CODES, RELAPSE_WITHIN_A_YEAR_PERCENT, advise_dmt
from cds.engine.domain import (
    LymphocyteCount,
    MedicationUse,
    Note,
    PatientDetails,
    PatientFacts,
    UnusableValue,
)
from cds.engine.drugs import ALLOWED, AVOID, FUMARATES, RXNORM_INGREDIENTS, drug_class

from .conftest import NOW, days, dose, session


def count(value: float, days_ago: float = 3) -> LymphocyteCount:
    return LymphocyteCount(value_10e9_per_l=value, drawn_at=NOW - days(days_ago))


@pytest.mark.parametrize(
    ("counts", "advised", "code", "latest"),
    [
        ((count(0.8),), True, "ok", 0.8),  # ≥ 0.5 × 10⁹/L (label threshold, §5.2)
        ((count(0.5),), True, "ok", 0.5),  # the threshold itself is allowed
        ((count(0.49),), False, "low-count", 0.49),
        ((count(0.3, 1), count(1.2, 30)), False, "low-count", 0.3),  # the latest count decides
        ((count(1.2, 1), count(0.3, 30)), True, "ok", 1.2),
        ((), False, "no-count", None),
        ((count(1.0, -2),), False, "no-count", None),  # future-dated: ignored
    ],
)
def test_fumarates_conditional_on_lymphocytes(
    counts: tuple[LymphocyteCount, ...], advised: bool, code: str, latest: float | None
) -> None:
    a = advise_dmt(PatientFacts(lymphocytes=counts), NOW)
    assert {c.ingredient for c in a.conditional} == set(FUMARATES)
    for c in a.conditional:
        assert (c.advised, c.reason_code) == (advised, code)
        assert (c.lymphocytes.value_10e9_per_l if c.lymphocytes else None) == latest
    assert not set(FUMARATES) & set(a.suggestible)  # never drafted (clarifications.md), advised or not


def test_a_count_drawn_on_natalizumab_does_not_qualify() -> None:
    # issue 15 item 11: natalizumab raises circulating lymphocytes; the count must follow the last dose
    a = advise_dmt(PatientFacts(lymphocytes=(count(0.9, 20),), doses=(dose(10),)), NOW)
    assert all(not c.advised and c.reason_code == "no-count-after-last-dose" for c in a.conditional)
    assert a.conditional[0].lymphocytes == count(0.9, 20)  # the count the card names, with its date
    after = advise_dmt(PatientFacts(lymphocytes=(count(0.9, 5),), doses=(dose(10),)), NOW)
    assert all(c.advised and c.reason_code == "ok" for c in after.conditional)


def test_an_old_count_does_not_qualify() -> None:
    a = advise_dmt(PatientFacts(lymphocytes=(count(0.9, 200),)), NOW)
    assert all(not c.advised and c.reason_code == "count-too-old" for c in a.conditional)
    before_dose = advise_dmt(PatientFacts(lymphocytes=(count(0.9, 200),), doses=(dose(10),)), NOW)
    assert all(c.reason_code == "no-count-after-last-dose" for c in before_dose.conditional)


@pytest.mark.parametrize("field", ["pregnant", "breastfeeding"])
def test_pregnancy_or_breastfeeding_blocks_every_draft(field: str) -> None:
    # issue 15 item 15
    from dataclasses import replace

    from cds.engine.domain import PatientDetails

    details = replace(PatientDetails(), **{field: True})
    a = advise_dmt(PatientFacts(lymphocytes=(count(0.9),), patient=details), NOW)
    assert a.suggestible == () and a.blocked_by == ("pregnancy" if field == "pregnant" else "breastfeeding",)
    assert all(not c.advised and c.reason_code == a.blocked_by[0] for c in a.conditional)
    assert a.rebound_notes[-1] == Note("no-dmt-drafted", {"blocked_by": a.blocked_by})


def test_an_unusable_lymphocyte_result_is_no_count() -> None:
    # the card names the unusable results from the load (tests/hooks/test_cards.py)
    u = UnusableValue(kind="lymphocyte count", reason="reported in %")
    a = advise_dmt(PatientFacts(unusable=(u,)), NOW)
    assert all(not c.advised and c.reason_code == "no-count" and c.lymphocytes is None for c in a.conditional)


def test_lists_follow_clinical_reference() -> None:
    a = advise_dmt(PatientFacts(), NOW)
    assert set(a.allowed) == {
        "interferon beta-1a",
        "interferon beta-1b",
        "peginterferon beta-1a",
        "glatiramer acetate",
    }
    for drug in (
        "fingolimod",
        "siponimod",
        "ozanimod",
        "ponesimod",
        "ocrelizumab",
        "ofatumumab",
        "ublituximab",
        "rituximab",
        "alemtuzumab",
        "cladribine",
        "mitoxantrone",
        "teriflunomide",
        "natalizumab",
    ):
        assert drug in a.avoid
    assert a.suggestible == a.allowed  # no count → no fumarate


def test_active_avoid_class_meds_are_conflicts() -> None:
    meds = (
        MedicationUse(ingredient=None, text="Gilenya 0.5 mg", active=True),
        MedicationUse(ingredient="natalizumab", text="Tysabri", active=True),
        MedicationUse(ingredient=None, text="Ocrevus", active=False),  # stopped: not a conflict
        MedicationUse(ingredient=None, text="Copaxone", active=True),  # allowed
        MedicationUse(ingredient=None, text="Tecfidera", active=True),  # conditional, not avoid
    )
    a = advise_dmt(PatientFacts(medications=meds), NOW)
    assert [m.text for m in a.active_conflicts] == ["Gilenya 0.5 mg", "Tysabri"]


def test_rebound_window_from_last_dose() -> None:
    # §5.1: 4 weeks (RESTORE) to 6 months, peak ≈ 3.5 months (Brain Behav 2017)
    a = advise_dmt(PatientFacts(doses=(dose(10),)), NOW)
    last = NOW - days(10)
    assert a.rebound_from == last + timedelta(days=28)
    assert a.rebound_peak == last + timedelta(days=105)
    assert a.rebound_until == last + timedelta(days=182)
    assert a.rebound_notes == (
        Note("rebound-after-last-dose", {"last_dose_on": last.date().isoformat()}),
        Note("plex-brings-forward"),
        Note("relapse-within-a-year", {"percent": RELAPSE_WITHIN_A_YEAR_PERCENT}),
    )


def test_plex_brings_rebound_forward() -> None:
    a = advise_dmt(PatientFacts(doses=(dose(10),), sessions=(session(4),)), NOW)
    assert a.rebound_from == NOW - days(4)
    assert Note("plex-brings-forward") in a.rebound_notes


def test_rebound_without_dose_date() -> None:
    a = advise_dmt(PatientFacts(), NOW)
    assert a.rebound_from is None and a.rebound_peak is None
    assert [n.code for n in a.rebound_notes] == ["last-dose-unknown", "relapse-within-a-year"]


def test_every_rebound_note_carries_the_values_its_code_lists() -> None:
    pregnant = PatientFacts(patient=PatientDetails(pregnant=True, breastfeeding=True))
    for facts in (PatientFacts(), PatientFacts(doses=(dose(10),), sessions=(session(4),)), pregnant):
        for n in advise_dmt(facts, NOW).rebound_notes:
            assert tuple(n.values) == REBOUND_NOTE_CODES[n.code], n


names = sorted({*ALLOWED, *FUMARATES, *AVOID, "methylprednisolone", "paracetamol"})
brands = [
    "Tysabri",
    "Gilenya",
    "Ocrevus",
    "Tecfidera",
    "Avonex",
    "Copaxone",
    "Lemtrada",
    "Aubagio",
    "aspirin",
]


@given(
    meds=st.lists(
        st.tuples(
            st.sampled_from(names + brands),
            st.booleans(),
            st.sampled_from(sorted(RXNORM_INGREDIENTS) + ["", "999"]),
        ),
        max_size=8,
    ),
    counts=st.lists(
        st.tuples(
            st.floats(min_value=-1, max_value=20) | st.just(float("nan")),
            st.floats(min_value=-30, max_value=400),
        ),
        max_size=4,
    ),
)
def test_never_suggests_an_avoid_class_drug(
    meds: list[tuple[str, bool, str]], counts: list[tuple[float, float]]
) -> None:
    facts = PatientFacts(
        medications=tuple(
            MedicationUse(
                ingredient=None,
                text=t,
                active=act,
                codes=(("http://www.nlm.nih.gov/research/umls/rxnorm", c),) if c else (),
            )
            for t, act, c in meds
        ),
        lymphocytes=tuple(count(v, d) for v, d in counts),
    )
    a = advise_dmt(facts, NOW)
    assert a.suggestible, "allowed immunomodulators are always suggestible"
    for ingredient in a.suggestible:
        assert drug_class(ingredient) in ("allowed", "conditional")
        assert ingredient not in a.avoid
    assert set(a.suggestible) == set(a.allowed)
    for c in a.conditional:
        assert not c.advised or (c.lymphocytes is not None and c.lymphocytes.value_10e9_per_l >= 0.5)
    for m in a.active_conflicts:
        assert m.active
