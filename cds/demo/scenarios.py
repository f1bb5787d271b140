"""The demo scenario catalogue: one named clinical situation per demo patient, and what its cards must show.

Each scenario is a small function that calls a `PatientBuilder` with day offsets (`days` before `now`);
`build(name, now)` materialises it. The patient id is `demo-<scenario>`.

`expected` says qualitatively what the cards should show. Keys (all optional but `cards`):
  cards               card kinds in order, [] when the service must stay silent
  basis               "measured" | "dosing-history" | "none" (estimate card)
  remaining_estimate  sessions by the reference model of clinical-reference.md §7.1 (r 0.50, range
                      r 0.45-0.60, t½ 11 d, target 1.0 µg/mL); an engine may differ by one
  sessions_completed  completed PLEX procedures on record
  ordered_sessions    what the draft order asks for (quantityQuantity / repeat.count)
  iris_risk           "high" | "standard"
  active_conflicts    lower-case ingredients the DMT card must name as active conflicts
  flags               free words for what the card should mention (e.g. "post-session-sample")
  unusable            how many values the cards must name as not used
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cds.demo.builder import BRAINSTEM, CEREBELLUM, FRONTAL, LOINC, OCCIPITAL, PARIETAL, SCT, PatientBuilder


@dataclass(frozen=True)
class Scenario:
    title: str
    description: str
    expected: dict[str, Any]
    build: Callable[[PatientBuilder], None]


_ALL3 = ["plex-estimate", "iris", "dmt"]
_FRONTAL_NOTE = "Right frontal subcortical T2/FLAIR lesion, unilobar; no gadolinium enhancement"


def _common(b: PatientBuilder, *, lymph: float = 1.8, ada_negative: bool = True) -> None:
    b.ms()
    if lymph:
        b.lymphocytes(21, lymph)
    if ada_negative:
        b.antibodies(30, positive=False)


def _high(b: PatientBuilder) -> None:
    b.patient("Ilse", "Marwood", "female", 38)
    _common(b)
    b.pml(4, [(FRONTAL, "Right frontal lobe")], _FRONTAL_NOTE)
    b.natalizumab(12)
    b.level(1, 28)
    b.plex_order(5)


def _decayed(b: PatientBuilder) -> None:
    b.patient("Tomas", "Erlenbach", "male", 44)
    _common(b)
    b.pml(
        22, [(PARIETAL, "Left parietal lobe")], "Left parietal subcortical lesion, unilobar; no enhancement"
    )
    b.natalizumab(35)
    b.level(20, 20)
    b.plex_order(None)


def _post_session(b: PatientBuilder) -> None:
    b.patient("Rosalind", "Okafor-Dunne", "female", 31)
    _common(b)
    b.pml(6, [(FRONTAL, "Left frontal lobe")], "Left frontal lesion, unilobar; no gadolinium enhancement")
    b.natalizumab(14)
    b.level(3, 25, note="Drawn before the first plasma exchange")
    b.plex_done(1.1)
    b.level(1.1 - 2 / 24 - 0.25, 7.5, note="Drawn 6 hours after plasma exchange session 1")
    b.plex_order(4)


def _mid_course(b: PatientBuilder) -> None:
    b.patient("Henrik", "Salvesen", "male", 49)
    _common(b)
    b.pml(10, [(OCCIPITAL, "Right occipital lobe")], "Right occipital lesion, unilobar; no enhancement")
    b.natalizumab(18)
    b.weight(7.3, 82.0)
    b.level(7.1, 32, "mg/L", note="Pre-session 1")
    b.plex_done(7, 5, 3)
    b.level(1, 4.8, "mg/L", note="Pre-session 4, 2 days after session 3")
    b.plex_order(3)


def _below_target(b: PatientBuilder) -> None:
    b.patient("Agnes", "Villanueva", "female", 52)
    _common(b)
    b.pml(16, [(FRONTAL, "Right frontal lobe")], _FRONTAL_NOTE)
    b.natalizumab(24)
    b.level(13, 27)
    b.plex_done(12, 10, 8, 6, 4)
    b.level(2, 0.5, comparator="<", note="Below the lower limit of quantification (0.5 ug/mL)")
    b.plex_order(2)


def _antibodies(b: PatientBuilder) -> None:
    b.patient("Colm", "Brannigan", "male", 41)
    _common(b, ada_negative=False)
    b.pml(8, [(PARIETAL, "Right parietal lobe")], "Right parietal lesion, unilobar; no enhancement")
    b.natalizumab(40)
    b.antibodies(65, positive=True)
    b.antibodies(15, positive=True)
    b.level(5, 0.4)
    b.plex_order(5)


def _no_level(b: PatientBuilder) -> None:
    b.patient("Perpetua", "Lindgren", "female", 35)
    _common(b)
    b.pml(3, [(FRONTAL, "Left frontal lobe")], "Left frontal lesion, unilobar; no gadolinium enhancement")
    b.natalizumab(10)
    b.plex_order(5)


def _brainstem(b: PatientBuilder) -> None:
    b.patient("Osric", "Feldmann", "male", 46)
    _common(b)
    b.pml(
        5,
        [(BRAINSTEM, "Pons (brainstem)"), (CEREBELLUM, "Left middle cerebellar peduncle")],
        "Lesion of the left middle cerebellar peduncle extending into the pons (brainstem); "
        "patchy gadolinium contrast enhancement at diagnosis",
    )
    b.natalizumab(16)
    b.level(2, 21000, "ng/mL")
    b.plex_order(5)


def _fingolimod(b: PatientBuilder) -> None:
    b.patient("Wilhelmina", "Achterberg", "female", 29)
    b.ms()
    b.lymphocytes(21, 1.6, "10*3/uL")
    b.antibodies(30, positive=False)
    b.pml(7, [(FRONTAL, "Right frontal lobe")], _FRONTAL_NOTE)
    b.natalizumab(30)
    b.statement("fingolimod", "Gilenya (fingolimod) 0.5 mg orally once daily", 6)
    b.weight(6.3, 64.5)
    b.pregnancy_status(6.2, pregnant=False)
    b.request("fingolimod", "Gilenya (fingolimod) 0.5 mg orally once daily", 6)
    b.level(1, 22)
    b.plex_order(5)


def _lymphopenia(b: PatientBuilder) -> None:
    b.patient("Bartholomew", "Quist", "male", 55)
    _common(b, lymph=0)
    b.lymphocytes(45, 0.45)
    b.lymphocytes(3, 0.4)
    b.pml(9, [(PARIETAL, "Left parietal lobe")], "Left parietal lesion, unilobar; no enhancement")
    b.natalizumab(20)
    b.request(
        "dimethyl fumarate",
        "Tecfidera (dimethyl fumarate) 240 mg orally twice daily",
        2,
        status="draft",
        intent="proposal",
        note="Considered as the next DMT after plasma exchange",
    )
    b.level(2, 16)
    b.plex_order(5)


def _implausible(b: PatientBuilder) -> None:
    b.patient("Genevieve", "Thornquist", "female", 47)
    _common(b)
    b.pml(6, [(FRONTAL, "Right frontal lobe")], _FRONTAL_NOTE)
    b.natalizumab(15)
    b.level(3, 5000, note="Result as transmitted by the reference laboratory")
    b.level(2.2, 12, "IU/mL")
    b.level(2, 15)
    b.plex_order(5)


def _mri_order(b: PatientBuilder) -> None:
    b.patient("Lorcan", "Heathcote", "male", 40)
    _common(b)
    b.pml(4, [(FRONTAL, "Right frontal lobe")], _FRONTAL_NOTE)
    b.natalizumab(12)
    b.level(1, 26)
    b.order(
        {
            "coding": [{"system": LOINC, "code": "24590-2", "display": "MR Brain WO and W contrast IV"}],
            "text": "MRI brain with and without gadolinium",
        },
        category=[{"coding": [{"system": SCT, "code": "363679005", "display": "Imaging"}]}],
    )


def _no_natalizumab(b: PatientBuilder) -> None:
    b.patient("Mirela", "Castellanos", "female", 63)
    b.condition(("91637004", "Myasthenia gravis (disorder)"), "Generalised myasthenia gravis", 4 * 365.25)
    b.lymphocytes(10, 1.7)
    b.statement("pyridostigmine", "Pyridostigmine 60 mg orally four times daily", 3 * 365.25)
    b.plex_order(5, reason="Myasthenic exacerbation")


def _course_short(b: PatientBuilder) -> None:
    b.patient("Ezekiel", "Morcombe", "male", 37)
    _common(b)
    b.pml(3, [(OCCIPITAL, "Left occipital lobe")], "Left occipital lesion, unilobar; no enhancement")
    b.natalizumab(11)
    b.level(1, 30)
    b.plex_order(2)


_SCENARIOS: dict[str, Scenario] = {
    "high-level": Scenario(
        "High natalizumab level",
        "28 µg/mL drawn yesterday, no PLEX yet; 5 sessions ordered",
        {
            "cards": _ALL3,
            "basis": "measured",
            "remaining_estimate": 5,
            "sessions_completed": 0,
            "ordered_sessions": 5,
            "iris_risk": "standard",
            "active_conflicts": [],
        },
        _high,
    ),
    "decayed-level": Scenario(
        "Decayed level",
        "20 µg/mL drawn 20 days ago, no PLEX since; course length left open",
        {
            "cards": _ALL3,
            "basis": "measured",
            "remaining_estimate": 3,
            "sessions_completed": 0,
            "iris_risk": "standard",
            "flags": ["decayed"],
        },
        _decayed,
    ),
    "post-session": Scenario(
        "Post-session sample",
        "7.5 µg/mL drawn 6 h after session 1 (25 µg/mL before it)",
        {
            "cards": _ALL3,
            "basis": "measured",
            "remaining_estimate": 4,
            "sessions_completed": 1,
            "ordered_sessions": 4,
            "iris_risk": "standard",
            "flags": ["post-session-sample", "remeasure"],
        },
        _post_session,
    ),
    "mid-course": Scenario(
        "Mid-course, fitted removal",
        "32 → 4.8 mg/L across 3 sessions: removal fitted to this patient",
        {
            "cards": _ALL3,
            "basis": "measured",
            "remaining_estimate": 3,
            "sessions_completed": 3,
            "ordered_sessions": 3,
            "iris_risk": "standard",
            "fitted_removal_fraction": 0.53,
            "flags": ["fitted"],
        },
        _mid_course,
    ),
    "below-target": Scenario(
        "Below target",
        "<0.5 µg/mL after 5 sessions; 2 more ordered",
        {
            "cards": _ALL3,
            "basis": "measured",
            "remaining_estimate": 0,
            "sessions_completed": 5,
            "ordered_sessions": 2,
            "iris_risk": "standard",
            "comparator": "<",
        },
        _below_target,
    ),
    "antibodies": Scenario(
        "Anti-natalizumab antibodies",
        "Persistently positive antibodies 50 days apart; level 0.4 µg/mL",
        {
            "cards": _ALL3,
            "basis": "measured",
            "remaining_estimate": 0,
            "iris_risk": "standard",
            "flags": ["antibodies-persistent"],
        },
        _antibodies,
    ),
    "no-level": Scenario(
        "No level on record",
        "Only dosing history: last Tysabri infusion 10 days ago",
        {
            "cards": _ALL3,
            "basis": "dosing-history",
            "iris_risk": "standard",
            "sessions_completed": 0,
            "flags": ["measure-level"],
        },
        _no_level,
    ),
    "brainstem-pml": Scenario(
        "Brainstem PML",
        "Pontine lesion with contrast enhancement; level 21000 ng/mL",
        {
            "cards": _ALL3,
            "basis": "measured",
            "remaining_estimate": 5,
            "iris_risk": "high",
            "iris_reasons": ["brainstem", "enhancement"],
        },
        _brainstem,
    ),
    "active-fingolimod": Scenario(
        "Active fingolimod",
        "Fingolimod started 6 days ago alongside the natalizumab history",
        {
            "cards": _ALL3,
            "basis": "measured",
            "remaining_estimate": 5,
            "iris_risk": "standard",
            "active_conflicts": ["fingolimod"],
        },
        _fingolimod,
    ),
    "lymphopenia": Scenario(
        "Lymphopenia",
        "Lymphocytes 0.4 × 10⁹/L; dimethyl fumarate being considered",
        {
            "cards": _ALL3,
            "basis": "measured",
            "remaining_estimate": 4,
            "iris_risk": "standard",
            "fumarate_advised": False,
            "lymphocytes": 0.4,
        },
        _lymphopenia,
    ),
    "implausible-values": Scenario(
        "Implausible values",
        "5000 µg/mL and 12 IU/mL on record beside a valid 15 µg/mL",
        {
            "cards": _ALL3,
            "basis": "measured",
            "remaining_estimate": 4,
            "iris_risk": "standard",
            "unusable": 2,
        },
        _implausible,
    ),
    "non-plex-order": Scenario(
        "Non-PLEX order",
        "MRI brain ordered for a natalizumab-PML patient: the service stays silent",
        {"cards": []},
        _mri_order,
    ),
    "no-natalizumab": Scenario(
        "PLEX without natalizumab",
        "Plasma exchange for myasthenia gravis: no natalizumab exposure",
        {"cards": []},
        _no_natalizumab,
    ),
    "course-short": Scenario(
        "Ordered course too short",
        "30 µg/mL yesterday but only 2 sessions ordered",
        {
            "cards": _ALL3,
            "basis": "measured",
            "remaining_estimate": 5,
            "ordered_sessions": 2,
            "iris_risk": "standard",
            "suggest_update_sessions": 5,
        },
        _course_short,
    ),
}


def scenario_names() -> list[str]:
    return list(_SCENARIOS)


def build(name: str, now: datetime) -> tuple[str, Scenario, list[dict[str, Any]], dict[str, Any]]:
    """(patient id, scenario, resources, draft order) for `name`, dates materialised against `now`."""
    try:
        sc = _SCENARIOS[name]
    except KeyError:
        raise KeyError(f"unknown demo patient {name!r}; known: {', '.join(_SCENARIOS)}") from None
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    now = now.astimezone(UTC).replace(microsecond=0)
    pid = f"demo-{name}"
    b = PatientBuilder(pid, now)
    sc.build(b)
    return pid, sc, b.resources, b.draft_order
