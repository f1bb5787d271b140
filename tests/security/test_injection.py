"""Markdown and HTML injection through FHIR text: an Observation's code.text and value string, a
Condition's note and code.text, a MedicationStatement's text and the order's own text go through a real
hook call (the service under uvicorn, CDS_AUTH=off, demo prefetch). The card text must carry the
injected text escaped — no raw HTML, no live link or image, no table made from `|` — and a CommonMark +
GFM-table renderer that lets HTML through (the worst EHR renderer) must show it literally."""

from __future__ import annotations

import copy
import html
import re
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
import pytest
from markdown_it import MarkdownIt

from cds import demo
from cds.settings import Settings
from tests.support.servers import serve_service

# One line (md_escape folds whitespace): HTML, a javascript: link, a remote image, a GFM table row,
# emphasis, code, a heading marker, an autolink and an entity.
PAYLOAD = (
    "<script>alert(1)</script> <img src=x onerror=alert(2)> [click](javascript:alert(3)) "
    "![px](http://evil.invalid/p.png) | a | b | **bold** `code` # H <https://evil.invalid> &amp; x"
)
# an active conflicting MedicationStatement: its text is listed in the DMT card
SCENARIO = "active-fingolimod"
NTZ_LEVEL = "NTZ-LVL"
ANTIBODY = "58012-6"
PML = "22255007"
# the service's own full-page links (the test service runs with the default public base URL)
OWN_PAGES = Settings(_env_file=None, auth="off").public_base_url.rstrip("/") + "/cards/"


def _codes(resource: dict[str, Any], element: str = "code") -> set[str]:
    return {c.get("code") for c in (resource.get(element) or {}).get("coding", [])}


def _inject(p: demo.DemoPatient) -> tuple[demo.DemoPatient, list[str]]:
    """Injected copies of the patient's resources; returns the patient and the places injected."""
    resources = copy.deepcopy(p.resources)
    places: list[str] = []
    extra: list[dict[str, Any]] = []
    for r in resources:
        kind = r["resourceType"]
        if kind == "Observation" and NTZ_LEVEL in _codes(r):
            r["code"]["text"] = PAYLOAD
            r["note"] = [{"text": PAYLOAD}]
            # the unit as reported (the UCUM code stays ug/mL, so the level is used): a table cell
            r["valueQuantity"]["unit"] = PAYLOAD
            # a second level whose unit is the payload: unusable, and the card names what it was
            bad = copy.deepcopy(r)
            bad["id"] = r["id"] + "-inj"
            bad.pop("valueQuantity", None)
            bad["valueString"] = "12 " + PAYLOAD
            extra.append(bad)
            places += [
                "Observation.code.text",
                "Observation.valueQuantity.unit",
                "Observation.valueString (level)",
            ]
        elif kind == "Observation" and ANTIBODY in _codes(r):
            r.pop("valueCodeableConcept", None)
            r.pop("interpretation", None)
            r["valueString"] = PAYLOAD  # neither positive nor negative: listed as unusable
            places.append("Observation.valueString (antibodies)")
        elif kind == "Condition" and PML in _codes(r):
            r["note"] = [{"text": PAYLOAD + " brainstem"}]
            r["code"]["text"] = PAYLOAD
            places += ["Condition.note", "Condition.code.text"]
        elif (
            kind == "MedicationStatement"
            and "fingolimod" in r["medicationCodeableConcept"].get("text", "").lower()
        ):
            r["medicationCodeableConcept"]["text"] = "Gilenya " + PAYLOAD
            r["dosage"][0]["text"] = PAYLOAD
            places.append("MedicationStatement.medicationCodeableConcept.text")
    order = copy.deepcopy(p.draft_order)
    order["code"]["text"] = "Plasma exchange " + PAYLOAD
    order["note"] = [{"text": PAYLOAD}]
    places.append("ServiceRequest.code.text")
    assert len(places) == 8, places
    return replace(p, resources=resources + extra, draft_order=order), places


def _renderer() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": True, "linkify": False}).enable("table")


def _text(rendered: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", rendered)).split())


def _tokens(md: MarkdownIt, text: str) -> Iterator[Any]:
    for tok in md.parse(text):
        yield tok
        yield from tok.children or ()


Hook = Literal["order-select", "order-sign"]


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with serve_service(
        Settings(_env_file=None, auth="off", demo=True, redis_url=None, database_url=None)
    ) as url:
        yield url


def _cards(base: str, p: demo.DemoPatient, hook: Hook) -> list[dict[str, Any]]:
    service = "pml-plex-select" if hook == "order-select" else "pml-plex-sign"
    body = demo.hook_request(p, hook)
    # a clinician per call: an order-sign after an order-select of the same order by the same clinician
    # would leave out the unchanged info cards (issue 17), and every card is inspected here
    body["context"]["userId"] = f"Practitioner/{uuid.uuid4()}"
    r = httpx.post(f"{base}/cds-services/{service}", json=body, timeout=15)
    assert r.status_code == 200, r.text[:1000]
    cards: list[dict[str, Any]] = r.json()["cards"]
    assert cards, "the injected request produced no card"
    return cards


def _page(base: str, card: dict[str, Any]) -> str:
    """The card's full page (everything the 1,000-character detail leaves out), as served."""
    url = next(link["url"] for link in card["links"] if "/cards/" in link["url"])
    r = httpx.get(f"{base}/cards/{url.rsplit('/', 1)[1]}", timeout=15)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), r.text[:300]
    return r.text


def _shape(tokens: list[Any]) -> list[str]:
    return [
        t.type
        for t in tokens
        if t.type.startswith(("table", "thead", "tbody", "tr_", "th_", "td_", "heading"))
    ]


def _card_texts(card: dict[str, Any]) -> list[str]:
    """Everything an EHR shows as text: summary, detail, source label, suggestion and link labels."""
    texts = [card.get("summary", ""), card.get("detail", ""), card.get("source", {}).get("label", "")]
    texts += [s.get("label", "") for s in card.get("suggestions", [])]
    texts += [link.get("label", "") for link in card.get("links", [])]
    texts += [o.get("display", "") for o in card.get("overrideReasons", [])]
    return texts


@pytest.mark.parametrize("hook", ["order-select", "order-sign"])
def test_fhir_text_enters_cards_escaped_and_renders_literally(base: str, hook: Hook) -> None:
    now = datetime.now(UTC)
    clean = demo.patient(SCENARIO, now)
    injected, places = _inject(clean)
    md = _renderer()

    def kind(c: dict[str, Any]) -> str:
        return str(c["extension"]["pml-plex"]["kind"])

    baseline = sorted(_cards(base, clean, hook), key=kind)
    cards = sorted(_cards(base, injected, hook), key=kind)
    assert [kind(c) for c in cards] == [kind(c) for c in baseline], (
        "injected text changed which cards are shown"
    )

    literal_hits = 0
    for card, before in zip(cards, baseline, strict=True):
        # the full page: served HTML, the payload inert there too, no table made from `|`
        page, page_before = _page(base, card), _page(base, before)
        body = page.split("<body>", 1)[1]
        for marker in ("<script", "<img", 'href="javascript', 'src="http://evil', 'evil.invalid"'):
            assert marker not in body, f"{marker!r} on the {kind(card)} card's page: {body[:2000]}"
        assert re.findall(r"<a href=\"([^\"]+)\"", body) == [
            u
            for u in re.findall(r"<a href=\"([^\"]+)\"", body)
            if u.startswith("https://") and "evil" not in u
        ], "live link from FHIR text on the page"
        # `|` makes no table and `#` no heading: never more than the clean card's page has (fewer when
        # the injected unit makes the level unusable and the levels table goes)
        assert body.count("<table>") <= page_before.split("<body>", 1)[1].count("<table>")
        assert body.count("<h") <= page_before.split("<body>", 1)[1].count("<h")
        literal_hits += _text(body).count(PAYLOAD)
        for text in _card_texts(card):
            for marker in ("<script", "<img", "<a ", "</"):
                bad = [line for line in text.splitlines() if marker in line]
                assert not bad, (
                    f"FHIR text reached the {card['extension']['pml-plex']['kind']} card unescaped: {bad}"
                )
        assert "\n" not in card["summary"] and "|" not in card["summary"].replace("\\|", "")

        detail = card.get("detail", "")
        rendered = md.render(detail)
        tokens = list(_tokens(md, detail))
        # no HTML from FHIR text survives as HTML; no link or image made from it
        html_tokens = [t.content for t in tokens if t.type in ("html_inline", "html_block")]
        assert not html_tokens, f"HTML passed through to the renderer: {html_tokens}"
        for t in tokens:
            if t.type in ("link_open", "image"):
                href = str(t.attrGet("href") or t.attrGet("src") or "")
                # a source (https) or the card's own full page on this service (public base URL)
                assert href.startswith(("https://", OWN_PAGES)) and "evil" not in href, (
                    f"live link/image from FHIR text: {href}"
                )
        for marker in ("<script", "<img", 'href="javascript', 'src="http://evil'):
            assert marker not in rendered, f"{marker!r} in the rendered card: {rendered[:2000]}"
        # `|` makes no table, row or cell and `#` no heading: tables and headings are those of the
        # clean card (the unusable level legitimately adds a list item, so lists may differ)
        assert _shape(tokens) == _shape(list(_tokens(md, before.get("detail", "")))), (
            f"injected text changed the table/heading structure of the card:\n{detail}"
        )
        literal_hits += _text(rendered).count(PAYLOAD)

    # the injected text is shown literally wherever the card or its full page names it: the order text,
    # the reported unit in the levels table, the unusable level (value and unit) and the conflicting
    # medication
    assert literal_hits >= 5, f"payload rendered literally only {literal_hits}x:\n" + "\n---\n".join(
        c.get("detail", "") for c in cards
    )
    print(
        f"{hook}: injected at {', '.join(places)}; payload rendered literally {literal_hits}x in {len(cards)} cards"
    )


def test_condition_note_is_not_copied_into_cards(base: str) -> None:
    """The PML note feeds the IRIS risk (site terms), but its text never reaches a card: reasons are
    engine-written."""
    now = datetime.now(UTC)
    injected, _ = _inject(demo.patient(SCENARIO, now))
    cards = _cards(base, injected, "order-sign")
    iris = next(c for c in cards if c["extension"]["pml-plex"]["kind"] == "iris")
    assert iris["extension"]["pml-plex"]["risk"] == "high", "the note's 'brainstem' was not read"
    detail = iris.get("detail", "")
    assert "alert(1)" not in detail and "evil.invalid" not in detail, detail
    assert "alert(" not in str(iris["extension"]), iris["extension"]
