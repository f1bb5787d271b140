"""Domain objects the engine reasons over: plain values, units in the names, no FHIR.

`cds/fhir/` builds the inputs (PatientFacts in facts.py, PlexPlan in orders.py); the engine modules return the
results (PlexEstimate, IrisAssessment, DmtAdvice); `cds/hooks/cards/` renders them.
All datetimes are timezone-aware (UTC). What a card must word differently per case comes as a `Note`
(a stable code and its values; the cards write the words). Other text here is either engine-written
plain text or text copied from a FHIR resource (fields named `text`, `reported`, `descriptions`): the
card renderer escapes the latter before it reaches markdown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal, Mapping  # noqa: UP035 (the engine imports only what test_purity.py allows)

Comparator = Literal["<", "<=", ">", ">="]
Specimen = Literal["serum", "plasma", "unspecified"]  # what fhir_io lets through as a level; never CSF etc.
Coding = tuple[str, str]  # (system, code), e.g. ("http://snomed.info/sct", "22255007")


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class NatalizumabLevel:
    """One serum or plasma natalizumab result, already converted to µg/mL (= mg/L = 1000 ng/mL).

    fhir_io lets a result through only when its specimen is serum, plasma or not stated (a drug
    level's default matrix), and, when quantitative, when its unit text and UCUM code agree on a
    mass concentration. A qualitative "not detected" with a known assay limit arrives as
    comparator "<" and the limit as the value, with `qualitative` set.
    """

    value_ug_per_ml: float
    drawn_at: datetime
    comparator: Comparator | None = None
    reported_value: float | None = None  # as the lab sent it, for the card
    reported_unit: str = "ug/mL"
    source: str = ""  # "Observation/123"
    specimen: Specimen = "unspecified"
    date_only: bool = False  # the sample time is known to the day only (before/after a dose is unknown)
    qualitative: str = ""  # the lab's own words for a qualitative result ("Not detected"), else ""


@dataclass(frozen=True, slots=True)
class UnusableValue:
    """A value that was found but not used, and why: named on the card, never silently dropped."""

    kind: str  # "natalizumab level", "lymphocyte count", "PLEX procedure", ...
    reason: str  # engine/fhir_io-written plain text, e.g. "unit 'IU/mL' is not a mass concentration"
    reported: str = ""  # the value as reported, e.g. "25 IU/mL" (FHIR text: escape before markdown)
    at: datetime | None = None
    source: str = ""
    code: str = (
        ""  # stable machine code of the reason, e.g. "unit-conflict", "specimen", "qualitative-no-limit"
    )


@dataclass(frozen=True, slots=True)
class PlexSession:
    """A plasma exchange or immunoadsorption session already performed."""

    performed_at: datetime
    modality: Literal["plex", "immunoadsorption"] = "plex"
    plasma_volumes: float | None = None  # exchange volume in plasma volumes, when recorded
    source: str = ""
    ended_at: datetime | None = None  # performedPeriod.end when given (post-session timing counts from it)
    date_only: bool = False  # performed date known to the day only


@dataclass(frozen=True, slots=True)
class NatalizumabDose:
    """A natalizumab infusion given: from MedicationAdministration, or the end / date of a
    MedicationStatement's effective time. Never from a MedicationRequest (authoredOn is when an
    order was written, not when a dose was given)."""

    given_at: datetime
    dose_mg: float | None = None
    interval_days: float | None = None  # dosing interval when known (28 = q4w)
    source: str = ""
    date_only: bool = False  # given date known to the day only


@dataclass(frozen=True, slots=True)
class AntibodyResult:
    """Anti-natalizumab (anti-drug) antibody result: LOINC 58012-6 or explicit anti-natalizumab /
    anti-drug wording. JC virus antibody results (LOINC 100977-8, 70173-0) never arrive here."""

    positive: bool
    tested_at: datetime
    source: str = ""


@dataclass(frozen=True, slots=True)
class LymphocyteCount:
    """Absolute lymphocyte count in 10⁹/L (= 10³/µL); percentages never arrive here."""

    value_10e9_per_l: float
    drawn_at: datetime
    source: str = ""


@dataclass(frozen=True, slots=True)
class MedicationUse:
    """A medication on record (MedicationStatement, MedicationRequest or MedicationAdministration)."""

    ingredient: str | None  # lower-case ingredient from engine.drugs.identify(), None if unknown
    text: str  # name as written on the resource (FHIR text: escape before markdown)
    active: bool
    status: str = ""
    codes: tuple[Coding, ...] = ()
    last_date: datetime | None = None  # effective / authored / administered date when known
    source: str = ""
    record: Literal["statement", "request", "administration"] = "statement"


@dataclass(frozen=True, slots=True)
class ConditionFact:
    """A PML, MS or other condition with every piece of text that may describe its extent."""

    kind: Literal["pml", "ms", "iris", "other"]
    text: str  # code.text or first display (FHIR text)
    codes: tuple[Coding, ...] = ()
    body_site_codes: tuple[Coding, ...] = ()
    descriptions: tuple[str, ...] = ()  # bodySite text, notes, stage summary, evidence text (FHIR text)
    onset: datetime | None = None
    active: bool = True
    source: str = ""


@dataclass(frozen=True, slots=True)
class PatientDetails:
    """What the Patient resource and status observations say that changes the advice.

    `pregnant` / `breastfeeding`: True when recorded as such, False when recorded as not, None when
    nothing is on record. Weight in kg from the latest body-weight Observation (LOINC 29463-7).
    """

    birth_date: date | None = None
    pregnant: bool | None = None
    pregnancy_source: str = ""
    breastfeeding: bool | None = None
    breastfeeding_source: str = ""
    weight_kg: float | None = None
    weight_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PatientFacts:
    """Everything fhir_io could read about the patient, already typed and unit-normalised."""

    levels: tuple[NatalizumabLevel, ...] = ()
    sessions: tuple[PlexSession, ...] = ()
    doses: tuple[NatalizumabDose, ...] = ()
    antibodies: tuple[AntibodyResult, ...] = ()
    medications: tuple[MedicationUse, ...] = ()
    lymphocytes: tuple[LymphocyteCount, ...] = ()
    conditions: tuple[ConditionFact, ...] = ()
    unusable: tuple[UnusableValue, ...] = ()
    patient: PatientDetails = field(default_factory=PatientDetails)


@dataclass(frozen=True, slots=True)
class PlexPlan:
    """The planned schedule; defaults are the reference model's (clinical-reference.md §7)."""

    plasma_volumes_per_session: float = 1.5
    interval_days: float = 2.0
    ordered_sessions: int | None = None  # from ServiceRequest.quantityQuantity or repeat.count
    modality: Literal["plex", "immunoadsorption"] = "plex"
    first_session_at: datetime | None = None  # ServiceRequest.occurrence start when given


# ---------------------------------------------------------------- outputs

NoteValue = str | bool | int | float | tuple[str, ...] | None  # plain JSON values (days as ISO dates)


@dataclass(frozen=True, slots=True)
class Note:
    """One engine finding as a stable code and the values the words need, e.g.
    Note("old-level", {"age_days": 14.2}). The cards write the sentence; the codes are listed with
    their values where they are made (remaining.NOTE_CODES, iris.REASON_CODES, iris.WATCH_NOTE_CODES,
    dmt.REBOUND_NOTE_CODES)."""

    code: str
    values: Mapping[str, NoteValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Reference:
    """A cited source: short citation plus a stable link (DOI/PMID URL)."""

    citation: str
    url: str = ""


@dataclass(frozen=True, slots=True)
class SessionRange:
    estimate: int
    low: int
    high: int


@dataclass(frozen=True, slots=True)
class ProjectedPoint:
    """Projected equilibrated level after planned session `session_number` (1 = next)."""

    session_number: int
    at: datetime
    level_ug_per_ml: float
    low_ug_per_ml: float
    high_ug_per_ml: float


Basis = Literal["measured", "dosing-history", "none"]
# What the estimate concludes. "at-or-below-target" comes only from below_target.below_target_confirmed (the
# safety invariant, docs/safety.md); "measure-first" whenever the data cannot support a count.
Conclusion = Literal["sessions-needed", "at-or-below-target", "measure-first"]


@dataclass(frozen=True, slots=True)
class PlexEstimate:
    basis: Basis
    target_ug_per_ml: float
    sessions_completed: int
    remaining: SessionRange | None  # None only when basis == "none"
    starting_level: NatalizumabLevel | None  # the measurement the estimate starts from
    adjusted_level_ug_per_ml: float | None  # level at `now` after decay / post-session correction
    removal_fraction: float  # fraction remaining per session used for the point estimate
    removal_fraction_population: float
    removal_fraction_fitted: float | None  # patient-specific, when ≥ 2 levels bracket sessions
    half_life_days: float
    projection: tuple[ProjectedPoint, ...] = ()
    target_expected_at: datetime | None = None
    remeasure_at: datetime | None = None
    remeasure_after_session: int | None = None
    ordered_sessions: int | None = None
    levels_used: tuple[NatalizumabLevel, ...] = ()
    unusable: tuple[UnusableValue, ...] = ()
    flags: tuple[str, ...] = ()  # machine codes, see pk.py FLAGS
    notes: tuple[Note, ...] = ()  # what the estimate rests on, in order; the card words them
    references: tuple[Reference, ...] = ()
    conclusion: Conclusion = "sessions-needed"

    def __post_init__(self) -> None:
        # the safety invariant's shape (docs/safety.md H1): a 0 is only ever shown as its conclusion
        zero = self.remaining is not None and self.remaining.estimate == 0
        if zero != (self.conclusion == "at-or-below-target"):
            raise ValueError("0 sessions and 'at-or-below-target' come only together")
        if self.conclusion == "at-or-below-target" and self.remaining != SessionRange(0, 0, 0):
            raise ValueError("'at-or-below-target' has the range 0/0/0")
        if self.conclusion == "measure-first" and self.remaining is not None:
            raise ValueError("'measure-first' has no session count")


@dataclass(frozen=True, slots=True)
class SteroidStatement:
    text: str
    # "evidence": an observational cohort; "case report"; "expert practice": usual practice with no
    # single source; "expert opinion": stated by an expert, no data
    evidence: Literal["evidence", "case report", "expert practice", "expert opinion"]
    reference: Reference | None


@dataclass(frozen=True, slots=True)
class IrisAssessment:
    """IRIS follows washout in most patients; `risk` is the risk of *severe* IRIS ("high": raised)."""

    risk: Literal["high", "standard"]
    reasons: tuple[Note, ...]  # what raised the risk, e.g. Note("brainstem", {"terms": ("pons",)})
    watch_from: datetime | None
    watch_until: datetime | None
    watch_notes: tuple[
        Note, ...
    ]  # the watch window's notes, in order (iris.WATCH_NOTE_CODES); the card words them
    steroids: tuple[SteroidStatement, ...]
    pml_on_record: bool
    references: tuple[Reference, ...] = ()
    iris_on_record: bool = False
    # the codes of `reasons` and "multilobar" when named (it does not raise the risk on its own)
    reason_codes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ConditionalDmt:
    ingredient: str
    advised: bool  # True only with a recent count ≥ 0.5 × 10⁹/L drawn after the last natalizumab dose
    lymphocytes: LymphocyteCount | None = None  # the latest count the advice rests on
    # why (the card words it): "no-count", "no-count-after-last-dose" (drawn before the last dose),
    # "count-too-old" (after it, but more than 6 months ago), "low-count", "ok", "pregnancy", "breastfeeding"
    reason_code: str = ""


@dataclass(frozen=True, slots=True)
class DmtAdvice:
    allowed: tuple[str, ...]  # lower-case ingredient names
    conditional: tuple[ConditionalDmt, ...]
    avoid: tuple[str, ...]
    active_conflicts: tuple[MedicationUse, ...]  # active meds in the avoid class
    rebound_from: datetime | None
    rebound_peak: datetime | None
    rebound_until: datetime | None
    rebound_notes: tuple[Note, ...]  # the rebound window's notes, in order (dmt.REBOUND_NOTE_CODES)
    suggestible: tuple[str, ...] = field(default=())  # ingredients a draft order may be offered for
    references: tuple[Reference, ...] = ()
    blocked_by: tuple[str, ...] = ()  # "pregnancy", "breastfeeding": no DMT is drafted, each is named
