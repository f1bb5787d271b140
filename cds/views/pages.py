"""A card's full page: everything its 1,000-character detail leaves out (assumptions, every note, every
source, the levels table), at `{public_base_url}/cards/{id}`.

The id is random and opaque (no patient id, no value in the URL); the page lives in the link store
(cds.views.link_store: in-process, or Redis when CDS_REDIS_URL is set) with the charts' TTL. Like the chart,
the route is outside JWT: possession of the unguessable id is the access. The markdown is the cards' own
(FHIR text in it was escaped by cds.hooks.cards.md_escape), rendered here by a small renderer of just
the subset the cards write: paragraphs, "- " lists, pipe tables, **bold**, _italic_, [label](https://…).
Anything else is shown as text.
"""

from __future__ import annotations

import html
import re

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from cds.views.link_store import CardPage, link_store

__all__ = ["CardPage", "page_href", "render_html", "router"]


def page_href(base_url: str, cid: str) -> str:
    return f"{base_url.rstrip('/')}/cards/{cid}"


# ---------------------------------------------------------------- markdown subset -> HTML

_ENTITY = re.compile(r"&(?:amp|lt|gt|quot|#\d{1,6});")
_INLINE = re.compile(
    r"\\(?P<esc>[!-/:-@\[-`{-~])"
    r"|(?P<ent>&(?:amp|lt|gt|quot|#\d{1,6});)"
    r"|\*\*(?P<bold>.+?)\*\*"
    r"|(?<![\w\\])_(?P<em>[^_]+?)_(?!\w)"
    r"|\[(?P<label>(?:\\.|[^\[\]\\])+)\]\((?P<url>https?://[^\s()<>\"']+)\)"
)


def _inline(text: str) -> str:
    out: list[str] = []
    pos = 0
    for m in _INLINE.finditer(text):
        out.append(html.escape(text[pos : m.start()]))
        if m["esc"] is not None:
            out.append(html.escape(m["esc"]))
        elif m["ent"] is not None:
            out.append(m["ent"])
        elif m["bold"] is not None:
            out.append(f"<strong>{_inline(m['bold'])}</strong>")
        elif m["em"] is not None:
            out.append(f"<em>{_inline(m['em'])}</em>")
        else:
            url = html.escape(m["url"], quote=True)
            out.append(f'<a href="{url}" rel="noopener noreferrer">{_inline(m["label"])}</a>')
        pos = m.end()
    out.append(html.escape(text[pos:]))
    return "".join(out)


_CELL_SPLIT = re.compile(r"(?<!\\)\|")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in _CELL_SPLIT.split(line.strip().strip("|"))]


def _block(block: str) -> str:
    lines = block.split("\n")
    if all(line.startswith("- ") for line in lines):
        return "<ul>" + "".join(f"<li>{_inline(line[2:])}</li>" for line in lines) + "</ul>"
    if len(lines) >= 2 and lines[0].startswith("|") and set(lines[1]) <= set("|-: "):
        head = "".join(f"<th>{_inline(c)}</th>" for c in _cells(lines[0]))
        rows = "".join(
            "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in _cells(line)) + "</tr>" for line in lines[2:]
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
    return "<p>" + "<br>".join(_inline(line) for line in lines) + "</p>"


def render_html(page: CardPage) -> str:
    body = "\n".join(_block(b) for b in page.markdown.split("\n\n") if b.strip())
    title = html.escape(page.title)
    made = html.escape(page.made_at[:16].replace("T", " "))
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{title}</title><style>{_CSS}</style></head><body>"
        f"<h1>{title}</h1><p class='made'>Card made {made} UTC (PML-PLEX decision support)</p>"
        f"{body}</body></html>"
    )


_CSS = (
    "body{font:15px/1.45 system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#1b1f24}"
    "h1{font-size:1.3rem}.made{color:#57606a}table{border-collapse:collapse}"
    "td,th{border:1px solid #d0d7de;padding:.2rem .5rem;text-align:left}"
)

# ---------------------------------------------------------------- route

router = APIRouter(tags=["charts"])

_HEADERS = {
    "Cache-Control": "private, max-age=300",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "Referrer-Policy": "no-referrer",
}
_GONE = "page not found or expired"


@router.get(
    "/cards/{cid}",
    response_class=HTMLResponse,
    summary="A card's full page (assumptions, notes, every source)",
    responses={404: {"description": _GONE}},
)
async def card_page(cid: str, request: Request) -> Response:
    page = await link_store(request).page(cid)
    if page is None:
        raise HTTPException(status_code=404, detail=_GONE)
    return HTMLResponse(render_html(page), headers=_HEADERS)
