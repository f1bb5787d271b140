"""Card markdown is rendered, never executed: raw HTML shows as text, javascript: links are not links.

The injection tests run with the page's Content-Security-Policy bypassed, so that they test the
renderer itself (with CSP on, an inline handler would be blocked anyway: defence in depth).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from cds import demo as demo_data
from tests.browser.conftest import Service, Watched, open_demo

pytestmark = pytest.mark.browser

PAYLOAD = "<img src=x onerror=alert(1)>"
LINK_TRICK = "[click me](javascript:alert(2))"
NASTY_MD = "\n".join(
    [
        "## Heading <script>alert(3)</script>",
        f"Text {PAYLOAD} and {LINK_TRICK} and [ok](https://example.org/x) and **bold** and `code`",
        "[entity](javascript&#58;alert(4)) [data](data:text/html,<script>alert(5)</script>) <javascript:alert(6)>",
        "",
        "| a | b |",
        "|---|---:|",
        "| <svg onload=alert(7)> | \\| piped |",
        "",
        "- item <iframe src=javascript:alert(8)>",
        "- [x](vbscript:msgbox(9)) &lt;b&gt;escaped&lt;/b&gt;",
    ]
)

DOM_PROBE = """root => {
  const bad = [...root.querySelectorAll('script, img, iframe, svg, object, embed, style, link, form, input')];
  const onAttrs = [...root.querySelectorAll('*')].flatMap(e => [...e.attributes].filter(a => /^on/i.test(a.name)).map(a => a.name));
  const hrefs = [...root.querySelectorAll('a')].map(a => a.getAttribute('href'));
  return {bad: bad.map(e => e.tagName), onAttrs, hrefs, text: root.textContent};
}"""


@pytest.fixture
def nocsp_demo(browser: Any, service: Service) -> Iterator[Watched]:
    w = open_demo(browser, service, bypass_csp=True)
    try:
        yield w
    finally:
        w.page.context.close()


def test_renderer_escapes_html_and_drops_unsafe_links(nocsp_demo: Watched) -> None:
    page = nocsp_demo.page
    handle = page.evaluate_handle(
        "md => { const n = window.cdsDemo.renderMarkdown(md); document.getElementById('cards').append(n); return n; }",
        NASTY_MD,
    )
    page.wait_for_timeout(300)  # give any onerror / onload a chance to fire
    probe = page.evaluate(DOM_PROBE, handle)
    assert probe["bad"] == [] and probe["onAttrs"] == []
    assert probe["hrefs"] == ["https://example.org/x"]
    text = probe["text"]
    for literal in (
        PAYLOAD,
        "<script>alert(3)</script>",
        LINK_TRICK,
        "<svg onload=alert(7)>",
        "| piped",
        "<iframe src=javascript:alert(8)>",
        "<b>escaped</b>",
    ):
        assert literal in text, literal
    # structure survived: heading, bold, code, table with right-aligned column, list
    assert page.evaluate(
        "n => [n.querySelector('h4') !== null, n.querySelector('strong').textContent,"
        " n.querySelector('code').textContent, n.querySelectorAll('td').length,"
        " n.querySelector('td[data-align=right]') !== null, n.querySelectorAll('li').length]",
        handle,
    ) == [True, "bold", "code", 2, True, 2]
    assert nocsp_demo.dialogs == []


def test_fhir_text_through_the_service_shows_literally(nocsp_demo: Watched, service: Service) -> None:
    """A demo request whose FHIR text carries HTML and link tricks, posted through the page's JS path."""
    page = nocsp_demo.page
    p = demo_data.patient("active-fingolimod", datetime.now(UTC))
    req = demo_data.hook_request(p, "order-select")
    req = copy.deepcopy(req)
    evil = f"Plasma exchange {PAYLOAD} {LINK_TRICK}"
    order = req["context"]["draftOrders"]["entry"][0]["resource"]
    order["code"]["text"] = evil
    touched = 0
    for value in req["prefetch"].values():
        for entry in (value.get("entry") or []) if isinstance(value, dict) else []:
            res = entry.get("resource", {})
            cc = res.get("medicationCodeableConcept")
            if cc and "fingolimod" in json.dumps(cc).lower():
                cc["text"] = f"fingolimod {PAYLOAD} {LINK_TRICK}"
                touched += 1
    assert touched, "no fingolimod medication in the demo prefetch"
    page.evaluate("req => window.cdsDemo.fireHook('order-select', req)", req)
    page.wait_for_selector("#cards article.card")
    page.wait_for_timeout(300)
    probe = page.eval_on_selector("#cards", DOM_PROBE)
    assert probe["bad"] == [] and probe["onAttrs"] == []
    assert all(h and h.startswith(("http://", "https://")) for h in probe["hrefs"]), probe["hrefs"]
    assert PAYLOAD in probe["text"]
    assert LINK_TRICK in probe["text"]  # md_escape makes it text; the page shows it as such
    assert nocsp_demo.dialogs == [] and nocsp_demo.errors == []
