"""order-sign after order-select: show only what changed, plus every warning and critical card.

hookInstance differs on every call, so the memory is keyed by what makes two calls "the same order":
issuer and tenant, patient, draft order and clinician (context.userId), as one SHA-256 digest. The value
is the digests of the cards order-select showed (cds.hooks.cards.card_digest: no card text). It lives as
long as the FHIR read cache (`cache_ttl_s`, and never longer than the token's `expires_in`), in the
link store (cds.views.link_store): in-process, or Redis when CDS_REDIS_URL is set, so every replica
sees it. Without a
memory (none kept, expired, or the store down) order-sign shows every card.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cds.hooks.cards import card_digest
from cds.hooks.models import Card

if TYPE_CHECKING:  # a hook call does not import the view layer; the lifespan hands it the store
    from cds.views.link_store import LinkStore

log = logging.getLogger("cds.hooks.repeats")

ALWAYS_SHOWN = frozenset({"warning", "critical"})


def memory_key(
    *, issuer: str | None, tenant: str | None, patient_id: str, order: str, user_id: str | None
) -> str:
    parts = (issuer or "", tenant or "", patient_id, order, user_id or "")
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def lifetime_s(cache_ttl_s: float, expires_in: int | None) -> float:
    """The FHIR read cache's lifetime for this call: cache_ttl_s, capped by the token's expires_in."""
    return float(min(cache_ttl_s, expires_in)) if expires_in is not None else float(cache_ttl_s)


async def remember(store: LinkStore, key: str, cards: Sequence[Card], ttl_s: float) -> None:
    if ttl_s <= 0 or not cards:
        return
    try:
        await store.remember(key, " ".join(card_digest(c) for c in cards), ttl_s)
    except Exception:  # the memory must never fail a hook call
        log.exception("could not remember the cards shown")


async def unchanged_info(store: LinkStore, key: str, cards: Sequence[Card]) -> list[Card]:
    """The cards order-select already showed with the same content, that may be left out: info only."""
    try:
        shown = await store.recall(key)
    except Exception:
        log.exception("could not recall the cards shown")
        return []
    if not shown:
        return []
    seen = set(shown.split())
    return [c for c in cards if c.indicator not in ALWAYS_SHOWN and card_digest(c) in seen]
