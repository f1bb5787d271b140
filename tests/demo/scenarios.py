"""The clinical situations the issue names: each must be an embedded demo patient (tests/demo checks the
demo set, tests/integration runs every demo patient end to end on real FHIR servers)."""

from __future__ import annotations

REQUIRED = (
    "high-level",
    "decayed-level",
    "post-session",
    "mid-course",
    "below-target",
    "antibodies",
    "no-level",
    "brainstem-pml",
    "active-fingolimod",
    "lymphopenia",
    "implausible-values",
    "non-plex-order",
    "no-natalizumab",
    "course-short",
)
