"""A card's full page: the small markdown renderer shows escaped FHIR text literally and only the
cards' own constructs (bold, italic, lists, tables, http(s) links) as HTML."""

from __future__ import annotations

import html
import re

from cds.hooks.cards import md_escape
from cds.views.pages import CardPage, render_html

PAYLOAD = (
    "<script>alert(1)</script> <img src=x onerror=alert(2)> [click](javascript:alert(3)) "
    "![px](http://evil.invalid/p.png) | a | b | **bold** `code` # H <https://evil.invalid> &amp; x"
)


def page(markdown: str) -> str:
    return render_html(CardPage(title="T <b>", markdown=markdown, made_at="2026-12-07T04:00:00+00:00"))


def test_escaped_fhir_text_shows_literally_and_makes_no_html() -> None:
    out = page(f"**Ordered course:** {md_escape(PAYLOAD)}, 2 sessions.\n\n- {md_escape(PAYLOAD)}")
    body = out.split("<body>", 1)[1]
    assert "<script" not in body and "<img" not in body
    assert not any("javascript" in h for h in re.findall(r'href="([^"]*)"', body))
    assert "<a " not in body  # no link from FHIR text
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())
    assert text.count(PAYLOAD) == 2
    assert "<title>T &lt;b&gt;</title>" in out


def test_the_cards_own_markdown_renders() -> None:
    md = (
        "**Plan:** About 5 more sessions (range 5-7); _see below_.\n\n"
        "**Levels used**\n\n| Value | Unit |\n|---|---|\n| 28 | µg/mL |\n\n"
        "**Sources**\n\n- [Khatri 2009](https://pubmed.ncbi.nlm.nih.gov/19188571/)"
    )
    body = page(md).split("<body>", 1)[1]
    assert "<strong>Plan:</strong> About 5 more sessions (range 5-7); <em>see below</em>." in body
    assert (
        "<table><thead><tr><th>Value</th><th>Unit</th></tr></thead><tbody><tr><td>28</td><td>µg/mL</td></tr>"
        in body
    )
    assert (
        '<a href="https://pubmed.ncbi.nlm.nih.gov/19188571/" rel="noopener noreferrer">Khatri 2009</a>'
        in body
    )


def test_page_round_trips_through_json() -> None:
    p = CardPage(title="t", markdown="m | x", made_at="2026-12-07T04:00:00+00:00")
    assert CardPage.loads(p.dumps()) == p


async def test_a_full_store_gives_no_page_rather_than_dropping_a_live_one() -> None:
    from cds.views.link_store import MemoryLinkStore

    store = MemoryLinkStore(ttl_s=60, max_entries=1)  # room for one chart and its three cards' pages
    p = CardPage(title="t", markdown="m", made_at="2026-12-07T04:00:00+00:00")
    kept = [await store.put_page(p) for _ in range(3)]
    assert all(kept) and await store.put_page(p) is None
    assert all([await store.page(cid) == p for cid in kept if cid])
