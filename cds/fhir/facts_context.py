"""What the facts handlers share while they read one set of resources: the settings they need
(ParseContext) and the lists they fill (Collected), which parse_resources turns into PatientFacts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from cds.engine.domain import (
    AntibodyResult,
    ConditionFact,
    LymphocyteCount,
    MedicationUse,
    NatalizumabDose,
    NatalizumabLevel,
    PlexSession,
    UnusableValue,
)
from cds.fhir import shapes, terms
from cds.settings import Settings

__all__ = ["MAX_OBSERVATION_AGE", "Collected", "ParseContext", "StatusRecord"]

MAX_OBSERVATION_AGE = timedelta(days=730)

StatusRecord = tuple[datetime, bool, str]  # (when, answer, source) of a pregnancy / breastfeeding record


@dataclass
class Collected:
    """The facts the handlers found so far, in reading order (parse_resources sorts them)."""

    levels: list[NatalizumabLevel] = field(default_factory=list)
    sessions: list[PlexSession] = field(default_factory=list)
    doses: list[NatalizumabDose] = field(default_factory=list)
    antibodies: list[AntibodyResult] = field(default_factory=list)
    medications: list[MedicationUse] = field(default_factory=list)
    lymphocytes: list[LymphocyteCount] = field(default_factory=list)
    conditions: list[ConditionFact] = field(default_factory=list)
    unusable: list[UnusableValue] = field(default_factory=list)
    birth_date: date | None = None
    pregnancy: list[StatusRecord] = field(default_factory=list)
    pregnancy_conditions: list[str] = field(default_factory=list)
    breastfeeding: list[StatusRecord] = field(default_factory=list)
    weights: list[tuple[datetime, float, str]] = field(default_factory=list)


class ParseContext:
    """The settings the handlers need, the date window, the Medications read alongside, and `acc`."""

    def __init__(self, settings: Settings, now: datetime, medications: dict[str, shapes.Medication]) -> None:
        self.level_codes = terms.parse_code_list(settings.natalizumab_level_codes)
        self.plex_codes = terms.parse_code_list(settings.plex_codes)
        limit = settings.natalizumab_assay_limit_ug_per_ml
        self.assay_limit: float | None = float(limit) if limit else None
        self.now = now
        self.oldest = now - MAX_OBSERVATION_AGE
        self.latest_dose = now + timedelta(days=1)
        self.medications = medications
        self.acc = Collected()
