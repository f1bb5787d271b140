"""Issue 15: one regression test per numbered path to a wrong answer, through the real HTTP service.

Every test runs on both test FHIR servers (the session fixture `fhir_server`) and twice: with every
prefetch key filled from the service's own templates ("prefetch"), and with no prefetch at all, the
service reading the FHIR server itself ("fhir-server"). The scenario patients (safety_scenarios.py)
are stored on the server once per module. The expectations are the contract of issue 15
(/work/briefs/contract15.md): the estimate card's `conclusion`, `flags` and `unusable` codes, the IRIS
card's `severeIrisRisk`, `irisOnRecord`, `reasons` and `watchFrom`, the DMT card's `blockedBy`.

    .venv/bin/python -m pytest -q tests/integration/test_safety_regressions.py
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from cds import demo
from cds.fhir_io import prefetch_templates
from cds.settings import Settings
from tests.hooks.checks import card, ext
from tests.integration import safety_scenarios as scenarios
from tests.integration import service_support as svc
from tests.safety.invariant import assert_not_reassuring
from tests.support.fhir import FhirServer, load_resources, run_suffix, suffixed

HOOK = "order-select"
MODES = ("prefetch", "fhir-server")
Call = Callable[[str], dict[str, Any]]


@pytest.fixture(scope="module")
def patients(fhir_server: FhirServer) -> dict[str, demo.DemoPatient]:
    """Every scenario patient, stored on the server under this run's ids, in one load."""
    built = scenarios.build(datetime.now(UTC))
    moved = {name: suffixed(p, run_suffix("safety")) for name, p in built.items()}
    load_resources(fhir_server, [r for p in moved.values() for r in p.resources])
    return moved


@pytest.fixture(params=MODES)
def hook(
    request: pytest.FixtureRequest,
    fhir_server: FhirServer,
    running: tuple[str, Settings],
    patients: dict[str, demo.DemoPatient],
) -> Call:
    """call(scenario name) -> the service's 200 response, by prefetch or by FHIR-server reads."""
    url, settings = running

    def call(name: str) -> dict[str, Any]:
        p = patients[name]
        if request.param == "prefetch":
            body = demo.hook_request(p, HOOK, prefetch=False)
            body["prefetch"] = scenarios.prefetch(prefetch_templates(settings), p)
        else:
            body = svc.without_prefetch(fhir_server, p, HOOK)
        return svc.post_hook(url, HOOK, body, 200)

    return call


# ---------------------------------------------------------------- helpers


def estimate(body: dict[str, Any]) -> dict[str, Any]:
    return ext(body, "plex-estimate")


def flags(e: dict[str, Any]) -> set[str]:
    return set(e.get("flags", []))


def unusable_codes(e: dict[str, Any]) -> set[str]:
    return {u["code"] for u in e.get("unusable", [])}


def text(c: dict[str, Any]) -> str:
    return f"{c['summary']}\n{c.get('detail', '')}"


def drafted_medication_requests(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Every MedicationRequest a suggestion of any card would create."""
    return [
        a["resource"]
        for c in body["cards"]
        for s in c.get("suggestions", [])
        for a in s.get("actions", [])
        if a["type"] == "create" and a["resource"]["resourceType"] == "MedicationRequest"
    ]


def assert_sessions_needed(e: dict[str, Any]) -> None:
    assert e.get("conclusion") == "sessions-needed", e
    assert e["remainingSessions"]["estimate"] >= 1, e


def assert_measure_first(body: dict[str, Any]) -> None:
    e = estimate(body)
    assert e.get("conclusion") == "measure-first", e
    assert "remainingSessions" not in e, e
    summary = card(body, "plex-estimate")["summary"]
    assert summary.startswith("Measure serum natalizumab"), summary


def instant(fhir_date_or_datetime: str) -> datetime:
    """A FHIR date or dateTime as an aware datetime (a date: its midnight UTC)."""
    value = datetime.fromisoformat(fhir_date_or_datetime)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# ---------------------------------------------------------------- 1-6: the paths to a false reassurance


def test_item01_antibodies_never_override_a_measured_level(hook: Call) -> None:
    body = hook("item01-level")
    assert_not_reassuring(body["cards"], "persistent antibodies beside 12 µg/mL")
    e = estimate(body)
    assert_sessions_needed(e)
    assert e["latestLevel"]["value"] == 12
    assert "antibody-level-discordance" in flags(e), e  # re-test both
    assert card(body, "plex-estimate")["indicator"] == "warning"


def test_item01_antibodies_without_a_level_ask_for_a_measurement(hook: Call) -> None:
    body = hook("item01-nolevel")
    assert_not_reassuring(body["cards"], "persistent antibodies, no level")
    assert_measure_first(body)
    assert "antibodies-no-level" in flags(estimate(body))


def test_item02_jc_virus_antibodies_are_not_anti_natalizumab_antibodies(hook: Call) -> None:
    body = hook("item02")
    assert_not_reassuring(body["cards"], "JCV index with Tysabri in its text")
    e = estimate(body)
    assert_sessions_needed(e)
    assert e["latestLevel"]["value"] == 12
    assert not flags(e) & {"antibody-level-discordance", "antibodies-no-level", "persistent-antibodies"}, e


def test_item03_an_order_date_is_never_a_dose_date(hook: Call) -> None:
    body = hook("item03-order")
    assert_not_reassuring(body["cards"], "3-year-old standing order, no infusion")
    assert_measure_first(body)
    assert "last-dose-unknown" in flags(estimate(body))
    iris = ext(body, "iris")
    assert "watchFrom" not in iris and "watchUntil" not in iris, iris  # nothing computed from the order


def test_item03_infusions_are_read_from_medication_administration(hook: Call) -> None:
    body = hook("item03-given")
    assert_not_reassuring(body["cards"], "infusion 20 days ago beside a 3-year-old order")
    e = estimate(body)
    assert e["basis"] == "dosing-history" and "last-dose-unknown" not in flags(e), e
    watch_from = instant(ext(body, "iris")["watchFrom"])
    given = datetime.now(UTC) - timedelta(days=20)
    assert given - timedelta(days=1) <= watch_from <= given + timedelta(days=20), watch_from


def test_item04_only_serum_or_plasma_counts_as_a_level(hook: Call) -> None:
    body = hook("item04")
    assert_not_reassuring(body["cards"], "CSF 0.1 µg/mL newer than serum 12 µg/mL")
    e = estimate(body)
    assert_sessions_needed(e)
    assert e["latestLevel"]["value"] == 12
    assert "specimen" in unusable_codes(e), e


def test_item05_grouping_commas_unit_conflicts_and_other_scripts_are_never_misread(hook: Call) -> None:
    body = hook("item05")
    assert_not_reassuring(body["cards"], "12,500 ng/mL; unit conflict; Mg/L; Arabic-Indic digits")
    e = estimate(body)
    assert_sessions_needed(e)
    assert e["latestLevel"]["value"] == 12.5, e  # "12,500 ng/mL": a grouping comma
    assert {"unit-conflict", "number-format"} <= unusable_codes(e), e
    assert len(e["unusable"]) >= 3, e  # the Mg/L value is named too


def test_item06_a_qualitative_result_is_a_measurement_below_the_assay_limit(hook: Call) -> None:
    body = hook("item06")
    c = card(body, "plex-estimate")
    e = estimate(body)
    assert e.get("conclusion") == "at-or-below-target", (c["summary"], e)
    assert e["basis"] == "measured" and e["remainingSessions"] == {"estimate": 0, "low": 0, "high": 0}
    assert e["latestLevel"]["comparator"] == "<" and e["latestLevel"]["value"] == 0.5, e
    assert "<0.5 µg/mL" in c["summary"] and "about 0.4" not in text(c), c["summary"]
    updates = [a for s in c.get("suggestions", []) for a in s["actions"] if a["type"] == "update"]
    assert not updates, "no course extension against a newer result below the assay limit"


# ---------------------------------------------------------------- 7-16: also wrong, same step


def _post_session_factor(plasma_volumes: float, intravascular_fraction: float = 0.55) -> float:
    """Equilibrated / post-session level by the model's two compartments (issue 15, item 7)."""
    left = math.exp(-plasma_volumes)
    return (1 - intravascular_fraction * (1 - left)) / left


def test_item07_post_session_correction_follows_the_exchanged_volume(hook: Call) -> None:
    body = hook("item07")
    assert_not_reassuring(body["cards"], "2 µg/mL drawn 3 h after a 2.5 PV session")
    e = estimate(body)
    assert "post-session-sample" in flags(e), e
    expected = 2.0 * _post_session_factor(2.5)  # ≈ 12 µg/mL (a fixed 1.75× gave 3.5)
    assert 0.8 * expected <= e["latestLevel"]["adjusted"] <= 1.1 * expected, (expected, e["latestLevel"])
    assert "redraw" in text(card(body, "plex-estimate")).lower()


def test_item08_a_date_only_level_on_a_session_day_is_flagged_and_widened(hook: Call) -> None:
    body = hook("item08")
    assert_not_reassuring(body["cards"], "date-only level on a session day")
    e = estimate(body)
    assert "date-ambiguous" in flags(e), e
    r = e["remainingSessions"]
    assert r["high"] > r["low"], r  # before or after the session: the range covers both


def test_item09_the_removal_fit_uses_only_levels_drawn_within_the_course(hook: Call) -> None:
    body = hook("item09")
    assert_not_reassuring(body["cards"], "old pre-course level beside two in-course levels")
    e = estimate(body)
    assert_sessions_needed(e)
    assert e["latestLevel"]["value"] == 1.5
    assert "fit-excluded-old-level" in flags(e), e


def test_item10_an_old_level_widens_the_range_for_half_life_uncertainty(hook: Call) -> None:
    body = hook("item10-old")
    assert_not_reassuring(body["cards"], "one level 30 days old")
    r = estimate(body)["remainingSessions"]
    # 20 µg/mL 30 days ago: about 3.0 µg/mL now at t½ 11 d, 9.6 µg/mL at the EU model's 28.2 d
    assert r["high"] - r["low"] >= 2, r


def test_item10_the_dosing_history_projection_reproduces_the_label_trough(hook: Call) -> None:
    body = hook("item10-history")
    assert_not_reassuring(body["cards"], "dosing history only")
    e = estimate(body)
    assert e["basis"] == "dosing-history", e
    # 28 days after an infusion at steady state q4w: the label's trough, 23-29 µg/mL
    assert 21 <= e["latestLevel"]["adjusted"] <= 31, e["latestLevel"]


def test_item11_fumarates_need_a_lymphocyte_count_after_the_last_dose(hook: Call) -> None:
    body = hook("item11")
    d = ext(body, "dmt")
    assert "no-count-after-last-dose" in json.dumps(d), d
    conditional = json.dumps(d.get("conditional", [])).lower()
    assert "fumarate" in conditional, d
    drafted = json.dumps(drafted_medication_requests(body)).lower()
    assert "fumarate" not in drafted, "no fumarate draft on a count drawn on natalizumab"


def test_item12_multilobar_is_not_widespread_and_the_card_speaks_of_severe_iris(hook: Call) -> None:
    body = hook("item12-multilobar")
    iris = ext(body, "iris")
    assert iris.get("severeIrisRisk") == "not-raised", iris
    assert "multilobar" in iris.get("reasons", []) and "widespread" not in iris.get("reasons", []), iris
    c = card(body, "iris")
    assert "standard risk" not in text(c).lower() and "standard pml-iris risk" not in text(c).lower()
    assert "severe" in text(c).lower() and "most patients" in text(c).lower(), text(c)
    assert "watchFrom" in iris and "watchUntil" not in iris, iris  # the watch has no hard end


def test_item12_iris_on_record_changes_the_card(hook: Call) -> None:
    with_iris, without = hook("item12-iris"), hook("item13")
    assert ext(with_iris, "iris").get("irisOnRecord") is True, ext(with_iris, "iris")
    assert ext(without, "iris").get("irisOnRecord") is False, ext(without, "iris")
    assert card(with_iris, "iris")["summary"] != card(without, "iris")["summary"]


def _steroid_items(url: str, c: dict[str, Any]) -> list[str]:
    """The steroid statements of the IRIS card's full page (since issue 17 the card's detail keeps to
    1,000 characters and names them; the page lists them), as plain text."""
    link = next(lk["url"] for lk in c.get("links", []) if "/cards/" in lk["url"])
    r = httpx.get(f"{url}/cards/{link.rsplit('/', 1)[1]}", timeout=10)
    assert r.status_code == 200, r.text[:300]
    section = r.text.split("<strong>Steroids</strong>", 1)[1].split("</ul>", 1)[0]
    return [html.unescape(re.sub(r"<[^>]+>", "", li)) for li in re.findall(r"<li>(.*?)</li>", section)]


def test_item13_steroid_evidence_labels_name_expert_practice_and_a_case_report(
    hook: Call, running: tuple[str, Settings]
) -> None:
    c = card(hook("item13"), "iris")
    detail = c["detail"]
    assert "Steroids:" in detail  # the detail points to the statements on the full page
    lines = _steroid_items(running[0], c)
    regimen = [ln for ln in lines if "1 g" in ln]
    assert regimen, detail
    for ln in regimen:  # the 1 g/day × 3-5 days pulse is not from Tan 2011: expert practice
        assert "Tan" not in ln and "xpert" in ln, ln
    wenning = [ln for ln in lines if "Wenning" in ln]
    assert wenning and all("case report" in ln.lower() for ln in wenning), wenning


def test_item14_implausible_values_and_same_time_discordance_are_named(hook: Call) -> None:
    high = hook("item14-high")
    assert_not_reassuring(high["cards"], "600 µg/mL")
    assert "implausible-high" in unusable_codes(estimate(high)), estimate(high)

    low = hook("item14-low-unit")
    assert_not_reassuring(low["cards"], "25 ng/mL after 12 µg/mL")
    assert "implausible-low-for-unit" in unusable_codes(estimate(low)), estimate(low)

    same = hook("item14-same-time")
    assert_not_reassuring(same["cards"], "12 and 0.3 µg/mL at the same time")
    assert "discordant-same-time" in flags(estimate(same)), estimate(same)


@pytest.mark.parametrize("status", ["pregnancy", "breastfeeding"])
def test_item15_pregnancy_and_breastfeeding_block_dmt_drafts(hook: Call, status: str) -> None:
    body = hook("item15-pregnant" if status == "pregnancy" else "item15-breastfeeding")
    d = ext(body, "dmt")
    assert status in d.get("blockedBy", []), d
    assert not drafted_medication_requests(body), "no DMT draft order while pregnant or breastfeeding"
    assert status[:7] in text(card(body, "dmt")).lower()  # named: "pregnan", "breastf"


def test_item15_age_under_18_is_named_as_outside_the_model_population(hook: Call) -> None:
    body = hook("item15-minor")
    assert "outside-population-age" in flags(estimate(body)), estimate(body)


def test_item16_negated_and_historical_mri_findings_do_not_raise_iris_risk(hook: Call) -> None:
    iris = ext(hook("item16"), "iris")
    assert iris.get("severeIrisRisk") == "not-raised", iris
    assert not set(iris.get("reasons", [])) & {"enhancement", "brainstem", "widespread"}, iris
