"""cards.render: pure, from hand-built engine results (no engine, no FHIR)."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cds.engine.dmt import REBOUND_NOTE_CODES, RELAPSE_WITHIN_A_YEAR_PERCENT
from cds.engine.domain import (
    ConditionalDmt,
    DmtAdvice,
    IrisAssessment,
    LymphocyteCount,
    MedicationUse,
    NatalizumabLevel,
    Note,
    NoteValue,
    PatientFacts,
    PlexEstimate,
    PlexPlan,
    Reference,
    SessionRange,
    SteroidStatement,
    UnusableValue,
)
from cds.engine.iris import IRIS_EXPECTED, WATCH_NOTE_CODES
from cds.engine.remaining import NOTE_CODES
from cds.fhir.orders import PlexOrder
from cds.fhir_io import LoadResult
from cds.hooks import cards
from cds.hooks.cards.estimate_notes import note_text
from cds.hooks.cards.washout_notes import rebound_text, watch_text
from cds.hooks.models import CdsResponse
from tests.hooks.checks import card, check_response, ext

NOW = datetime(2024, 5, 10, 12, 0, tzinfo=UTC)
REF = Reference("Foley JF et al. 2022", "https://doi.org/10.1000/example")
EVIL = "<script>alert(1)</script> **bold** [x](javascript:alert(1)) | table |\n# heading"

ORDER_RESOURCE = {
    "resourceType": "ServiceRequest",
    "id": "plex-1",
    "status": "draft",
    "intent": "order",
    "code": {"text": "Plasma exchange"},
    "subject": {"reference": "Patient/p1"},
    "quantityQuantity": {"value": 2, "unit": "sessions"},
}


def order(ordered: int | None = 2, text: str = "Plasma exchange") -> PlexOrder:
    return PlexOrder(
        reference="ServiceRequest/plex-1",
        plan=PlexPlan(ordered_sessions=ordered),
        text=text,
        resource=dict(ORDER_RESOURCE),
    )


def level(v: float = 25.0, comparator: Any = None, days: float = 1) -> NatalizumabLevel:
    return NatalizumabLevel(
        v, NOW - timedelta(days=days), comparator=comparator, reported_value=v, source="Observation/l1"
    )


def estimate(**over: Any) -> PlexEstimate:
    base: dict[str, Any] = dict(  # noqa: C408 (keyword form mirrors the dataclass)
        basis="measured",
        target_ug_per_ml=1.0,
        sessions_completed=0,
        remaining=SessionRange(5, 5, 7),
        starting_level=level(),
        adjusted_level_ug_per_ml=24.0,
        removal_fraction=0.5,
        removal_fraction_population=0.5,
        removal_fraction_fitted=None,
        half_life_days=11.0,
        remeasure_at=NOW + timedelta(days=6),
        remeasure_after_session=3,
        levels_used=(level(),),
        references=(REF,),
    )
    base.update(over)
    return PlexEstimate(**base)


def iris(**over: Any) -> IrisAssessment:
    base: dict[str, Any] = dict(  # noqa: C408 (keyword form mirrors the dataclass)
        risk="high",
        reasons=(Note("brainstem", {"terms": ("pons",)}), Note("enhancement")),
        watch_from=NOW,
        watch_until=None,
        watch_notes=(Note("iris-expected", IRIS_EXPECTED), Note("severe-risk-raised")),
        steroids=(
            SteroidStatement("Consider methylprednisolone for IRIS with mass effect.", "expert opinion", REF),
        ),
        pml_on_record=True,
        references=(REF,),
        reason_codes=("brainstem", "enhancement"),
    )
    base.update(over)
    return IrisAssessment(**base)


def dmt(**over: Any) -> DmtAdvice:
    base: dict[str, Any] = dict(  # noqa: C408 (keyword form mirrors the dataclass)
        allowed=("glatiramer acetate", "interferon beta-1a"),
        conditional=(
            ConditionalDmt("dimethyl fumarate", False, LymphocyteCount(0.4, NOW - timedelta(days=3))),
        ),
        avoid=("fingolimod", "ocrelizumab", "alemtuzumab"),
        active_conflicts=(),
        rebound_from=NOW + timedelta(days=60),
        rebound_peak=NOW + timedelta(days=120),
        rebound_until=NOW + timedelta(days=180),
        rebound_notes=(Note("plex-brings-forward"),),
        suggestible=("glatiramer acetate",),
        references=(REF,),
    )
    base.update(over)
    return DmtAdvice(**base)


def load(**over: Any) -> LoadResult:
    base: dict[str, Any] = {"facts": PatientFacts(), "exposure": True, "sources": {"labs": "prefetch"}}
    base.update(over)
    return LoadResult(**base)


def card_input(
    est: PlexEstimate | None = None,
    ia: IrisAssessment | None = None,
    da: DmtAdvice | None = None,
    lr: LoadResult | None = None,
    o: PlexOrder | None = None,
    chart_url: str | None = None,
) -> cards.CardInput:
    """The cards' input from the given engine results, each defaulting to this module's example."""
    return cards.CardInput(
        estimate=est or estimate(),
        iris=ia or iris(),
        dmt=da or dmt(),
        load=lr or load(),
        order=o or order(),
        now=NOW,
        patient_id="p1",
        chart_url=chart_url,
    )


def render(
    est: PlexEstimate | None = None,
    ia: IrisAssessment | None = None,
    da: DmtAdvice | None = None,
    lr: LoadResult | None = None,
    o: PlexOrder | None = None,
    chart_url: str | None = None,
) -> dict[str, Any]:
    out = cards.render(card_input(est, ia, da, lr, o, chart_url))
    body = CdsResponse(cards=out).to_json()
    check_response(body)
    for c in body["cards"]:
        assert len(c.get("detail", "")) <= 1000, c["summary"]
    return body


def full(
    kind: str,
    est: PlexEstimate | None = None,
    ia: IrisAssessment | None = None,
    da: DmtAdvice | None = None,
    lr: LoadResult | None = None,
    o: PlexOrder | None = None,
) -> str:
    """The full page's markdown of the card `kind` (everything the 1,000-character detail leaves out)."""
    made = cards.drafts(card_input(est, ia, da, lr, o))
    return cards.page_markdown(next(d for d in made if d.kind == kind))


def test_three_cards_with_expected_extensions() -> None:
    body = render()
    # most severe first: the estimate (short course) and IRIS (high risk) are warnings, the DMT card info
    assert [c["extension"]["pml-plex"]["kind"] for c in body["cards"]] == ["plex-estimate", "iris", "dmt"]
    assert [c["indicator"] for c in body["cards"]] == ["warning", "warning", "info"]
    e = ext(body, "plex-estimate")
    assert e == {
        "kind": "plex-estimate",
        "basis": "measured",
        "conclusion": "sessions-needed",
        "latestLevel": {"value": 25.0, "adjusted": 24.0, "unit": "ug/mL", "date": "2024-05-09T12:00:00Z"},
        "target": {"value": 1.0, "unit": "ug/mL"},
        "sessionsCompleted": 0,
        "remainingSessions": {"estimate": 5, "low": 5, "high": 7},
        "orderedSessions": 2,
    }
    assert ext(body, "iris") == {
        "kind": "iris",
        "risk": "high",
        "severeIrisRisk": "raised",
        "irisOnRecord": False,
        "reasons": ["brainstem", "enhancement"],
        "watchFrom": "2024-05-10",
    }
    assert ext(body, "dmt") == {
        "kind": "dmt",
        "allowed": ["glatiramer acetate", "interferon beta-1a"],
        "conditional": ["dimethyl fumarate"],
        "avoid": ["fingolimod", "ocrelizumab", "alemtuzumab"],
    }


def test_estimate_summary_and_detail() -> None:
    c = card(render(), "plex-estimate")
    assert c["summary"] == "Natalizumab 25 µg/mL: about 5 more PLEX sessions to reach <1 µg/mL (range 5-7)"
    short = c["detail"]
    # the detail: what to do, the numbers it rests on, one or two sources
    assert short.startswith("**Plan:** About 5 more sessions (range 5-7) at 1.5 plasma volumes every 2 days")
    assert "shorter than the estimate (5): a suggestion sets it to 5 sessions" in short
    assert "PLEX may bring IRIS sooner ([Tan 2011](" in short
    assert "**Based on:** level 25 µg/mL on 2024-05-09; about 24 µg/mL now" in short
    assert "[Landi 2017](" in short
    d = full("plex-estimate")
    for needle in (
        "| Value | Unit | Date | Kind |",
        "2024-05-09",
        "measured",
        "adjusted to now",
        "**PLEX sessions done:** 0",
        "plasma volumes",
        "half-life 11 days",
        "population value",
        "after session 3, before session 4",
        "Landi",
        "not proof of clinical benefit",
        "shorter than the estimate",
    ):
        assert needle in d, needle
    assert c["indicator"] == "warning"  # ordered course (2) shorter than estimate (5)
    # the page: the plan comes first, then the table
    assert d.startswith("**Plan:** About 5 more sessions (range 5-7) at 1.5 plasma volumes every 2 days")
    assert (
        d.index("**Plan:**") < d.index("**Ordered course:**") < d.index("| Value |") < d.index("**Sources**")
    )


def test_level_request_and_course_update_suggestions() -> None:
    c = card(render(), "plex-estimate")
    assert c["selectionBehavior"] == "any"
    assert [s.get("isRecommended", False) for s in c["suggestions"]] == [True, False]
    create = c["suggestions"][0]["actions"][0]
    sr = create["resource"]
    assert create["type"] == "create" and sr["resourceType"] == "ServiceRequest"
    assert sr["code"]["text"] == "Natalizumab [Mass/volume] in Serum or Plasma"
    assert sr["subject"] == {"reference": "Patient/p1"}
    assert sr["occurrenceDateTime"] == "2024-05-16T12:00:00Z"
    update = c["suggestions"][1]["actions"][0]
    assert update["type"] == "update"
    assert update["resource"]["id"] == "plex-1" and update["resource"]["quantityQuantity"]["value"] == 5
    assert update["resource"]["code"] == ORDER_RESOURCE["code"]  # the whole resource, not a diff


def test_no_update_when_course_long_enough() -> None:
    c = card(render(o=order(ordered=6)), "plex-estimate")
    assert all(a["type"] != "update" for s in c["suggestions"] for a in s["actions"])
    assert c["indicator"] == "info"


def test_every_emitted_resource_is_valid_r4b() -> None:
    body = render()
    for c in body["cards"]:
        for s in c.get("suggestions", []):
            for a in s["actions"]:
                cards.validate_emitted(a["resource"])
    with pytest.raises(ValueError):
        cards.validate_emitted({"resourceType": "ServiceRequest", "status": "nonsense"})


def test_decayed_summary_names_current_level() -> None:
    est = estimate(
        adjusted_level_ug_per_ml=8.0,
        starting_level=level(20, days=20),
        levels_used=(level(20, days=20),),
        remaining=SessionRange(3, 3, 4),
    )
    s = card(render(est=est), "plex-estimate")["summary"]
    assert s.startswith("Natalizumab about 8 µg/mL now (20 on 2024-04-20)") and "about 3 more" in s


def test_below_target_zero_sessions_and_comparator() -> None:
    lv = level(0.5, comparator="<")
    est = estimate(
        remaining=SessionRange(0, 0, 0),
        starting_level=lv,
        levels_used=(lv,),
        adjusted_level_ug_per_ml=0.5,
        sessions_completed=5,
        remeasure_at=None,
        conclusion="at-or-below-target",
    )
    body = render(est=est, o=order(ordered=2))
    e = ext(body, "plex-estimate")
    assert e["remainingSessions"] == {"estimate": 0, "low": 0, "high": 0}
    assert e["latestLevel"]["comparator"] == "<"
    c = card(body, "plex-estimate")
    assert "below the <1 µg/mL target" in c["summary"] and "<0.5" in c["summary"]


def test_dosing_history_gives_only_adjusted() -> None:
    est = estimate(
        basis="dosing-history",
        starting_level=None,
        levels_used=(),
        adjusted_level_ug_per_ml=12.0,
        remeasure_at=None,
        remaining=SessionRange(4, 3, 5),
    )
    body = render(est=est)
    assert ext(body, "plex-estimate")["latestLevel"] == {"adjusted": 12.0, "unit": "ug/mL"}
    c = card(body, "plex-estimate")
    assert "dosing history" in c["summary"]
    assert c["suggestions"][0]["actions"][0]["resource"]["resourceType"] == "ServiceRequest"  # measure now


def test_basis_none_omits_remaining() -> None:
    est = estimate(
        basis="none",
        remaining=None,
        starting_level=None,
        levels_used=(),
        adjusted_level_ug_per_ml=None,
        remeasure_at=None,
        conclusion="measure-first",
    )
    body = render(est=est)
    e = ext(body, "plex-estimate")
    assert "remainingSessions" not in e and "latestLevel" not in e and e["conclusion"] == "measure-first"
    c = card(body, "plex-estimate")
    assert c["indicator"] == "warning" and c["summary"].startswith("Measure serum natalizumab")


def test_fhir_text_is_escaped_everywhere() -> None:
    unusable = (
        UnusableValue("natalizumab level", "unit is not a mass concentration", reported=f"12 IU/mL {EVIL}"),
    )
    est = estimate(unusable=unusable)
    conflict = MedicationUse("fingolimod", EVIL, True, status="active")
    body = render(
        est=est,
        da=dmt(active_conflicts=(conflict,)),
        o=order(text=EVIL),
        lr=load(problems=(f"labs: {EVIL}",)),
    )
    pages = [
        full(
            k,
            est=est,
            da=dmt(active_conflicts=(conflict,)),
            o=order(text=EVIL),
            lr=load(problems=(f"labs: {EVIL}",)),
        )
        for k in ("plex-estimate", "iris", "dmt")
    ]
    for d in [c.get("detail", "") for c in body["cards"]] + pages:
        assert "<script>" not in d and "**bold**" not in d
        assert "\n# heading" not in d
        # the link survives only as escaped text: "\[x\](javascript…" shows literally, never as a link
        assert not re.search(r"(?<!\\)\[x(?<!\\)\]\(javascript", d) and "\\[x\\](javascript" in "".join(pages)
    assert "&lt;script&gt;" in card(body, "plex-estimate")["detail"]  # the ordered course names the order
    assert "&lt;script&gt;" in pages[0] and "&lt;script&gt;" in pages[2]


def test_md_escape() -> None:
    assert cards.md_escape("a*b_c [d](e) <i> & |") == r"a\*b\_c \[d\](e) &lt;i&gt; &amp; \|"
    assert cards.md_escape("line1\n\n# h") == "line1 # h"  # mid-line: no heading, left plain
    assert cards.md_escape("# h") == r"\# h" and cards.md_escape("- x") == r"\- x"
    assert cards.md_escape("1. x") == r"1\. x"
    # dates and parentheses stay plain (issue 17)
    assert cards.md_escape("Gilenya (fingolimod) 2026-12-06") == "Gilenya (fingolimod) 2026-12-06"
    # a bare URL must not become a link (GFM autolinks)
    assert cards.md_escape("see https://evil.example") == r"see https\://evil.example"
    assert cards.md_escape("www.x.org") == r"www\.x.org"


def test_dmt_card_conflict_and_conditional() -> None:
    conflict = MedicationUse(
        "fingolimod", "Gilenya 0.5 mg", True, status="active", last_date=NOW - timedelta(days=6)
    )
    body = render(da=dmt(active_conflicts=(conflict,)))
    c = card(body, "dmt")
    assert c["indicator"] == "critical"
    assert body["cards"][0] is c  # the critical card comes first
    assert "fingolimod" in c["summary"]
    assert c["extension"]["pml-plex"]["activeConflicts"] == ["fingolimod"]
    assert c["detail"].startswith("**Stop fingolimod now:**")
    page = full("dmt", da=dmt(active_conflicts=(conflict,)))
    assert "lymphocytes 0.4 ×10⁹/L on 2024-05-07" in page
    assert "Gilenya 0.5 mg" in page


def test_dmt_suggestions_only_allowed_never_avoid() -> None:
    # an engine bug that put an avoid-class drug among suggestible must not reach the EHR
    da = dmt(suggestible=("glatiramer acetate", "fingolimod", "dimethyl fumarate"))
    c = card(render(da=da), "dmt")
    offered = [s["actions"][0]["resource"]["medicationCodeableConcept"]["text"] for s in c["suggestions"]]
    assert offered == ["glatiramer acetate"]  # fingolimod: avoid; dimethyl fumarate: never drafted
    res = c["suggestions"][0]["actions"][0]["resource"]
    assert res["medicationCodeableConcept"]["coding"][0] == {
        "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
        "code": "214582",
        "display": "glatiramer acetate",
    }
    assert c["selectionBehavior"] == "any"  # Epic supports only "any"
    avoid = set(da.avoid)
    assert not avoid & set(cards.dmt_suggestible(da))


def test_iris_card() -> None:
    c = card(render(), "iris")
    assert c["indicator"] == "warning" and c["summary"].startswith("Raised risk of severe PML-IRIS")
    assert "no end date" in c["detail"] and "PLEX may bring IRIS sooner" in c["detail"]
    assert "**Expert opinion only:** Consider methylprednisolone" in full("iris")
    c = card(render(ia=iris(risk="standard", reasons=(), reason_codes=())), "iris")
    assert c["indicator"] == "info" and "reasons" not in c["extension"]["pml-plex"]


def test_chart_link() -> None:
    assert all("charts" not in link["url"] for link in card(render(), "plex-estimate")["links"])
    c = card(render(chart_url="http://127.0.0.1:8080/charts/abc.svg"), "plex-estimate")
    assert c["links"][0] == {
        "label": "Projected natalizumab level chart",
        "url": "http://127.0.0.1:8080/charts/abc.svg",
        "type": "absolute",
    }


@pytest.mark.parametrize("n", [1, 9, 10, 99, 100])
def test_summaries_fit_with_extreme_numbers(n: int) -> None:
    lv = level(123456.789, comparator=">=")
    est = estimate(
        remaining=SessionRange(n, n, n * 10),
        starting_level=lv,
        levels_used=(lv,),
        adjusted_level_ug_per_ml=0.001,
        target_ug_per_ml=0.123,
    )
    long_names = tuple(f"ingredient-{'x' * 40}-{i}" for i in range(5))
    conflicts = tuple(MedicationUse(None, f"{'y' * 80} {i}", True) for i in range(3))
    body = render(
        est=est,
        ia=iris(reasons=(Note("brainstem", {"terms": ("z" * 200,)}),)),
        da=dmt(allowed=long_names, avoid=long_names, active_conflicts=conflicts, suggestible=()),
    )
    assert all(len(c["summary"]) <= 139 for c in body["cards"])


def test_unusable_and_problems_named() -> None:
    est = estimate(
        unusable=(
            UnusableValue(
                "natalizumab level", "implausible value", reported="5000 ug/mL", at=NOW - timedelta(days=2)
            ),
        )
    )
    lr = load(problems=("medicationRequests: FHIR server timed out",), skipped=2)
    short = card(render(est=est, lr=lr), "plex-estimate")["detail"]
    assert "**Not used:** 3 items could not be used or read" in short
    d = full("plex-estimate", est=est, lr=lr)
    assert (
        "5000 ug/mL" in d
        and "implausible value" in d
        and "timed out" in d
        and "2 malformed FHIR entries" in d
    )


def test_fitted_removal_named() -> None:
    est = dataclasses.replace(estimate(), removal_fraction=0.53, removal_fraction_fitted=0.53)
    assert "fitted to this patient's levels" in full("plex-estimate", est=est)


def test_read_problems_named_on_every_card() -> None:
    lr = load(problems=("conditions: the FHIR server timed out",))
    body = render(lr=lr)
    assert all(
        "could not be" in c["detail"].lower() or "not used" in c["detail"].lower() for c in body["cards"]
    )
    assert all("timed out" in full(k, lr=lr) for k in ("plex-estimate", "iris", "dmt"))


LANDI_ENGINE = Reference(
    "Landi D et al. Neurology 2017;88(12):1144-1152 (219 natalizumab-PML cases)",
    "https://doi.org/10.1212/WNL.0000000000003740",
)


def _section(detail: str, heading: str) -> str:
    rest = detail.split(f"**{heading}**", 1)[1]
    return rest.split("\n\n**", 1)[0].split("\n\nThis is decision support", 1)[0]


def test_estimate_sources_listed_once_each() -> None:
    # the engine cites Landi 2017 in its own words; the card's own Landi reference must not repeat it
    est = estimate(references=(REF, LANDI_ENGINE, REF))
    d = full("plex-estimate", est=est)
    sources = _section(d, "Sources")
    assert sources.count("WNL.0000000000003740") == 1 and sources.count(REF.url) == 1
    assert "219 natalizumab-PML cases" in sources  # the first (engine) citation is kept
    assert "not proof of clinical benefit" in d and "[Landi 2017]" in d


def test_estimate_notes_shown_elsewhere_are_not_repeated() -> None:
    elsewhere = (
        Note("remeasure-after-session", {"after_session": 3}),
        Note("ordered-course-short", {"ordered": 2, "estimate": 5, "low": 5, "high": 7}),
        Note("clearance-only"),
        Note("unusable-values", {"count": 1}),
    )
    old = Note("old-level", {"age_days": 20.0})
    unusable = (UnusableValue("natalizumab level", "unit is not a mass concentration", reported="12 IU/mL"),)
    d = full("plex-estimate", est=estimate(notes=(*elsewhere, old), unusable=unusable))
    assert f"- {note_text(old)}" in d  # a note the card does not say otherwise stays
    assert all(note_text(n) not in d for n in elsewhere)
    assert d.count("12 IU/mL") == 1


def test_every_engine_note_code_has_words() -> None:
    for code, keys in NOTE_CODES.items():
        values = {k: "2024-05-10" if k.endswith("_on") else "<" if k == "comparator" else 2 for k in keys}
        assert note_text(Note(code, values)) != code, code


def _sample_values(keys: tuple[str, ...]) -> dict[str, NoteValue]:
    samples: dict[str, NoteValue] = {"multilobar": True, "blocked_by": ("pregnancy", "breastfeeding")}
    return {k: "2024-05-10" if k.endswith("_on") else samples.get(k, 2) for k in keys}


def test_every_watch_and_rebound_note_code_has_words() -> None:
    for codes, words in ((WATCH_NOTE_CODES, watch_text), (REBOUND_NOTE_CODES, rebound_text)):
        for code, keys in codes.items():
            text = words((Note(code, _sample_values(keys)),))
            assert text != code and text.endswith("."), code


def test_iris_watch_notes_in_words() -> None:
    onset = {"last_infusion_on": "2024-05-05", "mean_days": 57.4, "sd_days": 21.2}
    notes = (
        Note("iris-expected", IRIS_EXPECTED),
        Note("onset-after-last-infusion", onset),
        Note("severe-risk-not-raised", {"multilobar": True}),
    )
    d = full("iris", ia=iris(risk="standard", reasons=(), watch_notes=notes))
    assert (
        "**Watch:** from 2024-05-10, no end date. IRIS follows natalizumab washout in most patients "
        "(42 of 42; 15 of 17). It usually appears weeks to about 3 months after the last infusion (2024-05-05; "
        "mean 57.4 ± 21.2 days), and later onset is possible: there is no safe end date. Risk of severe IRIS "
        "not raised by the record (no brainstem, widespread or enhancing PML found); IRIS itself is still "
        "expected: monitor. Multilobar PML is named; alone it does not raise the risk."
    ) in d
    unlobed = full("iris", ia=iris(watch_notes=(Note("severe-risk-not-raised", {"multilobar": False}),)))
    assert "monitor." in unlobed and "Multilobar" not in unlobed


def test_dmt_rebound_notes_in_words() -> None:
    notes = (
        Note("rebound-after-last-dose", {"last_dose_on": "2024-04-30"}),
        Note("plex-brings-forward"),
        Note("relapse-within-a-year", {"percent": RELAPSE_WITHIN_A_YEAR_PERCENT}),
        Note("no-dmt-drafted", {"blocked_by": ("pregnancy", "breastfeeding")}),
    )
    d = full("dmt", da=dmt(rebound_notes=notes))
    assert (
        "MS activity may return from about 4 weeks after the last natalizumab dose (2024-04-30), peaking "
        "around 3-4 months and lasting to about 6 months. Plasma exchange removes the drug sooner and brings "
        "the rebound window forward. About 45% relapse within a year of stopping natalizumab. Pregnancy and "
        "breastfeeding on record: no DMT order is drafted."
    ) in d


def test_fitted_and_population_removal_both_shown() -> None:
    est = dataclasses.replace(
        estimate(), removal_fraction=0.53, removal_fraction_fitted=0.53, removal_fraction_population=0.45
    )
    d = full("plex-estimate", est=est)
    assert "about 47% of the level (53% remains: fitted to this patient's levels; population value 45%" in d


def test_ordered_course_long_and_missing() -> None:
    c = card(render(o=order(ordered=9)), "plex-estimate")
    assert (
        "9 sessions, more than the estimate's high end (7): a suggestion sets it to 5 sessions" in c["detail"]
    )
    shorten = [s for s in c["suggestions"] if s["actions"][0]["type"] == "update"]
    assert shorten and shorten[0]["label"].startswith(
        "Shorten the PLEX course to 5 sessions, 1.5 plasma volumes"
    )
    assert shorten[0]["actions"][0]["resource"]["quantityQuantity"]["value"] == 5
    assert c["indicator"] == "warning"
    d = card(render(o=order(ordered=None)), "plex-estimate")["detail"]
    assert "no session count given" in d


def test_repeated_unusable_values_collapse() -> None:
    pct = tuple(
        UnusableValue(
            "lymphocyte count",
            "a percentage is not an absolute count",
            reported=f"{20 + i} %",
            at=NOW - timedelta(days=10 - i),
        )
        for i in range(4)
    )
    facts = PatientFacts(unusable=pct)
    da = dmt(conditional=(ConditionalDmt("dimethyl fumarate", False, reason_code="no-count"),))
    c = card(render(da=da, lr=load(facts=facts)), "dmt")
    d = full("dmt", da=da, lr=load(facts=facts))
    assert d.count("a percentage is not an absolute count") == 1
    assert "4 lymphocyte count results (latest 23 % on 2024-05-03)" in d
    assert "no absolute lymphocyte count on record" in d and "4 lymphocyte results could not be used" in d
    assert "fumarate only if lymphocytes ≥0.5 (none on record)" in c["summary"]
    # the estimate and IRIS cards are not cluttered with lymphocyte results
    body = render(da=da, lr=load(facts=facts))
    assert "percentage" not in full("plex-estimate", da=da, lr=load(facts=facts))
    assert "percentage" not in full("iris", da=da, lr=load(facts=facts))
    assert all("percentage" not in c["detail"] for c in body["cards"])


def test_iris_findings_grouped_and_evidence_levels() -> None:
    steroids = (
        SteroidStatement("Corticosteroids during IRIS were associated with better outcome.", "evidence", REF),
        SteroidStatement("Prophylactic steroids in high-risk PML.", "expert opinion", REF),
    )
    ia = iris(
        reasons=(Note("brainstem", {"terms": ("pons", "brain stem")}), Note("enhancement")),
        steroids=steroids,
    )
    c = card(render(ia=ia), "iris")
    assert c["indicator"] == "warning"
    assert (
        c["summary"]
        == "Raised risk of severe PML-IRIS (brainstem, contrast enhancement): watch closely from 2024-05-10"
    )
    d = full("iris", ia=ia)
    assert "- brainstem involvement (pons; brain stem)\n" in d
    assert "- contrast enhancement at diagnosis (earlier, more severe IRIS)\n" in d
    assert "**Evidence (observational):** Corticosteroids during IRIS" in d
    assert "**Expert opinion only:** Prophylactic steroids" in d
    assert c["extension"]["pml-plex"]["reasons"] == list(ia.reason_codes)  # codes, not engine prose
    c = card(render(ia=iris(risk="standard", reasons=(), reason_codes=())), "iris")
    assert c["indicator"] == "info" and c["summary"].startswith("IRIS follows washout in most patients")
    assert "standard risk" not in c["summary"].lower() and "standard risk" not in c["detail"].lower()


def test_dmt_summary_by_class_and_article() -> None:
    da = dmt(
        allowed=("interferon beta-1a", "interferon beta-1b", "peginterferon beta-1a", "glatiramer acetate"),
        conditional=(
            ConditionalDmt("dimethyl fumarate", True, LymphocyteCount(1.8, NOW - timedelta(days=3)), "ok"),
        ),
        suggestible=("interferon beta-1a", "glatiramer acetate", "dimethyl fumarate"),
    )
    c = card(render(da=da), "dmt")
    assert c["summary"] == (
        "Next DMT without PML risk: interferon beta or glatiramer acetate (rebound still possible); "
        "fumarate possible (lymphocytes 1.8 ×10⁹/L)"
    )
    labels = [s["label"] for s in c["suggestions"]]
    # no fumarate draft (its own PML warning), the regimen and when it may start in each label
    assert labels == [
        "Draft glatiramer acetate 20 mg subcutaneously once daily (start after PLEX, once PML is stable)",
        "Draft interferon beta-1a 30 micrograms intramuscularly once weekly (start after PLEX, once PML is stable)",
    ]
    assert "glatiramer acetate 20 mg subcutaneously once daily" in c["detail"]  # the regimen in the text too
    assert "never drafted" in c["detail"] and "Rebound-safe" not in c["detail"]
    for s in c["suggestions"]:
        res = s["actions"][0]["resource"]
        assert res["dosageInstruction"][0]["text"] in s["label"]
        assert "Start once the PLEX course is over" in res["note"][0]["text"]
    d = full("dmt", da=da)
    assert "S1P modulators (fingolimod)" not in d and "fingolimod (S1P modulators)" in d
    assert "dimethyl fumarate: possible (lymphocytes 1.8 ×10⁹/L on 2024-05-07" in d
    assert "**Rebound window:** 2024-07-09 to 2024-11-06 (peak around 2024-09-07)" in d
    c = card(render(), "dmt")  # fumarate below the threshold
    assert "no fumarate (lymphocytes 0.4 ×10⁹/L, below 0.5)" in c["summary"]
    assert "not advised now (lymphocytes 0.4 ×10⁹/L on 2024-05-07, below 0.5 ×10⁹/L" in full("dmt")


def test_dmt_conflict_leads_summary_with_engine_names_only() -> None:
    conflict = MedicationUse("fingolimod", "Gilenya <b>0.5</b> | mg", True, status="active")
    c = card(render(da=dmt(active_conflicts=(conflict,))), "dmt")
    assert c["summary"] == (
        "Active fingolimod conflicts with PML recovery: stop; use glatiramer acetate or interferon beta"
    )
    assert c["detail"].startswith("**Stop fingolimod now:**")
    assert full("dmt", da=dmt(active_conflicts=(conflict,))).startswith(
        "**Active conflicting medication: stop**\n\n- **Gilenya &lt;b&gt;0.5"
    )
    unknown = MedicationUse(None, "Mystery <script>", True)
    c = card(render(da=dmt(active_conflicts=(unknown,))), "dmt")
    assert "Mystery" not in c["summary"] and "conflicts with PML recovery" in c["summary"]


def test_every_card_offers_override_reasons_with_displays() -> None:
    for c in render()["cards"]:
        reasons = c["overrideReasons"]
        assert reasons and all(r["display"] and r["code"] and r["system"] for r in reasons)


def test_suggestions_labelled_and_never_avoid_class() -> None:
    body = render()
    est = card(body, "plex-estimate")
    labels = [s["label"] for s in est["suggestions"]]
    assert labels == [
        "Order a natalizumab serum level after session 3 (around 2024-05-16)",
        (
            "Set the PLEX course to 5 sessions, 1.5 plasma volumes every 2 days (ordered 2; estimate 5, range 5-7). "
            "PLEX may bring IRIS sooner (Tan 2011)"
        ),
    ]
    note = est["suggestions"][0]["actions"][0]["resource"]["note"][0]["text"]
    assert "after PLEX session 3, before session 4" in note
    avoid = set(dmt().avoid)
    for s in card(body, "dmt")["suggestions"]:
        assert s["actions"][0]["resource"]["medicationCodeableConcept"]["text"] not in avoid


def test_post_session_sample_note_agrees_with_the_headline() -> None:
    # the engine's own estimate (not hand-written notes): the corrected level now is the same figure in
    # the summary and in the carried-level note, and the hours count from the session's end
    from cds.engine.domain import NatalizumabLevel, PatientFacts, PlexPlan, PlexSession
    from cds.engine.remaining import estimate_remaining

    ended = NOW - timedelta(hours=8)
    session = PlexSession(ended - timedelta(hours=2), plasma_volumes=1.5, ended_at=ended)
    lv = NatalizumabLevel(4.0, NOW - timedelta(hours=2))
    est = estimate_remaining(PatientFacts(levels=(lv,), sessions=(session,)), PlexPlan(), 1.0, NOW)
    assert "post-session-sample" in est.flags
    c = card(render(est=est), "plex-estimate")
    page = full("plex-estimate", est=est)
    shown = re.search(r"about ([\d.]+) µg/mL now", c["summary"])
    assert shown is not None, c["summary"]
    assert f"about {shown.group(1)} µg/mL now" in page  # the note says the same figure
    assert "drawn 6 h after a session ended" in page
    assert "it would be" not in page  # no uncorrected sensitivity figure beside the corrected one


def test_fumarate_count_from_before_the_last_dose_is_not_called_low() -> None:
    old_count = LymphocyteCount(1.8, NOW - timedelta(days=60))
    da = dmt(conditional=(ConditionalDmt("dimethyl fumarate", False, old_count, "no-count-after-last-dose"),))
    c = card(render(da=da), "dmt")
    assert "no fumarate yet (no lymphocyte count since the last natalizumab dose)" in c["summary"]
    assert "below 0.5" not in c["summary"]
    page = full("dmt", da=da)
    assert "is from before the last natalizumab dose" in page and "below 0.5 ×10⁹/L)" not in page


def test_fumarate_count_after_the_last_dose_but_over_6_months_old_is_called_old() -> None:
    old_count = LymphocyteCount(1.8, NOW - timedelta(days=200))
    da = dmt(conditional=(ConditionalDmt("dimethyl fumarate", False, old_count, "count-too-old"),))
    c = card(render(da=da), "dmt")
    assert "no fumarate yet (the last lymphocyte count is over 6 months old)" in c["summary"]
    page = full("dmt", da=da)
    assert "is over 6 months old" in page and "before the last natalizumab dose" not in page


@pytest.mark.parametrize(
    "over",
    [
        {"basis": "dosing-history", "starting_level": None, "levels_used": (), "remeasure_at": None},
        {"flags": ("lower-bound",)},
    ],
)
def test_no_shortening_without_a_measured_level(over: dict[str, Any]) -> None:
    c = card(render(est=estimate(**over), o=order(ordered=9)), "plex-estimate")
    assert not [s for s in c.get("suggestions", []) if s["actions"][0]["type"] in ("update", "delete")]


def test_fit_detail_keeps_the_limit_and_the_page_link() -> None:
    from cds.hooks.cards.layout import fit_detail

    url = "https://cds.example/cards/" + "x" * 43
    parts = ["**Do this:** first.", "y" * 2000, "**Then:** second.", ""]
    out = fit_detail(parts, url)
    assert len(out) <= 1000 and out.endswith(f"]({url})")
    assert out.startswith("**Do this:** first.\n\n**Then:** second.")  # the long part is left to the page
    cut = fit_detail(["z " * 900], url)
    assert len(cut) <= 1000 and cut.endswith(f"]({url})") and "..." in cut
    assert fit_detail(["a", "b"], None) == "a\n\nb"


def test_most_severe_first_then_fixed_order() -> None:
    conflict = MedicationUse("fingolimod", "Gilenya", True, status="active")
    body = render(da=dmt(active_conflicts=(conflict,)), ia=iris(risk="standard", reasons=(), reason_codes=()))
    assert [(ext_kind(c), c["indicator"]) for c in body["cards"]] == [
        ("dmt", "critical"),
        ("plex-estimate", "warning"),
        ("iris", "info"),
    ]
    body = render(o=order(ordered=5), ia=iris(risk="standard", reasons=(), reason_codes=()))
    assert [ext_kind(c) for c in body["cards"]] == ["plex-estimate", "iris", "dmt"]  # all info: fixed order


def ext_kind(c: dict[str, Any]) -> str:
    return str(c["extension"]["pml-plex"]["kind"])
