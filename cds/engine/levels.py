"""The natalizumab levels and sessions the estimate reads: which levels are usable, which is the latest,
whether it was drawn too soon after a session, and whether anti-drug antibodies persist.

Every level left out is named as an UnusableValue with a code and a reason (never silently dropped).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from cds.engine.domain import AntibodyResult, NatalizumabLevel, Note, PlexSession, UnusableValue
from cds.engine.pk import (
    MAX_PLAUSIBLE_UG_PER_ML,
    MIN_PLAUSIBLE_NG_PER_ML,
    PERSISTENT_ANTIBODY_DAYS,
    POST_SESSION_WINDOW_HOURS,
    days_between,
)
from cds.engine.units import to_ug_per_ml

__all__ = [
    "latest_of",
    "persistent_antibodies",
    "post_session_of",
    "same_day_session",
    "screen_levels",
    "session_end",
]


def _screened(lv: NatalizumabLevel, code: str, reason: str) -> UnusableValue:
    shown = lv.reported_value if lv.reported_value is not None else lv.value_ug_per_ml
    return UnusableValue(
        kind="natalizumab level",
        reason=reason,
        reported=f"{lv.comparator or ''}{shown:g} {lv.reported_unit}",
        at=lv.drawn_at,
        source=lv.source,
        code=code,
    )


def _in_ng_per_ml(unit: str) -> bool:
    """A unit of the ng/mL scale (ng/mL, µg/L), by the engine's one unit table."""
    return to_ug_per_ml(1.0, unit) == 0.001


def screen_levels(
    levels: tuple[NatalizumabLevel, ...], now: datetime
) -> tuple[list[NatalizumabLevel], list[UnusableValue]]:
    """Usable levels (oldest first) and the rest, each named with a code and a reason."""
    usable: list[NatalizumabLevel] = []
    unusable: list[UnusableValue] = []
    for lv in levels:
        v = lv.value_ug_per_ml
        if not math.isfinite(v):
            unusable.append(_screened(lv, "nan", "value is not a number"))
        elif v < 0:
            unusable.append(_screened(lv, "negative", "negative concentration"))
        elif v == 0 and lv.comparator is None:
            unusable.append(
                _screened(lv, "zero", "zero without a '<' comparator (no assay gives a true zero)")
            )
        elif v > MAX_PLAUSIBLE_UG_PER_ML and lv.comparator not in ("<", "<="):
            unusable.append(
                _screened(
                    lv,
                    "implausible-high",
                    f"above {MAX_PLAUSIBLE_UG_PER_ML:g} µg/mL (label peak 110 ± 52 + 3 SD): implausible, "
                    "check the unit with the lab",
                )
            )
        elif (
            lv.comparator is None
            and not lv.qualitative
            and lv.reported_value is not None
            and _in_ng_per_ml(lv.reported_unit)
            and lv.reported_value < MIN_PLAUSIBLE_NG_PER_ML
        ):
            unusable.append(
                _screened(
                    lv,
                    "implausible-low-for-unit",
                    f"under {MIN_PLAUSIBLE_NG_PER_ML:g} ng/mL: reads like a µg/mL value with the wrong unit; "
                    "confirm the unit with the lab",
                )
            )
        elif lv.drawn_at > now:
            unusable.append(_screened(lv, "future", "drawn after the time of this request"))
        else:
            usable.append(lv)
    usable.sort(key=lambda lv: lv.drawn_at)
    return usable, unusable


_POST_SESSION_WINDOW = timedelta(hours=POST_SESSION_WINDOW_HOURS)


def session_end(s: PlexSession) -> datetime:
    return s.ended_at if s.ended_at is not None and s.ended_at >= s.performed_at else s.performed_at


def post_session_of(level: NatalizumabLevel, sessions: tuple[PlexSession, ...]) -> PlexSession | None:
    """The session a level was drawn within 24 h after (counted from the session's end)."""
    drawn_at = level.drawn_at
    for s in sessions:
        if s.performed_at < drawn_at < session_end(s) + _POST_SESSION_WINDOW:
            return s
    return None


def same_day_session(level: NatalizumabLevel, sessions: tuple[PlexSession, ...]) -> PlexSession | None:
    """A session on the same calendar day as the level, when either time is known to the day only."""
    day = level.drawn_at.date()
    for s in sessions:
        if s.performed_at.date() == day and (level.date_only or s.date_only):
            return s
    return None


def persistent_antibodies(results: tuple[AntibodyResult, ...], now: datetime) -> tuple[bool, bool]:
    """(persistent, single positive). Persistent: two positives ≥ 6 weeks apart, none negative since
    the earlier of the two, and the latest result positive (label definition of persistence)."""
    ordered = sorted((a for a in results if a.tested_at <= now), key=lambda a: a.tested_at)
    if not ordered or not ordered[-1].positive:
        return False, False
    run: list[AntibodyResult] = []
    for a in reversed(ordered):  # trailing run of positives
        if not a.positive:
            break
        run.append(a)
    persistent = days_between(run[-1].tested_at, run[0].tested_at) >= PERSISTENT_ANTIBODY_DAYS
    return persistent, not persistent


def latest_of(levels: list[NatalizumabLevel], flags: list[str], notes: list[Note]) -> NatalizumabLevel | None:
    """The latest level; among results at the same time, the highest (never the first in input order)."""
    if not levels:
        return None
    newest = levels[-1].drawn_at
    same_time = [lv for lv in levels if lv.drawn_at == newest]
    highest = max(same_time, key=lambda lv: (lv.comparator is None, lv.value_ug_per_ml))
    if len({(lv.comparator, round(lv.value_ug_per_ml, 6)) for lv in same_time}) > 1:
        flags.append("discordant-same-time")
        notes.append(Note("discordant-same-time", {"count": len(same_time)}))
    return highest
