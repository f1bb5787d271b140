"""Hypothesis strategies for the issue-15 property test: a base patient above target, and adversarial
FHIR records that must never be read as a serum natalizumab level at or below target.

Every date is fixed relative to NOW (the engine is called with `now=NOW`). The base patient
(`bases()`): infusions at DOSES (MedicationAdministration, plus a stopped MedicationStatement ending at
the last one), a PML diagnosis in one frontal lobe, 0-3 PLEX sessions, and a serum level of 12 µg/mL
drawn 2-12 days before NOW, after the last infusion. `cases()` adds 1-6 adversarial groups of records
(ADVERSARIAL: one strategy each) and shuffles everything. No strategy adds a genuine newer serum
result below target; test_no_false_reassurance.genuine_low_serum_results checks that independently.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from tests.safety import records as fhir

PID = "safety-prop"
NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
TARGET_UG_PER_ML = 1.0  # the service's default target (Settings.plex_target_ug_per_ml); LOW is below it
LAST_DOSE = NOW - timedelta(days=40, hours=2)
DOSES = (LAST_DOSE - timedelta(days=56), LAST_DOSE - timedelta(days=28), LAST_DOSE)


# ---------------------------------------------------------------- the base patient


@dataclass(frozen=True)
class Base:
    level_at: datetime  # the 12 µg/mL serum level, after the last infusion
    sessions: tuple[datetime, ...]  # PLEX sessions done between the last infusion and the level
    resources: tuple[dict[str, Any], ...]


ORDER = fhir.plex_order("plex-draft", PID, sessions=5)
TWELVE = (  # 12 µg/mL, written four ways that agree
    {"valueQuantity": fhir.qty(12, "ug/mL")},
    {"valueQuantity": fhir.qty(12, "mg/L")},
    {"valueQuantity": fhir.qty(12000, "ng/mL")},
    {"valueString": "12 ug/mL"},
)


def base_patient(days_ago: int, hours: int, sessions_before: int, twelve: dict[str, Any]) -> Base:
    level_at = NOW - timedelta(days=days_ago, hours=hours)
    sessions = tuple(level_at - timedelta(days=2 + 2 * i, hours=1) for i in range(sessions_before))
    resources: list[dict[str, Any]] = [
        fhir.patient(PID),
        fhir.pml("pml", PID, LAST_DOSE + timedelta(days=3), body_sites=("right frontal lobe",)),
        fhir.statement(
            "ms-ntz",
            PID,
            "stopped",
            effectivePeriod={"start": fhir.iso(NOW - timedelta(days=800)), "end": fhir.iso(LAST_DOSE)},
        ),
        *(fhir.infusion(f"ma-{i}", PID, at) for i, at in enumerate(DOSES)),
        *(fhir.plex_session(f"plex-{i}", PID, at) for i, at in enumerate(sessions)),
        fhir.serum_level("ntz-base", PID, fhir.iso(level_at), **twelve),
    ]
    return Base(level_at, sessions, tuple(resources))


@st.composite
def bases(draw: st.DrawFn) -> Base:
    return base_patient(
        days_ago=draw(st.integers(2, 12)),
        hours=draw(st.integers(0, 10)),
        sessions_before=draw(st.integers(0, 3)),
        twelve=draw(st.sampled_from(TWELVE)),
    )


# ---------------------------------------------------------------- adversarial records

LOW = st.floats(0.01, 0.99 * TARGET_UG_PER_ML).map(lambda v: round(v, 2))  # below target, µg/mL


@st.composite
def low_values(draw: st.DrawFn) -> dict[str, Any]:
    """A value that would be below target if it were a usable serum level after the last dose: only
    ever used where its specimen, date or timing disqualifies it."""
    v = draw(LOW)
    return draw(
        st.sampled_from(
            [
                {"valueQuantity": fhir.qty(v, "ug/mL")},
                {"valueQuantity": fhir.qty(round(v * 1000), "ng/mL")},
                {"valueQuantity": fhir.qty(v, "mg/L")},
                {"valueQuantity": fhir.qty(0.5, "ug/mL", comparator="<")},
                {"valueString": "<0.5 ug/mL"},
                {"valueString": "<0.1"},
                {"valueString": "Not detected"},
                {"valueString": "negative"},
                {"valueString": "below limit of quantification"},
                {"valueString": "0,5 ug/mL"},
                {"valueString": "<0,5 µg/mL"},
                {
                    "valueCodeableConcept": {
                        "coding": [{"system": fhir.SNOMED, "code": "260415000"}],
                        "text": "Not detected",
                    }
                },
            ]
        )
    )


def _minutes_between(start: datetime, end: datetime) -> st.SearchStrategy[datetime]:
    span = max(0, int((end - start).total_seconds() // 60))
    return st.integers(0, span).map(lambda m: start + timedelta(minutes=m))


def _script_digits(text: str, zero: int) -> str:
    return "".join(chr(zero + int(c)) if c.isdigit() else c for c in text)


SCRIPTS = (0x0660, 0x06F0, 0x0966, 0xFF10)  # Arabic-Indic, Eastern Arabic-Indic, Devanagari, fullwidth


@st.composite
def unusable_formats(draw: st.DrawFn) -> dict[str, Any]:
    """A serum value that is above target, unreadable, ambiguous or self-contradicting: never a
    usable result below target, whatever a careless reading would make of it."""
    kind = draw(
        st.sampled_from(
            [
                "grouped",
                "decimal-comma-high",
                "other-script",
                "unit-conflict",
                "mega-gram",
                "no-unit",
                "not-mass",
                "zero",
                "negative",
                "not-a-number",
                "greater-than",
                "censored-above-target",
                "detected",
                "implausible-high",
            ]
        )
    )
    v = draw(LOW)
    if kind == "grouped":  # 12,500 ng/mL is 12.5 µg/mL, not 12.5 ng/mL
        n = draw(st.integers(1100, 400000))
        sep = draw(st.sampled_from([",", " ", "\u202f", "\u00a0"]))
        return {"valueString": f"{n:,} ng/mL".replace(",", sep)}
    if kind == "decimal-comma-high":
        x = draw(st.floats(1.1, 99.9))
        return {
            "valueString": f"{x:.1f}".replace(".", ",") + draw(st.sampled_from([" ug/mL", " mg/L", "µg/mL"]))
        }
    if kind == "other-script":
        text = draw(
            st.sampled_from([f"{draw(st.integers(2, 99))} ug/mL", f"{draw(st.integers(1100, 99999))} ng/mL"])
        )
        return {"valueString": _script_digits(text, draw(st.sampled_from(SCRIPTS)))}
    if kind == "unit-conflict":  # the text and the UCUM code disagree: the value is unusable
        return draw(
            st.sampled_from(
                [
                    {"valueQuantity": fhir.qty(draw(st.integers(2, 900)), "ug/mL", code="ng/mL")},
                    {"valueQuantity": fhir.qty(draw(st.integers(50, 999)), "ng/mL", code="ug/mL")},
                    {"valueQuantity": fhir.qty(draw(st.integers(2, 900)), "mg/L", code="ng/mL")},
                ]
            )
        )
    if kind == "mega-gram":  # UCUM is case-sensitive: Mg/L is megagram per litre, not mg/L
        x = draw(st.sampled_from([0.0004, 0.012, v, 12.0]))
        return draw(st.sampled_from([{"valueQuantity": fhir.qty(x, "Mg/L")}, {"valueString": f"{x:g} Mg/L"}]))
    if kind == "no-unit":
        return draw(
            st.sampled_from([{"valueQuantity": {"value": v}}, {"valueString": f"{v:g}"}, {"valueInteger": 0}])
        )
    if kind == "not-mass":
        return draw(
            st.sampled_from([{"valueQuantity": fhir.qty(v, "[IU]/mL")}, {"valueQuantity": fhir.qty(v, "%")}])
        )
    if kind == "zero":
        return draw(st.sampled_from([{"valueQuantity": fhir.qty(0, "ug/mL")}, {"valueString": "0 ug/mL"}]))
    if kind == "negative":
        return draw(
            st.sampled_from([{"valueQuantity": fhir.qty(-v, "ug/mL")}, {"valueString": f"-{v:g} ug/mL"}])
        )
    if kind == "not-a-number":
        return {
            "valueString": draw(st.sampled_from(["NaN ug/mL", "inf ug/mL", "see comment", "12..5 ug/mL"]))
        }
    if kind == "greater-than":
        return draw(
            st.sampled_from(
                [
                    {"valueQuantity": fhir.qty(v, "ug/mL", comparator=">")},
                    {"valueQuantity": fhir.qty(v, "ug/mL", comparator=">=")},
                    {"valueString": f">{v:g} ug/mL"},
                ]
            )
        )
    if kind == "censored-above-target":  # "<2" does not show ≤ 1
        x = round(draw(st.floats(1.5, 10.0)), 1)
        return draw(
            st.sampled_from(
                [{"valueQuantity": fhir.qty(x, "ug/mL", comparator="<")}, {"valueString": f"<{x:g} ug/mL"}]
            )
        )
    if kind == "detected":
        return draw(
            st.sampled_from(
                [
                    {"valueString": "Detected"},
                    {"valueString": "positive"},
                    {"valueCodeableConcept": fhir.POSITIVE},
                ]
            )
        )
    # implausible-high
    return draw(
        st.sampled_from([{"valueQuantity": fhir.qty(1500, "ug/mL")}, {"valueString": "5,000,000 ng/mL"}])
    )


OTHER_SPECIMENS = {
    "CSF": ("Cerebrospinal fluid", "258450006", "Cerebrospinal fluid sample", "cerebrospinal fluid"),
    "urine": ("Urine", "122575003", "Urine specimen", "urine"),
}


@st.composite
def other_specimen(draw: st.DrawFn, rid: str, base: Base) -> list[dict[str, Any]]:
    """A natalizumab result on CSF or urine (about 100-fold below serum), drawn after the last dose."""
    name = draw(st.sampled_from(sorted(OTHER_SPECIMENS)))
    display, sct, sct_display, words = OTHER_SPECIMENS[name]
    at = draw(st.one_of(_minutes_between(base.level_at, NOW), _minutes_between(LAST_DOSE, NOW)))
    value = draw(low_values())
    neutral = {"coding": [{"system": fhir.LOCAL_LAB, "code": "NTZ"}], "text": "Natalizumab concentration"}
    where = draw(st.sampled_from(["code-text", "code-display", "specimen-display", "contained-specimen"]))
    if where == "code-text":
        return [fhir.lab(rid, PID, {"text": f"Natalizumab concentration, {name}"}, fhir.iso(at), **value)]
    if where == "code-display":
        code = {
            "coding": [{"system": fhir.LOCAL_LAB, "code": f"NTZ-{name}", "display": f"Natalizumab, {words}"}]
        }
        return [fhir.lab(rid, PID, code, fhir.iso(at), **value)]
    if where == "specimen-display":
        return [fhir.lab(rid, PID, neutral, fhir.iso(at), specimen={"display": display}, **value)]
    specimen = {
        "resourceType": "Specimen",
        "id": "sp",
        "type": {"coding": [{"system": fhir.SNOMED, "code": sct, "display": sct_display}], "text": name},
    }
    return [
        fhir.lab(
            rid, PID, neutral, fhir.iso(at), contained=[specimen], specimen={"reference": "#sp"}, **value
        )
    ]


ANTIBODY_CODES = (
    fhir.ANTI_NATALIZUMAB_CODE,
    {"text": "Anti-natalizumab antibodies"},
    {"text": "Natalizumab anti-drug antibody (ADA)"},
    fhir.JCV_INDEX_CODE,
    fhir.JCV_QUALITATIVE_CODE,
    {"text": "JCV Ab index - Tysabri"},
)


@st.composite
def antibody_series(draw: st.DrawFn, rid: str, base: Base) -> list[dict[str, Any]]:
    """1-3 antibody results of one kind over time; often "persistent": positives ≥ 6 weeks apart."""
    code = draw(st.sampled_from(ANTIBODY_CODES))
    persistent = draw(st.booleans())
    at = NOW - timedelta(days=draw(st.integers(42, 700) if persistent else st.integers(0, 700)))
    out = []
    for i in range(draw(st.integers(2 if persistent else 1, 3))):
        positive = persistent or draw(st.booleans())
        value = draw(
            st.sampled_from(
                [
                    {"valueCodeableConcept": fhir.POSITIVE if positive else fhir.NEGATIVE},
                    {"valueString": "Positive" if positive else "Negative"},
                    {"valueString": "Detected" if positive else "Not detected"},
                    {"valueBoolean": positive},
                    {
                        "valueQuantity": {
                            "value": 3.2 if positive else 0.1,
                            "unit": "{index}",
                            "system": fhir.UCUM,
                            "code": "{index}",
                        }
                    },
                ]
            )
        )
        out.append(fhir.lab(f"{rid}-{i}", PID, code, fhir.iso(min(at, NOW)), **value))
        at += timedelta(days=draw(st.integers(42 if persistent else 1, 200)))
    return out


@st.composite
def unusable_serum(draw: st.DrawFn, rid: str, base: Base) -> list[dict[str, Any]]:
    """A serum level drawn after the last infusion (often the newest result) in an unusable form."""
    at = draw(st.one_of(_minutes_between(base.level_at, NOW), _minutes_between(LAST_DOSE, NOW)))
    status = draw(st.sampled_from(["final", "final", "amended", "corrected"]))
    return [fhir.serum_level(rid, PID, fhir.iso(at), status=status, **draw(unusable_formats()))]


@st.composite
def withdrawn_low(draw: st.DrawFn, rid: str, base: Base) -> list[dict[str, Any]]:
    """A low serum result after the level that the lab withdrew."""
    at = draw(_minutes_between(base.level_at, NOW))
    status = draw(st.sampled_from(["entered-in-error", "cancelled"]))
    return [fhir.serum_level(rid, PID, fhir.iso(at), status=status, **draw(low_values()))]


@st.composite
def badly_dated_low(draw: st.DrawFn, rid: str, base: Base) -> list[dict[str, Any]]:
    """A low serum result whose time is in the future, imprecise, missing, or date-only on the day of
    an infusion or a PLEX session (before or after them is unknown)."""
    days = [fhir.day(d) for d in (*DOSES, *base.sessions)]
    extra: list[dict[str, Any]] = []
    if draw(st.booleans()):  # a PLEX session after the level, and the low result dated to its day only
        at = draw(_minutes_between(base.level_at + timedelta(hours=26), NOW - timedelta(hours=1)))
        extra.append(fhir.plex_session(f"{rid}-plex", PID, at))
        days = [fhir.day(at)]
    when = draw(
        st.one_of(
            _minutes_between(NOW + timedelta(minutes=30), NOW + timedelta(days=60)).map(fhir.iso),
            st.sampled_from(
                [NOW.strftime("%Y-%m"), NOW.strftime("%Y"), (NOW - timedelta(days=20)).strftime("%Y-%m")]
            ),
            st.sampled_from(days),
            st.none(),
        )
    )
    return [*extra, fhir.serum_level(rid, PID, when, **draw(low_values()))]


@st.composite
def before_last_dose(draw: st.DrawFn, rid: str, base: Base) -> list[dict[str, Any]]:
    """A low serum result drawn before the last infusion (a trough before it, or long ago)."""
    at = draw(_minutes_between(NOW - timedelta(days=700), LAST_DOSE - timedelta(minutes=30)))
    return [fhir.serum_level(rid, PID, fhir.iso(at), **draw(low_values()))]


@st.composite
def same_time_low(draw: st.DrawFn, rid: str, base: Base) -> list[dict[str, Any]]:
    """A second, low result at exactly the time of the 12 µg/mL level (discordant; input order varies)."""
    return [fhir.serum_level(rid, PID, fhir.iso(base.level_at), **draw(low_values()))]


@st.composite
def post_session_low(draw: st.DrawFn, rid: str, base: Base) -> list[dict[str, Any]]:
    """A PLEX session done after the level and a low sample drawn within hours of it (not
    re-equilibrated)."""
    latest_start = NOW - timedelta(hours=4)
    start = draw(_minutes_between(min(base.level_at + timedelta(hours=26), latest_start), latest_start))
    end = start + timedelta(hours=2)
    fields = draw(
        st.sampled_from([{}, {"performedPeriod": {"start": fhir.iso(start), "end": fhir.iso(end)}}])
    )
    session = fhir.plex_session(f"{rid}-plex", PID, start, note="1.5 plasma volumes exchanged")
    if fields:
        del session["performedDateTime"]
        session.update(fields)
    drawn = draw(_minutes_between(end + timedelta(minutes=30), min(NOW, start + timedelta(hours=20))))
    return [session, fhir.serum_level(rid, PID, fhir.iso(drawn), **draw(low_values()))]


@st.composite
def sessions_after_level(draw: st.DrawFn, rid: str, base: Base) -> list[dict[str, Any]]:
    """PLEX sessions done after the level: a projection below target is not a measurement."""
    out = []
    at = base.level_at + timedelta(days=1, hours=draw(st.integers(0, 6)))
    for i in range(draw(st.integers(1, 6))):
        if at > NOW - timedelta(hours=1):
            break
        status = draw(st.sampled_from(["completed", "completed", "completed", "not-done"]))
        out.append(fhir.plex_session(f"{rid}-{i}", PID, at, status=status))
        at += timedelta(days=draw(st.integers(1, 3)))
    return out


@st.composite
def orders_and_statements(draw: st.DrawFn, rid: str, base: Base) -> list[dict[str, Any]]:
    """Records that are not a dose given: an old or undated standing order, an undated statement,
    an infusion not done or entered in error."""
    kind = draw(
        st.sampled_from(["old-order", "undated-order", "recent-order", "undated-statement", "not-given"])
    )
    if kind == "old-order":
        years = draw(st.integers(1, 5))
        return [fhir.standing_order(rid, PID, fhir.iso(NOW - timedelta(days=365 * years + 17)))]
    if kind == "undated-order":
        return [fhir.standing_order(rid, PID, None, status=draw(st.sampled_from(["active", "on-hold"])))]
    if kind == "recent-order":
        return [fhir.standing_order(rid, PID, fhir.iso(draw(_minutes_between(LAST_DOSE, NOW))))]
    if kind == "undated-statement":
        return [fhir.statement(rid, PID, "active")]
    at = draw(_minutes_between(LAST_DOSE, NOW))
    return [fhir.infusion(rid, PID, at, status=draw(st.sampled_from(["not-done", "entered-in-error"])))]


@st.composite
def duplicate(draw: st.DrawFn, rid: str, base: Base) -> list[dict[str, Any]]:
    """The 12 µg/mL result again: as the same resource, or the same result under another id."""
    level = next(r for r in base.resources if r["id"] == "ntz-base")
    copied = copy.deepcopy(level)
    if draw(st.booleans()):
        copied["id"] = rid
    return [copied]


ADVERSARIAL = (
    antibody_series,
    other_specimen,
    unusable_serum,
    withdrawn_low,
    badly_dated_low,
    before_last_dose,
    same_time_low,
    post_session_low,
    sessions_after_level,
    orders_and_statements,
    duplicate,
)


@dataclass(frozen=True)
class Case:
    base: Base
    added: tuple[tuple[str, tuple[dict[str, Any], ...]], ...]  # (kind, records)
    resources: tuple[dict[str, Any], ...]  # base + added, in the order the reader gets them

    def describe(self) -> str:
        added = "\n".join(f"  {kind}: {json.dumps(rs, ensure_ascii=False)[:800]}" for kind, rs in self.added)
        return (
            f"level at {fhir.iso(self.base.level_at)}, {len(self.base.sessions)} session(s) before it; "
            f"added:\n{added}"
        )

    def __repr__(self) -> str:
        return f"Case({self.describe()!r})"  # one line: Hypothesis prints it for a failing case

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


@st.composite
def cases(draw: st.DrawFn) -> Case:
    base = draw(bases())
    added = []
    for i in range(draw(st.integers(1, 6))):
        make = draw(st.sampled_from(ADVERSARIAL))
        added.append((make.__name__, tuple(draw(make(f"adv{i}", base)))))
    everything = [*base.resources, *(r for _, rs in added for r in rs)]
    return Case(base, tuple(added), tuple(draw(st.permutations(everything))))
