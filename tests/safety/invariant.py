"""The safety invariant of issue 15 (docs/safety.md), as checks on a CDS Hooks response's cards.

The service concludes "at or below target" (conclusion "at-or-below-target", 0 sessions, "no more
PLEX needed", "likely below target") only from a usable serum or plasma natalizumab result drawn after
the last known dose (contract: /work/briefs/contract15.md, "pml-plex extension of the estimate card").
"""

from __future__ import annotations

import re
from typing import Any

# the words of a conclusion that the drug is cleared: only ever with "at-or-below-target"
REASSURANCE = re.compile(r"no more plex needed|likely below|below the [^.;\n]{0,25}target", re.IGNORECASE)


def estimate_card(cards: list[dict[str, Any]]) -> dict[str, Any]:
    found = [c for c in cards if c["extension"]["pml-plex"]["kind"] == "plex-estimate"]
    assert len(found) == 1, (
        f"expected one estimate card, got {[c['extension']['pml-plex']['kind'] for c in cards]}"
    )
    return found[0]


def assert_not_reassuring(cards: list[dict[str, Any]], why: str = "") -> None:
    """No card concludes that natalizumab is at or below target, in its extension or in its text."""
    card = estimate_card(cards)
    ext = card["extension"]["pml-plex"]
    assert ext.get("conclusion") != "at-or-below-target", f"conclusion at-or-below-target: {why}"
    remaining = ext.get("remainingSessions")
    assert remaining is None or remaining["estimate"] != 0, f"0 sessions remaining ({remaining}): {why}"
    found = REASSURANCE.search(f"{card['summary']}\n{card.get('detail', '')}")
    assert found is None, (
        f"estimate card says {found.group(0)!r} in {found.string[max(0, found.start() - 80) : found.end() + 40]!r}: {why}"
    )
    for other in cards:  # nor may another card say the drug is cleared
        assert not re.search("no more plex needed", other["summary"], re.IGNORECASE), other["summary"]
