"""What every card shares once its content is known: severity order, the 1,000-character detail with a
link to the full page, links[], source.topic, suggestion order and uuids.

A card builder returns a `CardDraft`: its fields, the detail's parts (most important first) and the
full page's sections. `finish` turns drafts into cards, once the route knows the page URLs (the pages
are stored first, so that no card links to a page that could not be kept).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from cds.hooks.models import Card, Coding, Link, Source

EXTENSION_KEY = "pml-plex"
OVERRIDE_SYSTEM = "urn:pml-plex:override-reason"
OVERRIDE_REASONS: tuple[Coding, ...] = (
    Coding(
        code="clinical-judgement",
        system=OVERRIDE_SYSTEM,
        display="Clinical judgement: patient-specific reasons",
    ),
    Coding(code="already-addressed", system=OVERRIDE_SYSTEM, display="Already addressed elsewhere"),
    Coding(code="data-incorrect", system=OVERRIDE_SYSTEM, display="The data shown are incomplete or wrong"),
    Coding(code="not-relevant", system=OVERRIDE_SYSTEM, display="Not relevant for this patient"),
)

DETAIL_MAX_CHARS = 1000
MAX_SUGGESTIONS = 3

SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}
KIND_ORDER = {"plex-estimate": 0, "iris": 1, "dmt": 2}

# One stable topic per kind of card, so that an EHR can remember an override (CDS Hooks 2.0 source.topic)
TOPIC_SYSTEM = "urn:pml-plex:card-topic"
TOPICS: dict[str, Coding] = {
    "plex-estimate": Coding(
        system=TOPIC_SYSTEM, code="plex-estimate", display="Remaining PLEX sessions for natalizumab clearance"
    ),
    "iris": Coding(system=TOPIC_SYSTEM, code="iris", display="PML-IRIS risk and watch window"),
    "dmt": Coding(
        system=TOPIC_SYSTEM, code="dmt", display="Next disease-modifying therapy after natalizumab PML"
    ),
}
PAGE_LINK_LABEL = "Full details: assumptions, every note and source"

# [label](https://…) written by this package; a bracket escaped from FHIR text (\[) never starts one
_MD_LINK = re.compile(r"(?<!\\)\[([^\[\]\\]+)\]\((https?://[^\s()]+)\)")
_URL = re.compile(r"https?://[^\s()]+")


Indicator = Literal["info", "warning", "critical"]


class CardFields(TypedDict):
    """The fields of a Card its builder decides (layout adds the rest)."""

    summary: str
    indicator: Indicator
    source: Source
    overrideReasons: list[Coding]
    extension: dict[str, Any]  # {EXTENSION_KEY: the card's JSON extension}


@dataclass
class CardDraft:
    """A card before its detail is cut to size and its uuids are drawn."""

    kind: str  # "plex-estimate" | "iris" | "dmt"
    title: str  # the full page's title
    fields: CardFields
    short: list[str]  # the detail's parts, most important first (markdown)
    full: list[str]  # the full page's sections (markdown)
    suggestions: list[dict[str, Any]] = field(default_factory=list)  # without uuids
    links: list[Link] = field(default_factory=list)  # links besides the detail's markdown links

    @property
    def indicator(self) -> Indicator:
        return self.fields["indicator"]


def order_drafts(drafts: Iterable[CardDraft]) -> list[CardDraft]:
    """Most severe first (critical, warning, info); within a level always estimate, IRIS, DMT."""
    return sorted(drafts, key=lambda d: (SEVERITY_ORDER[d.indicator], KIND_ORDER.get(d.kind, 99)))


def fit_detail(parts: Sequence[str], page_url: str | None, limit: int = DETAIL_MAX_CHARS) -> str:
    """The parts, in order, that fit in `limit` characters with the link to the full page at the end.

    A part that does not fit is left for the page (every part is on it); later, shorter parts may still fit.
    """
    tail = f"[{PAGE_LINK_LABEL}]({page_url})" if page_url else ""
    budget = limit - (len(tail) + 2 if tail else 0)
    kept: list[str] = []
    used = 0
    for part in parts:
        if not part:
            continue
        cost = len(part) + (2 if kept else 0)
        if used + cost <= budget:
            kept.append(part)
            used += cost
    if not kept:  # never expected (the first part is a sentence); cut it rather than say nothing
        first = next((p for p in parts if p), "")
        kept = [first[: max(budget - 3, 0)].rsplit(" ", 1)[0] + "..."]
    if tail:
        kept.append(tail)
    return "\n\n".join(kept)


def markdown_links(text: str) -> list[Link]:
    """Every link this package wrote into `text`, as links[] entries (not every EHR renders markdown)."""
    out: dict[str, Link] = {}
    for label, url in _MD_LINK.findall(text):
        out.setdefault(url, Link(label=label, url=url, type="absolute"))
    return list(out.values())


def order_suggestions(suggestions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The recommended suggestion first, at most MAX_SUGGESTIONS; only one marked recommended."""
    ordered = sorted(suggestions, key=lambda s: not s.get("isRecommended"))
    seen = False
    for s in ordered:
        if s.get("isRecommended"):
            if seen:
                s.pop("isRecommended")
            seen = True
    return ordered[:MAX_SUGGESTIONS]


def finish(drafts: Iterable[CardDraft], page_urls: Mapping[str, str]) -> list[Card]:
    """Cards from drafts: ordered by severity, detail ≤ 1,000 characters, links[], topic, uuids."""
    cards = []
    for d in order_drafts(drafts):
        detail = fit_detail(d.short, page_urls.get(d.kind))
        links: dict[str, Link] = {}
        for link in (*d.links, *markdown_links(detail)):
            links.setdefault(link.url, link)
        suggestions = order_suggestions(d.suggestions)
        for suggestion in suggestions:
            suggestion["uuid"] = str(uuid.uuid4())
        source = d.fields["source"]
        cards.append(
            Card.model_validate(
                {
                    **d.fields,
                    "uuid": str(uuid.uuid4()),
                    "detail": detail,
                    "source": Source(label=source.label, url=source.url, topic=TOPICS.get(d.kind)),
                    "suggestions": suggestions or None,
                    "selectionBehavior": "any" if suggestions else None,
                    "links": list(links.values()) or None,
                }
            )
        )
    return cards


def page_markdown(draft: CardDraft) -> str:
    return "\n\n".join(s for s in draft.full if s)


# ---------------------------------------------------------------- what order-sign already showed


def card_digest(card: Card) -> str:
    """A digest of what a clinician reads on a card (kind, indicator, summary, detail, suggestion labels).

    URLs are left out: chart and page links carry a fresh random id on every call. A digest, not the
    text, is what the service remembers between order-select and order-sign.
    """
    ext = (card.extension or {}).get("pml-plex") or {}
    kind = str(ext.get("kind", ""))
    labels = "\x1f".join(s.label for s in card.suggestions or ())
    text = "\x1e".join((kind, card.indicator, card.summary, _URL.sub("", card.detail or ""), labels))
    return kind + ":" + hashlib.sha256(text.encode()).hexdigest()[:32]
