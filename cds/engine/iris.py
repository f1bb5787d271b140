"""Risk of PML-IRIS after natalizumab washout, its watch window and the steroid evidence.

IRIS follows washout in most patients (42/42, Tan 2011; 15/17, Stefoski 2019): what the record can
change is the risk of *severe* IRIS. It is raised ("high") when the PML on record
* involves the brainstem or other infratentorial structures ("very dangerous", ClinicSpeak 2014),
* is widespread: "widespread", "extensive" or bilateral disease (Vermersch 2011 grades unilobar /
  multilobar / widespread as outcome predictors; multilobar alone is named but does not raise it), or
* shows contrast (gadolinium) enhancement at diagnosis: earlier, more severe IRIS (Tan 2011).
Otherwise it is not raised (IRIS is still expected; monitor). Matching uses SNOMED CT body-site codes
and free text of the PML condition only; negated or unassessed mentions ("non-enhancing", "no brainstem
involvement", "enhancement not assessed") and history or MS plaques ("old MS plaques in the pons") do
not count. Reasons are engine-written: they name the matched term, never copy FHIR text.

Watch window: IRIS came a mean 57.4 ± 21.2 days after the last infusion (Stefoski 2019); the engine
watches from mean - 2 SD (about 15 days), or from the start of PLEX when that is earlier, because
PLEX/IA may accelerate IRIS (Tan 2011). The window has no hard end: later IRIS is described. What the
window rests on comes as `watch_notes` (codes of WATCH_NOTE_CODES and their values); the card words them.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Mapping  # noqa: UP035 (the engine imports only what test_purity.py allows)

from cds.engine.domain import (
    ConditionFact,
    IrisAssessment,
    Note,
    NoteValue,
    PatientFacts,
    PlexPlan,
    SteroidStatement,
)
from cds.engine.drugs import last_dose
from cds.engine.references import (
    CLINICSPEAK_2014,
    CORTESE_2021,
    STEFOSKI_2019,
    TAN_2011,
    VERMERSCH_2011,
    WENNING_2009,
)

__all__ = [
    "IRIS_ONSET_MEAN_DAYS",
    "IRIS_ONSET_SD_DAYS",
    "MIN_LOBES_WIDESPREAD",
    "REASON_CODES",
    "WATCH_NOTE_CODES",
    "WATCH_SD_MULTIPLE",
    "assess_iris",
]

IRIS_ONSET_MEAN_DAYS = 57.4  # mean days from last infusion to IRIS, Stefoski 2019 [V]
IRIS_ONSET_SD_DAYS = 21.2  # its SD, Stefoski 2019 [V]
WATCH_SD_MULTIPLE = 2.0  # window = mean ± 2 SD ≈ 15-100 d, "weeks to ~3 months" [D]
MIN_LOBES_WIDESPREAD = 2  # two or more distinct lobes named = multilobar (Vermersch 2011 "multilobar")

# The codes of IrisAssessment.watch_notes, in the order they come, and the values each carries (days as
# ISO dates, "2024-05-10"): plain JSON values; the IRIS card writes the words.
WATCH_NOTE_CODES: dict[str, tuple[str, ...]] = {
    "iris-expected": ("tan_iris", "tan_cases", "stefoski_iris", "stefoski_cases"),  # IRIS in n of N
    "iris-on-record": (),  # an active IRIS condition: manage it, not its risk
    "onset-after-last-infusion": ("last_infusion_on", "mean_days", "sd_days"),  # no safe end date
    "plex-brings-forward": (),  # PLEX starts before mean - 2 SD: watch from its start
    "no-infusion-on-record": (),  # no natalizumab dose at all: watch from the start of PLEX
    "last-infusion-unknown": (),  # a dose may be missing: no date from it
    "no-pml-on-record": (),
    "severe-risk-raised": (),
    "severe-risk-not-raised": ("multilobar",),  # multilobar: named, and alone it does not raise the risk
}
# IRIS followed washout in 42 of 42 (Tan 2011) and 15 of 17 (Stefoski 2019) patients
IRIS_EXPECTED: Mapping[str, NoteValue] = {
    "tan_iris": 42,
    "tan_cases": 42,
    "stefoski_iris": 15,
    "stefoski_cases": 17,
}

# The reasons that raise the risk of severe IRIS, as IrisAssessment.reasons codes them. "terms": the sites
# or words the record names, in order of first mention (engine terms, never FHIR text).
REASON_CODES: dict[str, str] = {
    "brainstem": "brainstem involvement; values: terms",
    "infratentorial": "infratentorial (non-brainstem) involvement; values: terms",
    "widespread": "widespread PML (bilateral, widespread, extensive); values: terms",
    "enhancement": "contrast enhancement at diagnosis (earlier, more severe IRIS, Tan 2011)",
}

_SCT = "snomed"
# SNOMED CT body structures (codes.md §2): brain stem 15926001, cerebellum 113305005 (informal labels
# verified); frontal 83251001, parietal 16630005, occipital 31065004 (verified). Temporal: text only.
_INFRATENTORIAL_CODES = {
    "15926001": ("brainstem", "brain stem"),
    "113305005": ("infratentorial", "cerebellum"),
}
_LOBE_CODES = {"83251001": "frontal", "16630005": "parietal", "31065004": "occipital"}

# (pattern, category, canonical term). Categories: brainstem, infratentorial.
_SITE_TERMS: tuple[tuple[str, str, str], ...] = (
    (r"brain[\s-]?stem", "brainstem", "brainstem"),
    (r"pons|pontine|pontomedullary", "brainstem", "pons"),
    (r"medulla(?: oblongata)?", "brainstem", "medulla"),
    (r"mid[\s-]?brain|mesencephal\w*", "brainstem", "midbrain"),
    (r"cerebell\w*", "infratentorial", "cerebellum"),
    (r"infra[\s-]?tentorial", "infratentorial", "infratentorial"),
    (r"posterior fossa", "infratentorial", "posterior fossa"),
)
_WIDESPREAD_TERMS: tuple[tuple[str, str], ...] = (
    (r"bilateral(?:ly)?|both hemispheres", "bilateral"),
    (r"widespread", "widespread"),
    (r"extensive (?:pml|lesions?|disease|involvement|white matter)", "extensive"),
)
# A lobe is named on its own or as the second half of a compound ("fronto-parietal", "parieto-occipital").
_LOBE_LEFT = (
    r"(?:(?<![a-z0-9])|(?<=fronto)|(?<=fronto-)|(?<=parieto)|(?<=parieto-)|(?<=temporo)|(?<=temporo-))"
)
_LOBE_TERMS: tuple[tuple[str, str], ...] = (
    (r"front(?:al|o(?=[\s/-]?(?:pariet|tempor|occipit)))", "frontal"),
    (r"pariet(?:al|o(?=[\s/-]?(?:front|tempor|occipit)))", "parietal"),
    (r"occipit(?:al|o(?=[\s/-]?(?:front|pariet|tempor)))", "occipital"),
    (r"tempor(?:al|o(?=[\s/-]?(?:front|pariet|occipit)))", "temporal"),
)
# Contrast enhancement; a bare mention of the agent ("gadolinium was given") does not count.
_CONTRAST_TERMS: tuple[tuple[str, str], ...] = (
    (r"(?:gadolinium|gd|contrast)[\s-]*(?:enhanc\w*|uptake|positive)", "contrast enhancement"),
    (r"gd\+|gadolinium\+", "contrast enhancement"),
    (r"enhanc\w*", "contrast enhancement"),
    (r"contrast uptake", "contrast enhancement"),
)
_NEG_BEFORE = re.compile(
    r"(?:\bno|\bnot|\bnon|\bwithout|\babsen(?:ce|t)(?: of)?|\bnegative for|\bfree of|\bnor|\bneither|\black(?:s|ing)?(?: of)?"
    r"|\bdid not|\bdoes not|\bdidn't|\bdoesn't|\bsparing(?: of)?(?: the)?|\bspares?(?: the)?|\bruled out|\bexclud\w*"
    r"|\bnormal|\bunremarkable)"
    r"[\s-]+(?:\S+[\s-]+){0,3}$"
)
_NEG_AFTER = re.compile(
    r"^[\s:-]*(?:\S+\s+){0,2}(?:absent|not (?:seen|present|detected|involved|assessed|evaluated|performed|done|known|given)"
    r"|none|negative|spared|ruled out|uninvolved|normal|unremarkable|intact|unknown|pending|n/?a\b)\b"
)
# A site named in a clause about MS or history is not PML ("old MS plaques in the pons").
_NOT_PML_CONTEXT = re.compile(
    r"(?<![a-z])(?:ms|multiple sclerosis|demyelinat\w*|plaques?|old|chronic|previous|prior|known|history of|"
    r"pre-?existing|longstanding|remote)(?![a-z])"
)
_MULTILOBAR = re.compile(r"(?<![a-z0-9])multi[\s-]?lobar")
_CLAUSE_SPLIT = re.compile(r"[.,;\n()\[\]]|\bbut\b|\bhowever\b|\bwhereas\b")
_LEFT = r"(?<![a-z0-9])"


def _clauses(text: str) -> list[str]:
    return [c for c in _CLAUSE_SPLIT.split(text.lower()) if c.strip()]


_COMPILED: dict[tuple[str, str], re.Pattern[str]] = {
    (left, p): re.compile(left + "(?:" + p + ")")
    for left, terms in (
        (_LEFT, [t[0] for t in (*_SITE_TERMS, *_WIDESPREAD_TERMS, *_CONTRAST_TERMS)]),
        (_LOBE_LEFT, [t[0] for t in _LOBE_TERMS]),
    )
    for p in terms
}  # compiled once at import
# any term at all, in one scan: a clause that names none (most of them) skips the per-term _find calls
_ANY_TERM = re.compile("|".join(f"(?:{rx.pattern})" for rx in _COMPILED.values()))


def _find(pattern: str, clause: str, left: str = _LEFT) -> bool:
    """True when `pattern` occurs in `clause` at least once without a negation cue around it."""
    rx = _COMPILED.get((left, pattern))
    if rx is None:
        rx = re.compile(left + "(?:" + pattern + ")")
    for m in rx.finditer(clause):
        before, after = clause[: m.start()], clause[m.end() :]
        if before.endswith(("non-", "non ")):
            continue
        if _NEG_BEFORE.search(before) or _NEG_AFTER.search(after):
            continue
        return True
    return False


def _texts(c: ConditionFact) -> list[str]:
    return [t for t in (c.text, *c.descriptions) if t]


def _is_sct(system: str) -> bool:
    return _SCT in system.lower()


@dataclass(frozen=True, slots=True)
class _TextFindings:
    """What one free text names, in order of first mention."""

    sites: tuple[tuple[str, str], ...]  # (canonical term, category)
    widespread: tuple[str, ...]
    lobes: frozenset[str]
    contrast: bool
    multilobar: bool = False


# The same condition texts come back on every call for a patient (and across patients): each is scanned
# once per worker (bench/components.py: assess_iris about 300 µs a call without it, 20 µs with it).
# A speed cache, not a clinical parameter.
@functools.lru_cache(maxsize=2048)
def _scan(text: str) -> _TextFindings:
    sites: dict[str, str] = {}
    widespread: list[str] = []
    lobes: set[str] = set()
    contrast = False
    multilobar = False
    for clause in _clauses(text):
        if _MULTILOBAR.search(clause) and _find(r"multi[\s-]?lobar", clause):
            multilobar = True
        if _ANY_TERM.search(clause) is None:
            continue
        history = _NOT_PML_CONTEXT.search(clause) is not None
        for pattern, category, term in _SITE_TERMS:
            if not history and _find(pattern, clause):
                sites.setdefault(term, category)
        for pattern, term in _WIDESPREAD_TERMS:
            if term not in widespread and _find(pattern, clause):
                widespread.append(term)
        for pattern, lobe in _LOBE_TERMS:
            if _find(pattern, clause, _LOBE_LEFT):
                lobes.add(lobe)
        if any(_find(p, clause) for p, _ in _CONTRAST_TERMS):
            contrast = True
    return _TextFindings(tuple(sites.items()), tuple(widespread), frozenset(lobes), contrast, multilobar)


@dataclass(slots=True)
class _Findings:
    """What the PML conditions name, gathered over their codes and texts (first mention first)."""

    sites: dict[str, str]  # canonical term -> category ("brainstem" / "infratentorial")
    widespread: list[str]
    lobes: set[str]
    contrast: bool = False
    multilobar: bool = False

    def add_codes(self, c: ConditionFact) -> None:
        for system, code in (*c.body_site_codes, *c.codes):
            if not _is_sct(system):
                continue
            if code in _INFRATENTORIAL_CODES:
                category, term = _INFRATENTORIAL_CODES[code]
                self.sites.setdefault(term, category)
            if code in _LOBE_CODES:
                self.lobes.add(_LOBE_CODES[code])

    def add_text(self, found: _TextFindings) -> None:
        for term, category in found.sites:
            self.sites.setdefault(term, category)
        self.widespread += [t for t in found.widespread if t not in self.widespread]
        self.lobes |= found.lobes
        self.contrast = self.contrast or found.contrast
        self.multilobar = self.multilobar or found.multilobar


def _spelling(term: str) -> str:
    """'brain stem' and 'brainstem' are one site."""
    return term.replace(" ", "").replace("-", "")


def _site_notes(sites: dict[str, str]) -> list[Note]:
    """One note per category, its sites in order of first mention (spelling variants once)."""
    by_category: dict[str, dict[str, str]] = {}
    for term, category in sites.items():
        by_category.setdefault(category, {}).setdefault(_spelling(term), term)
    return [Note(category, {"terms": tuple(terms.values())}) for category, terms in by_category.items()]


def _reasons_for(pml: list[ConditionFact]) -> tuple[list[Note], bool]:
    """(the reasons that raise the risk of severe IRIS, whether multilobar PML is named)."""
    found = _Findings(sites={}, widespread=[], lobes=set())
    for c in pml:
        found.add_codes(c)
        for text in _texts(c):
            found.add_text(_scan(text))
    reasons = _site_notes(found.sites)
    if found.widespread:
        reasons.append(Note("widespread", {"terms": tuple(found.widespread)}))
    if found.contrast:
        reasons.append(Note("enhancement"))
    return reasons, found.multilobar or len(found.lobes) >= MIN_LOBES_WIDESPREAD


# The steroid statements are the same for every patient of a risk level: built once (the cards remember
# their text per tuple of statements).
_TREAT = SteroidStatement(
    text="If IRIS develops, corticosteroids were associated with a better disability outcome "
    "(retrospective series of 42 cases).",
    evidence="evidence",
    reference=TAN_2011,
)
_REGIMEN = SteroidStatement(
    text="The usual pulse is IV methylprednisolone 1 g/day for 3-5 days, then an oral taper: common "
    "practice, with no single source for natalizumab-PML-IRIS.",
    evidence="expert practice",
    reference=None,
)
_WENNING = SteroidStatement(
    text="A steroid pulse stabilised life-threatening IRIS after plasma exchange in one reported case.",
    evidence="case report",
    reference=WENNING_2009,
)
_PROPHYLAXIS_HIGH = SteroidStatement(
    text="Prophylactic steroids before IRIS in high-risk PML are expert opinion only; there are no "
    "controlled data.",
    evidence="expert opinion",
    reference=CLINICSPEAK_2014,
)
_PROPHYLAXIS_STANDARD = SteroidStatement(
    text="Prophylactic steroids are not supported when the risk of severe IRIS is not raised: they are "
    "expert opinion only, even in high-risk PML.",
    evidence="expert opinion",
    reference=CLINICSPEAK_2014,
)
_CAUTION = SteroidStatement(
    text="Steroids blunt the immune response that clears JC virus; use them with caution and for IRIS.",
    evidence="expert opinion",
    reference=CORTESE_2021,
)
_STEROIDS_HIGH = (_TREAT, _REGIMEN, _WENNING, _PROPHYLAXIS_HIGH, _CAUTION)
_STEROIDS_STANDARD = (_TREAT, _REGIMEN, _WENNING, _PROPHYLAXIS_STANDARD, _CAUTION)
_REFERENCES = (TAN_2011, STEFOSKI_2019, VERMERSCH_2011, CLINICSPEAK_2014, WENNING_2009, CORTESE_2021)


def _steroids(high: bool) -> tuple[SteroidStatement, ...]:
    return _STEROIDS_HIGH if high else _STEROIDS_STANDARD


def assess_iris(facts: PatientFacts, plan: PlexPlan, now: datetime) -> IrisAssessment:
    """Risk of severe IRIS (high / standard) with reasons, watch start and steroid statements.

    Watch from last infusion + (57.4 - 2 × 21.2) days (Stefoski 2019), or from the first PLEX session
    when that is earlier (Tan 2011); no end date. With the last dose unknown, no date is computed from it.
    """
    pml = [c for c in facts.conditions if c.kind == "pml"]
    reasons, multilobar = _reasons_for(pml)
    high = bool(reasons)
    codes = [r.code for r in reasons] + (["multilobar"] if multilobar else [])
    dose = last_dose(facts, now)
    last_infusion = dose.at if dose.known else None
    plex_start = min(
        [s.performed_at for s in facts.sessions if dose.at is None or s.performed_at > dose.at]
        + [plan.first_session_at or now]
    )
    spread = WATCH_SD_MULTIPLE * IRIS_ONSET_SD_DAYS
    notes = [Note("iris-expected", IRIS_EXPECTED)]
    iris_on_record = any(c.kind == "iris" and c.active for c in facts.conditions)
    if iris_on_record:
        notes.append(Note("iris-on-record"))
    if last_infusion is not None:
        watch_from = last_infusion + timedelta(days=IRIS_ONSET_MEAN_DAYS - spread)
        onset: dict[str, NoteValue] = {
            "last_infusion_on": last_infusion.date().isoformat(),
            "mean_days": IRIS_ONSET_MEAN_DAYS,
            "sd_days": IRIS_ONSET_SD_DAYS,
        }
        notes.append(Note("onset-after-last-infusion", onset))
        if plex_start < watch_from:
            watch_from = plex_start
            notes.append(Note("plex-brings-forward"))
    elif dose.known:  # no natalizumab dose on record at all: PLEX is the only anchor
        watch_from = plex_start
        notes.append(Note("no-infusion-on-record"))
    else:  # a dose may be missing from the record: no date is computed from it
        watch_from = None
        notes.append(Note("last-infusion-unknown"))
    if not pml:
        notes.append(Note("no-pml-on-record"))
    elif high:
        notes.append(Note("severe-risk-raised"))
    else:
        notes.append(Note("severe-risk-not-raised", {"multilobar": multilobar}))
    return IrisAssessment(
        risk="high" if high else "standard",
        reasons=tuple(reasons),
        watch_from=watch_from,
        watch_until=None,
        watch_notes=tuple(notes),
        steroids=_steroids(high),
        pml_on_record=bool(pml),
        references=_REFERENCES,
        iris_on_record=iris_on_record,
        reason_codes=tuple(codes),
    )
