"""The demo page in Chromium: it loads, every demo patient shows its expected cards, the chart opens,
feedback reaches the store, and card markdown cannot inject script."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from cds import demo as demo_data
from tests.browser.conftest import Service, Watched, order, sign

pytestmark = pytest.mark.browser

SCENARIOS = demo_data.scenarios()
KIND_WORDS = {"info": "Info", "warning": "Warning", "critical": "Critical"}


def cards_on_page(page: Any) -> list[dict[str, Any]]:
    return page.eval_on_selector_all(
        "#cards article.card",
        """els => els.map(e => ({
            kind: e.dataset.kind || null, indicator: e.dataset.indicator, uuid: e.dataset.cardUuid,
            summary: e.querySelector('.card-summary').textContent,
            badge: e.querySelector('.card-indicator').textContent,
            suggestions: e.querySelectorAll('button.suggestion').length,
            links: [...e.querySelectorAll('a.card-link')].map(a => a.href),
        }))""",
    )


def test_page_loads(demo: Watched) -> None:
    page = demo.page
    assert "DemoEHR" in page.title()
    names = page.eval_on_selector_all("#patient-list button", "bs => bs.map(b => b.dataset.patient)")
    assert names == SCENARIOS
    assert page.is_visible("text=Synthetic demo data")
    assert demo.errors == [] and demo.dialogs == []


@pytest.mark.parametrize("name", SCENARIOS)
def test_order_each_patient_shows_expected_cards(demo: Watched, name: str, artifacts: Any) -> None:
    page = demo.page
    expected = demo_data.patient(name, datetime.now(UTC)).expected
    order(page, name)
    cards = cards_on_page(page)
    assert sorted(c["kind"] for c in cards) == sorted(expected["cards"])
    ranks = [("critical", "warning", "info").index(c["indicator"]) for c in cards]
    assert ranks == sorted(ranks)  # most severe first
    if not expected["cards"]:
        assert page.is_visible("text=No decision support for this order.")
    for c in cards:
        assert c["indicator"] in KIND_WORDS and KIND_WORDS[c["indicator"]] in c["badge"]  # colour + word
        assert 0 < len(c["summary"]) < 140
        assert re.fullmatch(r"[0-9a-f-]{36}", c["uuid"])
    if "plex-estimate" in expected["cards"]:
        est = next(c for c in cards if c["kind"] == "plex-estimate")
        if expected.get("remaining_estimate") is not None and expected.get("basis") == "measured":
            assert "PLEX" in est["summary"] or "session" in est["summary"]
    page.screenshot(path=str(artifacts / f"demo-{name}.png"), full_page=True)

    # Sign: order-sign through the real endpoint, after the order-select of the same order and data:
    # every warning and critical card again, the unchanged info cards not repeated (and said so)
    sign(page)
    signed = cards_on_page(page)
    assert [c["kind"] for c in signed] == [c["kind"] for c in cards if c["indicator"] != "info"]
    left_out = len(cards) - len(signed)
    if left_out:
        assert page.get_attribute(".not-repeated", "data-not-repeated") == str(left_out)
    assert "order-sign" in page.inner_text("#cards-hook")
    assert demo.errors == [] and demo.dialogs == []


def test_chart_opens_from_estimate_card(demo: Watched, service: Service, artifacts: Any) -> None:
    page = demo.page
    order(page, "high-level")
    link = page.locator("article[data-kind='plex-estimate'] a.card-link", has_text="level chart")
    href = link.get_attribute("href")
    assert href and re.fullmatch(re.escape(service.url) + r"/charts/[A-Za-z0-9_-]{43}\.svg", href)
    assert "high-level" not in href and "demo-" not in href  # no patient id in the URL
    with page.context.expect_page() as popup_info:
        link.click()
    chart = popup_info.value
    chart.wait_for_load_state()
    assert chart.url == href
    svg = chart.locator("svg")
    assert svg.count() == 1 and svg.get_attribute("role") == "img"
    assert chart.locator("svg .target-line").count() == 1
    assert chart.locator("svg .projected-point").count() >= 1
    assert "Natalizumab" in chart.locator("svg > title").text_content()
    chart.screenshot(path=str(artifacts / "chart-high-level.png"))
    png = chart.request.get(href[:-4] + ".png")
    assert png.status in (200, 503)
    if png.status == 200:
        assert png.headers["content-type"] == "image/png"
        (artifacts / "chart-high-level-served.png").write_bytes(png.body())
    chart.close()


def test_accepting_a_suggestion_posts_feedback_to_the_store(demo: Watched, service: Service) -> None:
    page = demo.page
    order(page, "course-short")
    est = page.locator("article[data-kind='plex-estimate']")
    uuid = est.get_attribute("data-card-uuid")
    update = est.locator("button.suggestion", has_text="Set the PLEX course to")
    sid = update.get_attribute("data-suggestion-uuid")
    update.click()
    page.wait_for_selector("article[data-kind='plex-estimate'] button.suggestion.accepted")
    stored = [f for f in service.feedback() if f.get("card") == uuid]
    assert stored, "accepted feedback not in the store"
    row = stored[-1]
    assert row.get("outcome") == "accepted"
    assert sid in repr(row)  # the accepted suggestion id is kept
    # the EHR applied the update to the draft order: the course now has the estimated length
    expected = demo_data.patient("course-short", datetime.now(UTC)).expected["suggest_update_sessions"]
    assert f"{expected} sessions" in page.inner_text("#order-rows")
    # a created order (the level) joins the draft orders the EHR signs
    est.locator("button.suggestion", has_text="natalizumab serum level").click()
    page.wait_for_selector("#order-rows tr:nth-child(2)")
    assert len([f for f in service.feedback() if f.get("card") == uuid]) == 2
    # signing sends the updated order: the estimate card no longer offers the update
    sign(page)
    assert (
        page.locator(
            "article[data-kind='plex-estimate'] button.suggestion", has_text="Set the PLEX course"
        ).count()
        == 0
    )
    assert demo.errors == [] and demo.dialogs == []


def test_dismissing_a_card_posts_override_reason(demo: Watched, service: Service) -> None:
    page = demo.page
    order(page, "brainstem-pml")
    iris = page.locator("article[data-kind='iris']")
    uuid = iris.get_attribute("data-card-uuid")
    iris.locator("button.dismiss").click()
    iris.locator(".card-dismiss label").first.click()
    iris.locator(".card-dismiss textarea").fill("discussed at MDT")
    iris.locator("button.confirm-dismiss").click()
    page.wait_for_selector("article[data-kind='iris'][data-outcome='overridden']")
    rows = [f for f in service.feedback() if f.get("card") == uuid]
    assert rows and rows[-1].get("outcome") == "overridden"
    assert "discussed at MDT" in repr(rows[-1])
