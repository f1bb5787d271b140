"""Which MS drug is this, and may it be given during natalizumab-associated PML?

Ingredient identification works on RxNorm ingredient codes (RxCUI, TTY=IN/PIN) and on text
(ingredient, suffixed biosimilar and brand names), because sites use local codes (codes.md §4-5).
Classes follow clinical-reference.md §5.2 and issue 2:

* allowed: immunomodulators (interferon beta, peginterferon beta-1a, glatiramer acetate);
  ClinicSpeak 2014: "the only drugs possible ... are immunomodulators; IFNbeta, GA and possibly DMF".
* conditional: fumarates (dimethyl, diroximel, monomethyl; one active metabolite), only with an
  absolute lymphocyte count ≥ 0.5 × 10⁹/L (engine.dmt decides).
* avoid: S1P modulators, anti-CD20, alemtuzumab, cladribine, mitoxantrone, teriflunomide,
  natalizumab itself (label boxed warning), daclizumab (withdrawn), and the prior
  immunosuppressants cyclophosphamide, methotrexate, azathioprine, mycophenolic acid (codes.md §4).

RxCUI 72257 / 75917: public sources disagree on which is interferon beta-1a and which beta-1b
(codes.md §4, §6.1). Both are allowed, so the class is safe either way; the ingredient is named from
the text when the text says which, else the generic "interferon beta".
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from cds.engine.domain import PatientFacts

__all__ = [
    "ALLOWED",
    "AVOID",
    "CONDITIONAL",
    "FUMARATES",
    "RXNORM_INGREDIENTS",
    "DrugClass",
    "LastDose",
    "drug_class",
    "has_natalizumab_exposure",
    "identify",
    "is_rxnorm",
    "last_dose",
    "last_natalizumab_dose",
]

DrugClass = Literal["allowed", "conditional", "avoid"]

INTERFERON_BETA = "interferon beta"  # generic name when 1a/1b cannot be told apart

ALLOWED: tuple[str, ...] = (
    "interferon beta-1a",
    "interferon beta-1b",
    "peginterferon beta-1a",
    "glatiramer acetate",
)
FUMARATES: tuple[str, ...] = ("dimethyl fumarate", "diroximel fumarate", "monomethyl fumarate")
CONDITIONAL: tuple[str, ...] = FUMARATES
AVOID: tuple[str, ...] = (
    "natalizumab",
    "fingolimod",
    "siponimod",
    "ozanimod",
    "ponesimod",
    "ocrelizumab",
    "ofatumumab",
    "ublituximab",
    "rituximab",
    "alemtuzumab",
    "cladribine",
    "mitoxantrone",
    "teriflunomide",
    "daclizumab",
    "cyclophosphamide",
    "methotrexate",
    "azathioprine",
    "mycophenolic acid",
)

# RxNorm ingredient RxCUIs (codes.md §4, "S-MS" source unless noted; all to be checked in RxNav).
# 72257 and 75917 are both interferon beta (1a/1b order disputed): resolved from text in identify().
RXNORM_INGREDIENTS: dict[str, str] = {
    "354770": "natalizumab",
    "117055": "alemtuzumab",
    "44157": "cladribine",
    "7005": "mitoxantrone",
    "121191": "rituximab",
    "1876366": "ocrelizumab",
    "712566": "ofatumumab",
    "1012892": "fingolimod",
    "2121085": "siponimod",
    "2288236": "ozanimod",
    "2532300": "ponesimod",
    "1373478": "dimethyl fumarate",
    "2261783": "diroximel fumarate",
    "1546433": "monomethyl fumarate",
    "214582": "glatiramer acetate",
    "1546168": "peginterferon beta-1a",
    "1310520": "teriflunomide",
    "72257": INTERFERON_BETA,
    "75917": INTERFERON_BETA,
    "190353": "daclizumab",
    "3002": "cyclophosphamide",
    "6851": "methotrexate",
    "1256": "azathioprine",
    "7145": "mycophenolic acid",
}

# Text patterns, most specific first (peginterferon before interferon; suffixed biosimilar names
# such as "natalizumab-sztn" roll up to the base ingredient, NLM Tech Bull 2017 Nov-Dec).
# Brand names: codes.md §5 (pairs seen as text; Glatopa, Briumvi, Vumerity... are standard knowledge).
_B = r"(?<![a-z0-9])"  # left word boundary that also works after "-" and "/"
_E = r"(?![a-z])"
_IFN = r"(?:interferon|ifn)[\s-]*(?:beta|β|b)"
_TEXT_PATTERNS: tuple[tuple[str, str], ...] = (
    ("peginterferon beta-1a", rf"{_B}(?:peg[\s-]*{_IFN}(?:[\s-]*1[\s-]*a)?|peginterferon|plegridy){_E}"),
    ("interferon beta-1a", rf"{_B}(?:{_IFN}[\s-]*1[\s-]*a|avonex|rebif){_E}"),
    ("interferon beta-1b", rf"{_B}(?:{_IFN}[\s-]*1[\s-]*b|betaseron|betaferon|extavia){_E}"),
    (INTERFERON_BETA, rf"{_B}{_IFN}{_E}"),
    ("glatiramer acetate", rf"{_B}(?:glatiramer|copaxone|glatopa){_E}"),
    ("dimethyl fumarate", rf"{_B}(?:dimethyl[\s-]*fumarate|tecfidera){_E}"),
    ("diroximel fumarate", rf"{_B}(?:diroximel[\s-]*fumarate|vumerity){_E}"),
    ("monomethyl fumarate", rf"{_B}(?:monomethyl[\s-]*fumarate|bafiertam){_E}"),
    ("natalizumab", rf"{_B}(?:natalizumab(?:-[a-z]{{4}})?|tysabri|tyruko){_E}"),
    ("fingolimod", rf"{_B}(?:fingolimod|gilenya|tascenso){_E}"),
    ("siponimod", rf"{_B}(?:siponimod|mayzent){_E}"),
    ("ozanimod", rf"{_B}(?:ozanimod|zeposia){_E}"),
    ("ponesimod", rf"{_B}(?:ponesimod|ponvory){_E}"),
    ("ocrelizumab", rf"{_B}(?:ocrelizumab|ocrevus){_E}"),
    ("ofatumumab", rf"{_B}(?:ofatumumab|kesimpta|arzerra){_E}"),
    ("ublituximab", rf"{_B}(?:ublituximab(?:-[a-z]{{4}})?|briumvi){_E}"),
    ("rituximab", rf"{_B}(?:rituximab(?:-[a-z]{{4}})?|rituxan|mabthera|truxima|ruxience|riabni){_E}"),
    ("alemtuzumab", rf"{_B}(?:alemtuzumab|lemtrada|campath){_E}"),
    ("cladribine", rf"{_B}(?:cladribine|mavenclad|leustatin){_E}"),
    ("mitoxantrone", rf"{_B}(?:mitoxantrone|novantrone){_E}"),
    ("teriflunomide", rf"{_B}(?:teriflunomide|aubagio){_E}"),
    ("daclizumab", rf"{_B}(?:daclizumab|zinbryta){_E}"),
    ("cyclophosphamide", rf"{_B}(?:cyclophosphamide|cytoxan|endoxan){_E}"),
    ("methotrexate", rf"{_B}(?:methotrexate|trexall|otrexup|rasuvo){_E}"),
    ("azathioprine", rf"{_B}(?:azathioprine|imuran){_E}"),
    (
        "mycophenolic acid",
        rf"{_B}(?:mycophenol(?:ic acid|ate(?:[\s-]*mofetil|[\s-]*sodium)?)|cellcept|myfortic){_E}",
    ),
    ("methylprednisolone", rf"{_B}(?:methylprednisolone|solu-?medrol|medrol){_E}"),
)
_COMPILED = tuple((name, re.compile(pattern)) for name, pattern in _TEXT_PATTERNS)

_CLASS: dict[str, DrugClass] = {
    **{name: "allowed" for name in (*ALLOWED, INTERFERON_BETA)},
    **{name: "conditional" for name in CONDITIONAL},
    **{name: "avoid" for name in AVOID},
}


def is_rxnorm(system: str) -> bool:
    """True for the RxNorm system URI (http://www.nlm.nih.gov/research/umls/rxnorm) or a variant."""
    return "rxnorm" in system.lower()


# The same drug texts come back on every call (and across patients), and a miss tries every ingredient's
# pattern: each lower-cased text is matched once per worker (bench/components.py: advise_dmt about
# 250 µs a call without it, 25 µs with it). A speed cache, not a clinical parameter.
@functools.lru_cache(maxsize=2048)
def _match_text(lowered: str) -> str | None:
    for name, pattern in _COMPILED:
        if pattern.search(lowered):
            return name
    return None


def _from_text(text: str) -> str | None:
    return _match_text(text.lower())


def identify(codes: tuple[tuple[str, str], ...], text: str) -> str | None:
    """Lower-case ingredient named by RxNorm ingredient codes or by ingredient/brand text.

    Codes win over text, except for the disputed interferon beta RxCUIs (72257/75917): there the
    text decides between beta-1a and beta-1b when it says which. Unknown drugs give None.
    Examples: "Tysabri" -> "natalizumab", "Tyruko" -> "natalizumab", "Gilenya" -> "fingolimod".
    """
    from_text = _from_text(text) if text else None
    for system, code in codes:
        if is_rxnorm(system) and (name := RXNORM_INGREDIENTS.get(code.strip())):
            if name == INTERFERON_BETA and from_text in ("interferon beta-1a", "interferon beta-1b"):
                return from_text
            return name
    return from_text


def drug_class(ingredient: str) -> DrugClass | None:
    """allowed / conditional / avoid for an MS disease-modifying ingredient, None otherwise."""
    return _CLASS.get(ingredient.strip().lower())


def has_natalizumab_exposure(facts: PatientFacts) -> bool:
    """Natalizumab on record: a medication, a dose, a level, or an unusable natalizumab level."""
    if facts.levels or facts.doses:
        return True
    if any(u.kind == "natalizumab level" for u in facts.unusable):
        return True
    return any((m.ingredient or identify(m.codes, m.text)) == "natalizumab" for m in facts.medications)


@dataclass(frozen=True, slots=True)
class LastDose:
    """The last natalizumab infusion given up to `now`, and whether it is known.

    `at` comes only from doses given (MedicationAdministration, or a MedicationStatement's effective
    date): an order's authoredOn is when it was written, never a dose date. `known` is False when
    natalizumab is on record but no dose date is, or when an active natalizumab order or statement is
    newer than the last dose on record (a later infusion may be missing): the last dose is then
    unknown, and no level, projection or date may be taken as following it.
    """

    at: datetime | None
    dose_mg: float | None
    known: bool
    date_only: bool = False


def last_dose(facts: PatientFacts, now: datetime) -> LastDose:
    """See LastDose. With no natalizumab on record at all: LastDose(None, None, known=True)."""
    doses = sorted((d for d in facts.doses if d.given_at <= now), key=lambda d: d.given_at)
    latest = doses[-1] if doses else None
    courses = [
        m
        for m in facts.medications
        if m.record != "administration" and (m.ingredient or identify(m.codes, m.text)) == "natalizumab"
    ]
    if latest is None:
        return LastDose(None, None, known=not courses)
    newer_course = any(m.active and (m.last_date is None or m.last_date > latest.given_at) for m in courses)
    return LastDose(latest.given_at, latest.dose_mg, known=not newer_course, date_only=latest.date_only)


def last_natalizumab_dose(facts: PatientFacts, now: datetime) -> tuple[datetime | None, float | None]:
    """Time and dose (mg) of the last natalizumab infusion known to have been given up to `now`, or
    (None, None). Use `last_dose` where it matters whether a later dose may be missing."""
    found = last_dose(facts, now)
    return found.at, found.dose_mg
