"""THE safety invariant of the service (docs/safety.md, hazard H1), in one place.

The estimate concludes "at or below target" (0 sessions, "no more PLEX needed") only when
`below_target_confirmed` says so; `remaining.estimate_remaining` turns every other count of 0 into
"measure-first", and `PlexEstimate` refuses a 0 without this conclusion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from cds.engine.domain import NatalizumabLevel
from cds.engine.drugs import LastDose

__all__ = ["BelowTargetEvidence", "below_target_confirmed"]


@dataclass(frozen=True, slots=True)
class BelowTargetEvidence:
    """What `below_target_confirmed` needs to know about the latest level and its surroundings."""

    level: NatalizumabLevel | None
    target_ug_per_ml: float
    dose: LastDose
    now: datetime
    post_session: bool = False
    ambiguous_day: bool = False
    same_time_above_target: bool = False
    newer_unusable: bool = False


def below_target_confirmed(e: BelowTargetEvidence) -> bool:
    """THE one place that may conclude "at or below target" (docs/safety.md, invariant of H1).

    True only for a usable serum or plasma natalizumab result (fhir_io admits no other specimen and
    no unit whose text and code disagree; _screen_levels removes implausible values) drawn after the
    last known dose, either quantitative with value ≤ target, or "<X" (a censored or qualitative
    result below the assay's limit X) with X ≤ target; and never when the last dose is unknown, the
    sample is a post-session or same-day-ambiguous one, a same-time result is above target, or a
    newer natalizumab result could not be used.
    """
    lv = e.level
    if lv is None or lv.specimen not in ("serum", "plasma", "unspecified"):
        return False
    if lv.drawn_at > e.now or not e.dose.known:
        return False
    if e.dose.at is not None and lv.drawn_at <= e.dose.at:
        return False
    if e.post_session or e.ambiguous_day or e.same_time_above_target or e.newer_unusable:
        return False
    if lv.comparator in (">", ">="):
        return False
    return math.isfinite(lv.value_ug_per_ml) and 0 < lv.value_ug_per_ml <= e.target_ug_per_ml
