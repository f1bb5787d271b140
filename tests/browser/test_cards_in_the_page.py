"""Issue 17 in Chromium: the critical card first, details short with a full page behind them, the
actions an EHR applies (stop a medication, remove or shorten the draft order), sign-after-select.
Screenshots in tests/artifacts/ (critical-first.png, sign-after-select.png, ...)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import Service, Watched, order, sign

pytestmark = pytest.mark.browser


def cards(page: Any) -> list[dict[str, Any]]:
    return page.eval_on_selector_all(
        "#cards article.card",
        """els => els.map(e => ({
            kind: e.dataset.kind, indicator: e.dataset.indicator,
            badge: e.querySelector('.card-indicator').textContent,
            top: e.getBoundingClientRect().top,
            suggestions: [...e.querySelectorAll('button.suggestion')].map(b => b.textContent),
            links: [...e.querySelectorAll('a.card-link')].map(a => a.href),
        }))""",
    )


def raw_cards(page: Any, service_id: str) -> list[dict[str, Any]]:
    """The cards as the service sent them (the page keeps them per service)."""
    return page.evaluate(f"() => window.cdsDemo.state.lastCards['{service_id}']")


def test_critical_card_first_and_on_screen(demo: Watched, artifacts: Any) -> None:
    page = demo.page
    order(page, "active-fingolimod")
    shown = cards(page)
    assert shown[0]["indicator"] == "critical" and shown[0]["kind"] == "dmt"
    assert shown[0]["top"] < 900  # in the first screen (viewport 1280×900), not 1,600 px down
    badge = shown[0]["badge"]
    assert "Critical" in badge and "\u26d4" not in badge and "\ufe0f" not in badge  # no emoji font needed
    assert len(shown[0]["suggestions"]) <= 3 and shown[0]["suggestions"][0].startswith(
        "\u2605 Stop fingolimod"
    )
    assert not any("fumarate" in s for c in shown for s in c["suggestions"])
    page.screenshot(path=str(artifacts / "critical-first.png"), full_page=False)
    assert demo.errors == [] and demo.dialogs == []


@pytest.mark.parametrize(
    "name", ["high-level", "active-fingolimod", "brainstem-pml", "post-session", "implausible-values"]
)
def test_details_short_with_the_full_page_behind_them(
    demo: Watched, service: Service, artifacts: Any, name: str
) -> None:
    page = demo.page
    order(page, name)
    sent = raw_cards(page, "pml-plex-select")
    assert sent
    for card in sent:
        assert len(card["detail"]) <= 1000, (card["summary"], len(card["detail"]))
    rendered = page.eval_on_selector_all("#cards .card-detail", "els => els.map(e => e.innerText.length)")
    assert all(n <= 1000 for n in rendered)
    # the full page opens from the card, on this service, with an opaque id
    link = page.locator("#cards article.card").first.locator("a.card-link", has_text="Full details")
    href = link.get_attribute("href")
    assert href and href.startswith(service.url + "/cards/") and "demo-" not in href
    with page.context.expect_page() as popup:
        link.click()
    full = popup.value
    full.wait_for_load_state()
    assert full.locator("h1").count() == 1 and "Sources" in full.inner_text("body")
    if name == "high-level":
        full.screenshot(path=str(artifacts / "full-page-high-level.png"), full_page=True)
    full.close()


def test_stop_action_applied_to_the_active_medication(
    demo: Watched, service: Service, artifacts: Any
) -> None:
    page = demo.page
    order(page, "active-fingolimod")
    dmt = page.locator("article[data-kind='dmt']")
    uuid = dmt.get_attribute("data-card-uuid")
    dmt.locator("button.suggestion", has_text="Stop fingolimod").click()
    page.wait_for_selector("article[data-kind='dmt'] button.suggestion.accepted")
    rows = page.inner_text("#order-rows")
    assert "fingolimod" in rows.lower() and "stopped" in rows
    assert any(f.get("card") == uuid and f.get("outcome") == "accepted" for f in service.feedback())
    page.screenshot(path=str(artifacts / "stop-fingolimod-accepted.png"), full_page=True)


def test_below_target_removes_the_draft_order(demo: Watched) -> None:
    page = demo.page
    order(page, "below-target")
    est = page.locator("article[data-kind='plex-estimate']")
    assert est.get_attribute("data-indicator") == "warning"
    est.locator("button.suggestion", has_text="Cancel the draft PLEX order").click()
    page.wait_for_selector("#order-rows tr.removed")
    assert "removed" in page.inner_text("#order-rows")
    # signing without the PLEX order: nothing to advise on
    sign(page)
    assert page.is_visible("text=No decision support for this order.")


def test_sign_after_select_shows_only_what_changed_and_every_warning(demo: Watched, artifacts: Any) -> None:
    page = demo.page
    order(page, "active-fingolimod")
    selected = cards(page)
    assert len(selected) == 3
    sign(page)
    signed = cards(page)
    assert [(c["kind"], c["indicator"]) for c in signed] == [("dmt", "critical")]
    assert page.get_attribute(".not-repeated", "data-not-repeated") == "2"
    page.screenshot(path=str(artifacts / "sign-after-select.png"), full_page=True)
    # a change before signing (the course shortened by the clinician's accepted update) is shown
    order(page, "course-short")
    page.locator(
        "article[data-kind='plex-estimate'] button.suggestion", has_text="Set the PLEX course to"
    ).click()
    page.wait_for_selector("article[data-kind='plex-estimate'] button.suggestion.accepted")
    sign(page)
    assert "plex-estimate" in [c["kind"] for c in cards(page)]


def test_page_chrome_banner_and_log(demo: Watched) -> None:
    page = demo.page
    assert not page.is_visible("#banner")  # no empty banner before a patient is chosen
    order(page, "high-level")
    assert page.is_visible("#banner") and page.locator("#log li").count() >= 1
    page.click("button[data-patient='no-level']")
    page.wait_for_selector("body[data-patient='no-level'] #btn-order:not([disabled])")
    assert page.locator("#log li").count() == 0  # the activity log is per patient
