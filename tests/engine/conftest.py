"""Shared builders for engine tests: a fixed `now` and small constructors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cds.engine.domain import NatalizumabDose, NatalizumabLevel, PlexSession

NOW = datetime(2024, 5, 10, 8, 0, tzinfo=UTC)


def days(n: float) -> timedelta:
    return timedelta(days=n)


def level(value: float, days_ago: float = 0.0, comparator: str | None = None) -> NatalizumabLevel:
    return NatalizumabLevel(value_ug_per_ml=value, drawn_at=NOW - days(days_ago), comparator=comparator)  # type: ignore[arg-type]


def session(days_ago: float, pv: float | None = 1.5) -> PlexSession:
    return PlexSession(performed_at=NOW - days(days_ago), plasma_volumes=pv)


def dose(days_ago: float, mg: float | None = 300.0) -> NatalizumabDose:
    return NatalizumabDose(given_at=NOW - days(days_ago), dose_mg=mg, interval_days=28.0)
