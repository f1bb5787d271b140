"""Engine results → CDS Hooks cards (pure: no I/O, `now` passed in).

Three cards for a PLEX order on a natalizumab-exposed patient: the remaining-PLEX estimate
(cards/estimate.py, its notes in cards/estimate_notes.py), the IRIS card (cards/iris.py) and the
next-DMT card (cards/dmt.py). Each builder returns a `CardDraft`; cards/layout.py orders them most
severe first, cuts each detail to 1,000 characters with a link to the card's full page, and adds
links[], source.topic and uuids. cards/markdown.py holds the text helpers they share, and
cards/suggestions.py the FHIR resources suggestions carry (each validated against R4B). The DMT
suggestions never name a drug of the avoid class or a fumarate.

The route builds one `CardInput` (the engine results, the order, and the few settings values the cards
need) and calls `drafts`, keeps the full pages, then `finish`; `render` does both without pages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cds.engine.domain import DmtAdvice, IrisAssessment, PlexEstimate
from cds.fhir.orders import PlexOrder
from cds.fhir_io import LoadResult
from cds.hooks.cards.dmt import dmt_draft, dmt_suggestible
from cds.hooks.cards.estimate import estimate_draft
from cds.hooks.cards.iris import iris_draft
from cds.hooks.cards.layout import CardDraft, card_digest, finish, page_markdown
from cds.hooks.cards.markdown import fmt_date, fmt_num, md_escape
from cds.hooks.cards.suggestions import course_update, level_coding, validate_emitted
from cds.hooks.models import Card

__all__ = [
    "CardDraft",
    "CardInput",
    "card_digest",
    "course_update",
    "dmt_suggestible",
    "drafts",
    "finish",
    "fmt_date",
    "fmt_num",
    "level_coding",
    "md_escape",
    "page_markdown",
    "render",
    "validate_emitted",
]


@dataclass(frozen=True, slots=True)
class CardInput:
    """Everything the three cards are made from, built by the route.

    `level_coding`: the (system, code) a drafted natalizumab level carries (`level_coding(settings.
    natalizumab_level_codes)`); `chart_url`: the estimate card's chart link, when the link store kept one;
    `records`: raw resources by reference ("MedicationRequest/1"), for suggestions that act on the record.
    """

    estimate: PlexEstimate
    iris: IrisAssessment
    dmt: DmtAdvice
    load: LoadResult
    order: PlexOrder
    now: datetime
    patient_id: str
    level_coding: tuple[str, str] | None = None
    chart_url: str | None = None
    records: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def drafts(given: CardInput) -> list[CardDraft]:
    """The three cards before their detail is cut to size."""
    return [
        estimate_draft(
            given.estimate,
            given.load,
            given.order,
            given.now,
            given.patient_id,
            given.level_coding,
            given.chart_url,
        ),
        iris_draft(given.iris, given.load),
        dmt_draft(given.dmt, given.load, given.patient_id, given.now, given.records),
    ]


def render(given: CardInput, page_urls: Mapping[str, str] | None = None) -> list[Card]:
    """The three cards, most severe first; `page_urls`: the full page of each kind of card, if kept."""
    return finish(drafts(given), page_urls or {})
