"""IRIS risk, reasons and watch window (clinical-reference §4)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cds.engine.domain import ConditionFact, PatientFacts, PlexPlan
from cds.engine.iris import assess_iris

from .conftest import NOW, days, dose, session

SCT = "http://snomed.info/sct"


def pml(
    *descriptions: str, sites: tuple[str, ...] = (), text: str = "Progressive multifocal leukoencephalopathy"
) -> ConditionFact:
    return ConditionFact(
        kind="pml",
        text=text,
        codes=((SCT, "22255007"),),
        body_site_codes=tuple((SCT, s) for s in sites),
        descriptions=descriptions,
    )


DEFAULT_PLAN = PlexPlan()


def assess(*conditions: ConditionFact, facts: PatientFacts | None = None, plan: PlexPlan = DEFAULT_PLAN):  # type: ignore[no-untyped-def]
    base = facts or PatientFacts()
    return assess_iris(
        PatientFacts(**{**{f: getattr(base, f) for f in base.__slots__}, "conditions": conditions}), plan, NOW
    )  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("description", "reason"),
    [
        # brainstem / infratentorial: "very dangerous" (ClinicSpeak 2014)
        ("Large lesion in the pons", "brainstem involvement (pons)"),
        ("pontine T2 hyperintensity", "brainstem involvement (pons)"),
        ("brain stem lesion", "brainstem involvement (brainstem)"),
        ("Brainstem and left MCP", "brainstem involvement (brainstem)"),
        ("lesion of the medulla oblongata", "brainstem involvement (medulla)"),
        ("midbrain lesion", "brainstem involvement (midbrain)"),
        ("mesencephalic involvement", "brainstem involvement (midbrain)"),
        ("right cerebellar hemisphere", "infratentorial involvement (cerebellum)"),
        ("infratentorial PML", "infratentorial involvement (infratentorial)"),
        ("posterior fossa lesion", "infratentorial involvement (posterior fossa)"),
        # widespread (Vermersch 2011)
        ("multilobar white-matter lesions", "widespread PML (multilobar)"),
        ("bilateral lesions", "widespread PML (bilateral)"),
        ("left frontal and parietal lesions", "widespread PML (frontal and parietal lobes)"),
        ("fronto-parietal lesion", "widespread PML (frontal and parietal lobes)"),
        ("temporal lobe; occipital lobe", "widespread PML (temporal and occipital lobes)"),
        # contrast enhancement at diagnosis: early, severe IRIS (Tan 2011)
        ("punctate gadolinium enhancement", "contrast enhancement at diagnosis (earlier, more severe IRIS)"),
        ("Gd+ lesion", "contrast enhancement at diagnosis (earlier, more severe IRIS)"),
        ("contrast-enhancing rim", "contrast enhancement at diagnosis (earlier, more severe IRIS)"),
        ("faint enhancement", "contrast enhancement at diagnosis (earlier, more severe IRIS)"),
    ],
)
def test_high_risk_text(description: str, reason: str) -> None:
    a = assess(pml(description))
    assert a.risk == "high"
    assert reason in a.reasons
    assert a.pml_on_record


@pytest.mark.parametrize(
    "description",
    [
        "non-enhancing lesion in the right frontal lobe",
        "No enhancement",
        "no gadolinium enhancement",
        "without contrast enhancement",
        "the lesion did not enhance after gadolinium",
        "Enhancement: none",
        "no brainstem involvement",
        "lesion sparing the brainstem",
        "cerebellum not involved",
        "unilateral frontal lesion",
        "left parietal lobe only",
        "gadolinium was given",
        "temporally related to natalizumab",
        "multifocal",  # PML's own name is not 'widespread'
        "normal brainstem",
        "posterior fossa unremarkable",
    ],
)
def test_negated_or_irrelevant_text_is_standard(description: str) -> None:
    a = assess(pml(description))
    assert a.risk == "standard", a.reasons
    assert a.reasons == ()


def test_reasons_are_engine_text_not_fhir_text() -> None:
    weird = "**PONS** <script>alert(1)</script>"
    a = assess(pml(weird))
    assert a.reasons == ("brainstem involvement (pons)",)
    assert all("<" not in r and "*" not in r for r in a.reasons)


@pytest.mark.parametrize(
    ("sites", "reason"),
    [
        (("15926001",), "brainstem involvement (brain stem)"),  # SNOMED brain stem (codes.md §2)
        (("113305005",), "infratentorial involvement (cerebellum)"),  # SNOMED cerebellum
        (("83251001", "16630005"), "widespread PML (frontal and parietal lobes)"),
        (("31065004", "83251001"), "widespread PML (frontal and occipital lobes)"),
    ],
)
def test_high_risk_codes(sites: tuple[str, ...], reason: str) -> None:
    a = assess(pml(sites=sites))
    assert a.risk == "high" and reason in a.reasons


def test_single_lobe_code_is_standard() -> None:
    assert assess(pml(sites=("83251001",))).risk == "standard"


def test_codes_of_other_systems_are_ignored() -> None:
    c = ConditionFact(kind="pml", text="PML", body_site_codes=(("http://example.org/local", "15926001"),))
    assert assess(c).risk == "standard"


def test_only_pml_conditions_count() -> None:
    ms = ConditionFact(kind="ms", text="Multiple sclerosis", descriptions=("old pontine lesion, enhancing",))
    a = assess(ms)
    assert a.risk == "standard" and not a.pml_on_record


def test_multiple_reasons() -> None:
    a = assess(pml("pons and cerebellum, bilateral, with gadolinium enhancement"))
    assert set(a.reasons) == {
        "brainstem involvement (pons)",
        "infratentorial involvement (cerebellum)",
        "widespread PML (bilateral)",
        "contrast enhancement at diagnosis (earlier, more severe IRIS)",
    }


def test_watch_window_from_last_infusion() -> None:
    # Stefoski 2019: mean 57.4 ± 21.2 days after the last infusion; window = mean ± 2 SD = 15.0–99.8 days
    facts = PatientFacts(doses=(dose(5),))
    a = assess(pml("left frontal lesion"), facts=facts, plan=PlexPlan(first_session_at=NOW + days(30)))
    last = NOW - days(5)
    assert a.watch_from == last + timedelta(days=57.4 - 42.4)
    assert a.watch_until == last + timedelta(days=57.4 + 42.4)
    assert (a.watch_until - last).days == 99  # "weeks to about 3 months"


def test_plex_brings_the_watch_window_forward() -> None:
    # Tan 2011: PLEX/IA may accelerate IRIS → watch from the start of PLEX when earlier
    facts = PatientFacts(doses=(dose(5),), sessions=(session(1),))
    a = assess(pml("frontal"), facts=facts)
    assert a.watch_from == NOW - days(1)
    assert "bring IRIS forward" in a.watch_note
    assert a.watch_until == NOW - days(5) + timedelta(days=99.8)


def test_unknown_last_infusion() -> None:
    a = assess(pml("frontal"), plan=PlexPlan(first_session_at=NOW + days(1)))
    assert a.watch_from == NOW + days(1)
    assert a.watch_until is None
    assert "unknown" in a.watch_note


def test_steroid_statements_carry_evidence_levels() -> None:
    for a in (assess(pml("pons")), assess(pml("frontal"))):
        by_level = {s.evidence for s in a.steroids}
        assert by_level == {"evidence", "expert opinion"}
        treatment = [s for s in a.steroids if s.evidence == "evidence"]
        assert {s.reference.citation.split()[0] for s in treatment} == {"Tan", "Wenning"}
        prophylaxis = [s for s in a.steroids if "rophylactic" in s.text]
        assert len(prophylaxis) == 1 and prophylaxis[0].evidence == "expert opinion"
        assert "ClinicSpeak" in prophylaxis[0].reference.citation
        assert any("Cortese" in s.reference.citation for s in a.steroids)
