"""Fixtures for the view tests: engine results built by hand (the chart is a pure function of them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cds.engine.domain import (
    NatalizumabLevel,
    PlexEstimate,
    PlexSession,
    ProjectedPoint,
    SessionRange,
)

NOW = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)


def make_estimate(
    *,
    levels: tuple[NatalizumabLevel, ...] | None = None,
    n_proj: int = 5,
    start: float = 12.0,
    done: int = 2,
    basis: str = "measured",
) -> PlexEstimate:
    if levels is None:
        levels = (
            NatalizumabLevel(25.0, NOW - timedelta(days=6), source="Observation/abc"),
            NatalizumabLevel(14.0, NOW - timedelta(days=1)),
        )
    proj = []
    level = start
    for n in range(1, n_proj + 1):
        level *= 0.55
        proj.append(ProjectedPoint(n, NOW + timedelta(days=2 * n), level, level * 0.7, level * 1.4))
    return PlexEstimate(
        basis=basis,  # type: ignore[arg-type]
        target_ug_per_ml=1.0,
        sessions_completed=done,
        remaining=(
            None
            if basis == "none"
            else SessionRange(0, 0, 0)
            if n_proj == 0
            else SessionRange(n_proj, n_proj, n_proj + 2)
        ),
        starting_level=levels[-1] if levels else None,
        adjusted_level_ug_per_ml=start if basis != "none" else None,
        removal_fraction=0.55,
        removal_fraction_population=0.55,
        removal_fraction_fitted=None,
        half_life_days=16.0,
        projection=tuple(proj),
        target_expected_at=proj[-1].at if proj else None,
        levels_used=levels,
        conclusion="measure-first"
        if basis == "none"
        else "at-or-below-target"
        if n_proj == 0
        else "sessions-needed",
    )


@pytest.fixture
def now() -> datetime:
    return NOW


@pytest.fixture
def estimate() -> PlexEstimate:
    return make_estimate()


@pytest.fixture
def sessions() -> tuple[PlexSession, ...]:
    return (PlexSession(NOW - timedelta(days=4)), PlexSession(NOW - timedelta(days=2)))
