"""IRIS risk, reasons and watch window (clinical-reference §4)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cds.engine.domain import ConditionFact, IrisAssessment, Note, PatientFacts, PlexPlan
from cds.engine.iris import WATCH_NOTE_CODES, assess_iris

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


def named(a: IrisAssessment, reason: tuple[str, str | None]) -> bool:
    """Whether the assessment names `reason` (code, term): the term among the reason's terms."""
    code, term = reason
    return any(r.code == code and (term is None or term in r.values.get("terms", ())) for r in a.reasons)  # type: ignore[operator]


def assess(*conditions: ConditionFact, facts: PatientFacts | None = None, plan: PlexPlan = DEFAULT_PLAN):  # type: ignore[no-untyped-def]
    base = facts or PatientFacts()
    return assess_iris(
        PatientFacts(**{**{f: getattr(base, f) for f in base.__slots__}, "conditions": conditions}), plan, NOW
    )  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("description", "reason"),
    [
        # brainstem / infratentorial: "very dangerous" (ClinicSpeak 2014)
        ("Large lesion in the pons", ("brainstem", "pons")),
        ("pontine T2 hyperintensity", ("brainstem", "pons")),
        ("brain stem lesion", ("brainstem", "brainstem")),
        ("Brainstem and left MCP", ("brainstem", "brainstem")),
        ("lesion of the medulla oblongata", ("brainstem", "medulla")),
        ("midbrain lesion", ("brainstem", "midbrain")),
        ("mesencephalic involvement", ("brainstem", "midbrain")),
        ("right cerebellar hemisphere", ("infratentorial", "cerebellum")),
        ("infratentorial PML", ("infratentorial", "infratentorial")),
        ("posterior fossa lesion", ("infratentorial", "posterior fossa")),
        # widespread (Vermersch 2011)
        ("bilateral lesions", ("widespread", "bilateral")),
        ("widespread white-matter lesions", ("widespread", "widespread")),
        # contrast enhancement at diagnosis: early, severe IRIS (Tan 2011)
        ("punctate gadolinium enhancement", ("enhancement", None)),
        ("Gd+ lesion", ("enhancement", None)),
        ("contrast-enhancing rim", ("enhancement", None)),
        ("faint enhancement", ("enhancement", None)),
    ],
)
def test_high_risk_text(description: str, reason: str) -> None:
    a = assess(pml(description))
    assert a.risk == "high"
    assert named(a, reason)
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
    assert a.reasons == (Note("brainstem", {"terms": ("pons",)}),)


@pytest.mark.parametrize(
    ("sites", "reason"),
    [
        (("15926001",), ("brainstem", "brain stem")),  # SNOMED brain stem (codes.md §2)
        (("113305005",), ("infratentorial", "cerebellum")),  # SNOMED cerebellum
    ],
)
def test_high_risk_codes(sites: tuple[str, ...], reason: str) -> None:
    a = assess(pml(sites=sites))
    assert a.risk == "high" and named(a, reason)


@pytest.mark.parametrize(
    "description",
    [
        "multilobar white-matter lesions",
        "left frontal and parietal lesions",
        "fronto-parietal lesion",
        "temporal lobe; occipital lobe",
    ],
)
def test_multilobar_is_named_but_is_not_widespread(description: str) -> None:
    # issue 15 item 12: Vermersch 2011 grades unilobar / multilobar / widespread
    a = assess(pml(description))
    assert a.risk == "standard" and a.reasons == ()
    assert "multilobar" in a.reason_codes
    assert a.watch_notes[-1] == Note("severe-risk-not-raised", {"multilobar": True})


@pytest.mark.parametrize("sites", [("83251001", "16630005"), ("31065004", "83251001")])
def test_two_lobe_codes_are_multilobar_not_widespread(sites: tuple[str, ...]) -> None:
    a = assess(pml(sites=sites))
    assert a.risk == "standard" and "multilobar" in a.reason_codes


@pytest.mark.parametrize(
    "description",
    [
        "enhancement not assessed",
        "gadolinium enhancement: not evaluated",
        "old MS plaques in the pons",
        "known demyelinating lesion in the brainstem",
        "history of pontine MS lesions",
    ],
)
def test_unassessed_enhancement_and_ms_history_do_not_raise_the_risk(description: str) -> None:
    # issue 15 item 16
    a = assess(pml(description))
    assert a.risk == "standard", a.reasons


def test_new_pml_lesion_in_the_pons_still_counts() -> None:
    assert assess(pml("new PML lesion in the pons")).risk == "high"


def test_iris_on_record_changes_the_assessment() -> None:
    iris = ConditionFact(kind="iris", text="Immune reconstitution inflammatory syndrome")
    a = assess_iris(PatientFacts(conditions=(pml("frontal"), iris)), PlexPlan(), NOW)
    assert a.iris_on_record and a.watch_notes[1] == Note("iris-on-record")


def test_the_watch_window_has_no_end() -> None:
    a = assess(pml("frontal"), facts=PatientFacts(doses=(dose(5),)))
    onset = Note(
        "onset-after-last-infusion",
        {"last_infusion_on": (NOW - days(5)).date().isoformat(), "mean_days": 57.4, "sd_days": 21.2},
    )
    assert a.watch_until is None and onset in a.watch_notes  # the card says: no safe end date


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
    assert a.reasons == (
        Note("brainstem", {"terms": ("pons",)}),
        Note("infratentorial", {"terms": ("cerebellum",)}),
        Note("widespread", {"terms": ("bilateral",)}),
        Note("enhancement"),
    )
    assert a.reason_codes == ("brainstem", "infratentorial", "widespread", "enhancement")


def test_one_site_named_by_code_and_text_in_two_spellings_is_one_term() -> None:
    a = assess(pml("brainstem lesion, extending to the pons", sites=("15926001",)))
    assert a.reasons == (Note("brainstem", {"terms": ("brain stem", "pons")}),)


def test_watch_window_from_last_infusion() -> None:
    # Stefoski 2019: mean 57.4 ± 21.2 days after the last infusion; window = mean ± 2 SD = 15.0–99.8 days
    facts = PatientFacts(doses=(dose(5),))
    a = assess(pml("left frontal lesion"), facts=facts, plan=PlexPlan(first_session_at=NOW + days(30)))
    last = NOW - days(5)
    assert a.watch_from == last + timedelta(days=57.4 - 42.4)
    assert a.watch_until is None  # no hard end (issue 15 item 12)


def test_plex_brings_the_watch_window_forward() -> None:
    # Tan 2011: PLEX/IA may accelerate IRIS → watch from the start of PLEX when earlier
    facts = PatientFacts(doses=(dose(5),), sessions=(session(1),))
    a = assess(pml("frontal"), facts=facts)
    assert a.watch_from == NOW - days(1)
    assert Note("plex-brings-forward") in a.watch_notes
    assert a.watch_until is None


def test_no_infusion_on_record_watches_from_the_plex_start() -> None:
    a = assess(pml("frontal"), plan=PlexPlan(first_session_at=NOW + days(1)))
    assert a.watch_from == NOW + days(1)
    assert Note("no-infusion-on-record") in a.watch_notes
    assert a.watch_until is None


def test_an_unknown_last_infusion_gives_no_watch_date() -> None:
    # issue 15 item 3: an order on record without an administration after it: no date from it
    from cds.engine.domain import MedicationUse

    order = MedicationUse("natalizumab", "Tysabri", active=True, last_date=NOW - days(1000), record="request")
    a = assess(pml("frontal"), facts=PatientFacts(medications=(order,)))
    assert a.watch_from is None and Note("last-infusion-unknown") in a.watch_notes


@pytest.mark.parametrize(
    ("condition", "last"),
    [
        (pml("pons"), Note("severe-risk-raised")),
        (pml("frontal"), Note("severe-risk-not-raised", {"multilobar": False})),
        (ConditionFact(kind="ms", text="Multiple sclerosis"), Note("no-pml-on-record")),
    ],
)
def test_the_watch_notes_end_with_the_severe_risk(condition: ConditionFact, last: Note) -> None:
    a = assess(condition, facts=PatientFacts(doses=(dose(5),)))
    assert a.watch_notes[0].code == "iris-expected" and a.watch_notes[-1] == last
    for n in a.watch_notes:  # each note carries the values its code lists
        assert tuple(n.values) == WATCH_NOTE_CODES[n.code], n


def test_steroid_statements_carry_evidence_levels() -> None:
    for a in (assess(pml("pons")), assess(pml("frontal"))):
        by_level = {s.evidence for s in a.steroids}
        assert by_level == {"evidence", "case report", "expert practice", "expert opinion"}
        treatment = [s for s in a.steroids if s.evidence == "evidence"]
        assert [s.reference.citation.split()[0] for s in treatment if s.reference] == ["Tan"]
        # issue 15 item 13: the 1 g/day regimen is not from Tan 2011; Wenning 2009 is a case report
        regimen = [s for s in a.steroids if "1 g/day" in s.text]
        assert len(regimen) == 1 and regimen[0].evidence == "expert practice" and regimen[0].reference is None
        wenning = [s for s in a.steroids if s.reference and "Wenning" in s.reference.citation]
        assert len(wenning) == 1 and wenning[0].evidence == "case report"
        prophylaxis = [s for s in a.steroids if "rophylactic" in s.text]
        assert len(prophylaxis) == 1 and prophylaxis[0].evidence == "expert opinion"
        assert prophylaxis[0].reference and "ClinicSpeak" in prophylaxis[0].reference.citation
        assert any(s.reference and "Cortese" in s.reference.citation for s in a.steroids)
