"""cards.render: pure, from hand-built engine results (no engine, no FHIR)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cds.engine.domain import (
    ConditionalDmt,
    DmtAdvice,
    IrisAssessment,
    LymphocyteCount,
    MedicationUse,
    NatalizumabLevel,
    PatientFacts,
    PlexEstimate,
    PlexPlan,
    Reference,
    SessionRange,
    SteroidStatement,
    UnusableValue,
)
from cds.fhir_io import LoadResult, PlexOrder
from cds.hooks import cards
from cds.hooks.models import CdsResponse
from cds.settings import Settings
from tests.hooks.checks import card, check_response, ext

NOW = datetime(2024, 5, 10, 12, 0, tzinfo=UTC)
REF = Reference("Foley JF et al. 2022", "https://doi.org/10.1000/example")
SETTINGS = Settings(_env_file=None, auth="off")
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
        reasons=("brainstem involvement (pons)", "contrast enhancement"),
        watch_from=NOW,
        watch_until=NOW + timedelta(days=42),
        watch_note="IRIS usually follows washout by weeks.",
        steroids=(
            SteroidStatement("Consider methylprednisolone for IRIS with mass effect.", "expert opinion", REF),
        ),
        pml_on_record=True,
        references=(REF,),
    )
    base.update(over)
    return IrisAssessment(**base)


def dmt(**over: Any) -> DmtAdvice:
    base: dict[str, Any] = dict(  # noqa: C408 (keyword form mirrors the dataclass)
        allowed=("glatiramer acetate", "interferon beta-1a"),
        conditional=(
            ConditionalDmt(
                "dimethyl fumarate",
                False,
                "lymphocytes below 0.5",
                LymphocyteCount(0.4, NOW - timedelta(days=3)),
            ),
        ),
        avoid=("fingolimod", "ocrelizumab", "alemtuzumab"),
        active_conflicts=(),
        rebound_from=NOW + timedelta(days=60),
        rebound_peak=NOW + timedelta(days=120),
        rebound_until=NOW + timedelta(days=180),
        rebound_note="Disease activity may rebound 3-6 months after the last infusion.",
        suggestible=("glatiramer acetate",),
        references=(REF,),
    )
    base.update(over)
    return DmtAdvice(**base)


def load(**over: Any) -> LoadResult:
    base: dict[str, Any] = {"facts": PatientFacts(), "exposure": True, "sources": {"labs": "prefetch"}}
    base.update(over)
    return LoadResult(**base)


def render(
    est: PlexEstimate | None = None,
    ia: IrisAssessment | None = None,
    da: DmtAdvice | None = None,
    lr: LoadResult | None = None,
    o: PlexOrder | None = None,
    chart_url: str | None = None,
) -> dict[str, Any]:
    out = cards.render(
        est or estimate(),
        ia or iris(),
        da or dmt(),
        lr or load(),
        o or order(),
        SETTINGS,
        NOW,
        patient_id="p1",
        chart_url=chart_url,
    )
    body = CdsResponse(cards=out).to_json()
    check_response(body)
    return body


def test_three_cards_with_expected_extensions() -> None:
    body = render()
    assert [c["extension"]["pml-plex"]["kind"] for c in body["cards"]] == ["plex-estimate", "iris", "dmt"]
    e = ext(body, "plex-estimate")
    assert e == {
        "kind": "plex-estimate",
        "basis": "measured",
        "latestLevel": {"value": 25.0, "adjusted": 24.0, "unit": "ug/mL", "date": "2024-05-09T12:00:00Z"},
        "target": {"value": 1.0, "unit": "ug/mL"},
        "sessionsCompleted": 0,
        "remainingSessions": {"estimate": 5, "low": 5, "high": 7},
        "orderedSessions": 2,
    }
    assert ext(body, "iris") == {
        "kind": "iris",
        "risk": "high",
        "reasons": ["brainstem involvement (pons)", "contrast enhancement"],
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
    d = c["detail"]
    for needle in (
        "| Date | Value | Unit | Kind |",
        "2024-05-09",
        "measured",
        "adjusted to now",
        "**PLEX sessions done:** 0",
        "plasma volumes",
        "half-life 11 days",
        "population value",
        "after session 3",
        "Landi",
        "not proof of clinical benefit",
        "shorter than the estimate",
    ):
        assert needle in d, needle
    assert c["indicator"] == "warning"  # ordered course (2) shorter than estimate (5)


def test_level_request_and_course_update_suggestions() -> None:
    c = card(render(), "plex-estimate")
    assert c["selectionBehavior"] == "any"
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
    )
    body = render(est=est)
    e = ext(body, "plex-estimate")
    assert "remainingSessions" not in e and "latestLevel" not in e
    c = card(body, "plex-estimate")
    assert c["indicator"] == "warning" and "cannot be estimated" in c["summary"]


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
    for c in body["cards"]:
        d = c.get("detail", "")
        assert "<script>" not in d and "](javascript" not in d and "**bold**" not in d
        assert "\n# heading" not in d
    assert "&lt;script&gt;" in card(body, "plex-estimate")["detail"]
    assert "&lt;script&gt;" in card(body, "dmt")["detail"]


def test_md_escape() -> None:
    assert cards.md_escape("a*b_c [d](e) <i> & |") == r"a\*b\_c \[d\]\(e\) &lt;i&gt; &amp; \|"
    assert cards.md_escape("line1\n\n# h") == r"line1 \# h"


def test_dmt_card_conflict_and_conditional() -> None:
    conflict = MedicationUse(
        "fingolimod", "Gilenya 0.5 mg", True, status="active", last_date=NOW - timedelta(days=6)
    )
    c = card(render(da=dmt(active_conflicts=(conflict,))), "dmt")
    assert c["indicator"] == "critical"
    assert "fingolimod" in c["summary"]
    assert c["extension"]["pml-plex"]["activeConflicts"] == ["fingolimod"]
    assert "lymphocytes 0.4 ×10⁹/L on 2024-05-07" in c["detail"]
    assert "Gilenya 0.5 mg" in c["detail"]


def test_dmt_suggestions_only_allowed_never_avoid() -> None:
    # an engine bug that put an avoid-class drug among suggestible must not reach the EHR
    da = dmt(suggestible=("glatiramer acetate", "fingolimod", "dimethyl fumarate"))
    c = card(render(da=da), "dmt")
    offered = [s["actions"][0]["resource"]["medicationCodeableConcept"]["text"] for s in c["suggestions"]]
    assert offered == ["glatiramer acetate"]  # fingolimod: avoid; dimethyl fumarate: conditional, not advised
    res = c["suggestions"][0]["actions"][0]["resource"]
    assert res["medicationCodeableConcept"]["coding"][0] == {
        "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
        "code": "214582",
        "display": "glatiramer acetate",
    }
    assert c["selectionBehavior"] == "at-most-one"
    avoid = set(da.avoid)
    assert not avoid & set(cards.dmt_suggestible(da))


def test_iris_card() -> None:
    c = card(render(), "iris")
    assert c["indicator"] == "warning" and c["summary"].startswith("High PML-IRIS risk")
    assert "_expert opinion_" in c["detail"] and "2024-06-21" in c["detail"]
    c = card(render(ia=iris(risk="standard", reasons=())), "iris")
    assert c["indicator"] == "info" and "reasons" not in c["extension"]["pml-plex"]


def test_chart_link() -> None:
    assert card(render(), "plex-estimate").get("links") is None
    c = card(render(chart_url="http://127.0.0.1:8080/charts/abc.svg"), "plex-estimate")
    assert c["links"] == [
        {
            "label": "Projected natalizumab level chart",
            "url": "http://127.0.0.1:8080/charts/abc.svg",
            "type": "absolute",
        }
    ]


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
        ia=iris(reasons=("z" * 200,)),
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
    d = card(
        render(est=est, lr=load(problems=("medicationRequests: FHIR server timed out",), skipped=2)),
        "plex-estimate",
    )["detail"]
    assert (
        "5000 ug/mL" in d
        and "implausible value" in d
        and "timed out" in d
        and "2 malformed FHIR entries" in d
    )


def test_fitted_removal_named() -> None:
    est = dataclasses.replace(estimate(), removal_fraction=0.53, removal_fraction_fitted=0.53)
    assert "fitted to this patient's levels" in card(render(est=est), "plex-estimate")["detail"]


def test_read_problems_named_on_every_card() -> None:
    body = render(lr=load(problems=("conditions: the FHIR server timed out",)))
    assert all("timed out" in c["detail"] for c in body["cards"])
