"""Engine results → CDS Hooks cards (pure: no I/O, `now` passed in).

Three cards for a PLEX order on a natalizumab-exposed patient: the remaining-PLEX estimate, the IRIS
card and the rebound-safe DMT card. Every piece of text that did not originate in this module (FHIR
text, and engine sentences, which may quote FHIR values) goes through `md_escape` before it enters
markdown. Every FHIR resource a suggestion carries is validated with the
fhir.resources R4B models (`validate_emitted`); the DMT suggestions never name a drug of the avoid class.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from cds.engine.dmt import LYMPHOCYTE_THRESHOLD_10E9_PER_L
from cds.engine.domain import (
    ConditionalDmt,
    DmtAdvice,
    IrisAssessment,
    NatalizumabLevel,
    PlexEstimate,
    Reference,
    SteroidStatement,
    UnusableValue,
)
from cds.engine.drugs import identify
from cds.engine.memo import Memo
from cds.fhir import r4b as r4b_shape
from cds.fhir.orders import PlexOrder
from cds.fhir_io import LoadResult
from cds.hooks.models import Card, Coding, Link, Source, new_uuids

log = logging.getLogger("cds.hooks.cards")

SOURCE_LABEL = "PML-PLEX decision support"
EXTENSION_KEY = "pml-plex"
LEVEL_TEXT = "Natalizumab [Mass/volume] in Serum or Plasma"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
OVERRIDE_SYSTEM = "urn:pml-plex:override-reason"
LANDI_2017 = Reference(
    citation="Landi D et al. Neurology 2017;88(12):1144-52",
    url="https://doi.org/10.1212/WNL.0000000000003740",
)
DISCLAIMER = (
    "This is decision support about **drug clearance**, not proof of clinical benefit: in natalizumab-"
    "associated PML, PLEX did not reduce mortality or poor outcome ([Landi 2017]"
    f"({LANDI_2017.url}), Class III)."
)

# RxNorm ingredient RxCUIs (shared/docs/codes.md §4, VERIFIED rows only; interferons conflict → text only)
RXCUI: dict[str, str] = {
    "natalizumab": "354770",
    "glatiramer acetate": "214582",
    "peginterferon beta-1a": "1546168",
    "teriflunomide": "1310520",
    "dimethyl fumarate": "1373478",
    "diroximel fumarate": "2261783",
    "monomethyl fumarate": "1546433",
    "ocrelizumab": "1876366",
    "ofatumumab": "712566",
    "rituximab": "121191",
    "fingolimod": "1012892",
    "siponimod": "2121085",
    "ozanimod": "2288236",
    "ponesimod": "2532300",
    "alemtuzumab": "117055",
    "cladribine": "44157",
    "mitoxantrone": "7005",
}

OVERRIDE_REASONS: tuple[Coding, ...] = (
    Coding(
        code="clinical-judgement",
        system=OVERRIDE_SYSTEM,
        display="Clinical judgement: patient-specific reasons",
    ),
    Coding(code="already-addressed", system=OVERRIDE_SYSTEM, display="Already addressed elsewhere"),
    Coding(code="data-incorrect", system=OVERRIDE_SYSTEM, display="The data shown are incomplete or wrong"),
    Coding(code="not-relevant", system=OVERRIDE_SYSTEM, display="Not relevant for this patient"),
)

# ---------------------------------------------------------------- text helpers

# control characters dropped (tab, newline and carriage return are whitespace, collapsed below)
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# & < > as HTML entities, markdown specials backslash-escaped. Backslash first and & before < >, so no
# replacement is replaced again; str.replace per character beats one str.translate with a dict
# (a Python lookup per character) about 3x on engine sentences.
_MD_REPLACEMENTS: tuple[tuple[str, str], ...] = (
    ("\\", "\\\\"),
    ("&", "&amp;"),
    ("<", "&lt;"),
    (">", "&gt;"),
    *((c, "\\" + c) for c in "`*_{}[]()#+-!|~"),
)


# Engine sentences, steroid texts, drug names and units recur on every call: each is escaped once per
# worker. Bounded: at most 512 texts of up to 400 characters, cleared when full.
_ESCAPED_MAX_ENTRIES = 512
_ESCAPED_MAX_CHARS = 400


def _escape(text: str) -> str:
    s = _CONTROL_CHARS.sub("", text)
    for old, new in _MD_REPLACEMENTS:
        s = s.replace(old, new)
    return " ".join(s.split())  # split(): the same whitespace as \s; no replacement adds whitespace


_ESCAPED: Memo[str, str] = Memo(_escape, _ESCAPED_MAX_ENTRIES, admit=lambda t: len(t) <= _ESCAPED_MAX_CHARS)


def md_escape(text: object) -> str:
    """Make FHIR-sourced text inert in GitHub-flavoured markdown (and HTML): one line, no markup."""
    return _ESCAPED[text] if type(text) is str else _escape(str(text))


# Targets, plan values, half-lives and many levels recur on every call: each float is formatted once per
# worker. Bounded (cleared when full); 0.0 is not remembered (-0.0 == 0.0 but formats as "-0").
_NUMS_MAX_ENTRIES = 512


def fmt_num(x: float) -> str:
    """25 → '25', 3.46 → '3.5', 0.456 → '0.46'."""
    return _NUMS[x] if type(x) is float and x else _fmt_num(x)


def _fmt_num(x: float) -> str:
    ax = abs(x)
    if ax >= 10:
        s = f"{x:.0f}"
    elif ax >= 1:
        s = f"{x:.1f}"
    else:
        s = f"{x:.2f}"
    return s.rstrip("0").rstrip(".") if "." in s else s


_NUMS: Memo[float, str] = Memo(_fmt_num, _NUMS_MAX_ENTRIES)


# Dates recur within a call and across calls (engine dates, the same levels): formatted once per UTC
# date-time (equal UTC date-times are the same instant, so the same day). Bounded, cleared when full.
_DATES_MAX_ENTRIES = 1024


def fmt_date(dt: datetime | None) -> str:
    if not dt:
        return "unknown date"
    return _DATES[dt] if dt.tzinfo is UTC else _fmt_date(dt)


def _fmt_date(dt: datetime) -> str:
    day = dt.astimezone(UTC).date()
    # isoformat is 3x cheaper than strftime; they differ only before year 1000 (strftime does not pad)
    return day.isoformat() if day.year >= 1000 else day.strftime("%Y-%m-%d")


_DATES: Memo[datetime, str] = Memo(_fmt_date, _DATES_MAX_ENTRIES)


def fhir_datetime(dt: datetime) -> str:
    """A FHIR dateTime (UTC, 'Z')."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _level_text(level: NatalizumabLevel) -> str:
    return f"{level.comparator or ''}{fmt_num(level.value_ug_per_ml)}"


def _fit(*candidates: str) -> str:
    """The first candidate that fits a card summary (≤ 139 characters)."""
    for c in candidates:
        if c and len(c) <= 139:
            return c
    return candidates[-1][:136].rstrip() + "..."


def _ref_key(r: Reference) -> str:
    """One source, however it is cited: the same DOI/URL (or, without one, the same citation)."""
    return r.url.strip().rstrip("/").lower() if r.url else r.citation.strip().lower()


def _unique_refs(refs: Iterable[Reference]) -> list[Reference]:
    out: dict[str, Reference] = {}
    for r in refs:
        out.setdefault(_ref_key(r), r)
    return list(out.values())


def _refs_md(refs: Iterable[Reference]) -> str:
    return "\n".join(f"- [{r.citation}]({r.url})" if r.url else f"- {r.citation}" for r in _unique_refs(refs))


_YEAR = re.compile(r"\b(19|20)\d\d\b")


def _short_ref(r: Reference) -> str:
    """'Tan IL et al. Neurology 2011;…' -> 'Tan 2011' (first word and first year), linked when it has a URL."""
    first = r.citation.split(" ", 1)[0].rstrip(".,")
    year = _YEAR.search(r.citation)
    label = f"{first} {year.group(0)}" if year else r.citation
    return f"[{label}]({r.url})" if r.url else label


def _source(refs: Iterable[Reference]) -> Source:
    url = next((r.url for r in refs if r.url.startswith("https://")), None)
    return Source(label=SOURCE_LABEL, url=url)


def _sources_of(refs: tuple[Reference, ...]) -> tuple[str, Source]:
    return _refs_md(refs), _source(refs)


# A card's sources (its "Sources" list and its Source) per tuple of references, and its steroid lines per
# tuple of statements: the engine cites module-level constants, so the same tuples recur on every call.
# The Source is shared by every card citing the same references (models are only read once built).
_BY_REFS_MAX_ENTRIES = 256
_sources: Memo[tuple[Reference, ...], tuple[str, Source]] = Memo(_sources_of, _BY_REFS_MAX_ENTRIES)


def _unusable_lines(unusable: Iterable[UnusableValue]) -> list[str]:
    """One line per kind and reason: repeated entries (e.g. every percentage lymphocyte result) collapse
    into one line with a count and the latest value."""
    groups: dict[tuple[str, str], list[UnusableValue]] = {}
    for u in unusable:
        groups.setdefault((u.kind, u.reason), []).append(u)
    lines = []
    for (kind, reason), items in groups.items():
        if len(items) == 1:
            u = items[0]
            what = kind + (f" {u.reported}" if u.reported else "") + (f" ({fmt_date(u.at)})" if u.at else "")
            lines.append(f"- {md_escape(what)}: {md_escape(reason)}")
            continue
        dated = [u for u in items if u.at is not None]
        latest = max(dated, key=lambda u: u.at or datetime.min.replace(tzinfo=UTC)) if dated else items[0]
        shown = (
            ", latest "
            + (f"{latest.reported} " if latest.reported else "")
            + (f"on {fmt_date(latest.at)}" if latest.at else "")
        )
        what = f"{len(items)} {kind} results ({shown.removeprefix(', ').strip()})"
        lines.append(f"- {md_escape(what)}: {md_escape(reason)}")
    return lines


def _problems_md(load: LoadResult | None, unusable: Iterable[UnusableValue] = ()) -> str:
    lines = _unusable_lines(unusable)
    if load is not None:
        for p in dict.fromkeys(load.problems):
            lines.append(f"- {md_escape(p)}")
        if load.skipped:
            lines.append(
                f"- {load.skipped} malformed FHIR entr{'y was' if load.skipped == 1 else 'ies were'} skipped"
            )
    return "\n".join(lines)


def _an(word: str) -> str:
    """English indefinite article for an ingredient name: 'an interferon…', 'a glatiramer…'."""
    return "an" if word[:1].lower() in "aeiou" else "a"


_uuids = new_uuids  # a card and its suggestions take their uuids from one os.urandom call


# ---------------------------------------------------------------- FHIR resources we emit


_MODEL_CACHE: dict[str, Any] = {}


def validate_emitted(resource: dict[str, Any]) -> dict[str, Any]:
    """Validate a resource we put in a suggestion against fhir.resources R4B; raise ValueError if invalid.

    In full once per shape (cds.r4b_shape: the same resource up to a checked id, subject reference and
    date-times); a resource of a shape that already passed is not re-validated."""
    return _validate_keyed(resource, r4b_shape.shape_key(resource))


def _validate_keyed(resource: dict[str, Any], key: str | bytes | None) -> dict[str, Any]:
    """validate_emitted with `resource`'s shape key (r4b_shape.shape_key(resource)) already at hand."""
    if r4b_shape.is_known_valid(key):
        return resource
    rtype = resource.get("resourceType")
    model = _MODEL_CACHE.get(str(rtype))
    if model is None:
        from fhir.resources.R4B import get_fhir_model_class

        try:
            model = _MODEL_CACHE[str(rtype)] = get_fhir_model_class(str(rtype))
        except KeyError as exc:
            raise ValueError(f"unknown resourceType {rtype!r}") from exc
    try:
        model.model_validate(resource)
    except Exception as exc:  # pydantic ValidationError and fhir_core errors
        raise ValueError(f"emitted {rtype} is not valid FHIR R4B: {type(exc).__name__}") from exc
    r4b_shape.remember(key)
    return resource


def level_request(
    patient_id: str, at: datetime, after_session: int | None, settings: Any, *, completed: int = 0
) -> dict[str, Any]:
    code: dict[str, Any] = {"text": LEVEL_TEXT}
    codes = [c for c in (getattr(settings, "natalizumab_level_codes", None) or []) if "|" in c]
    if codes:
        system, value = codes[0].split("|", 1)
        code["coding"] = [{"system": system, "code": value, "display": LEVEL_TEXT}]
    if after_session:
        when = (
            f"after {after_session} more PLEX session{'s' if after_session != 1 else ''}, before the next one"
            if completed
            else f"after PLEX session {after_session}, before session {after_session + 1}"
        )
    else:
        when = "before the next PLEX session"
    resource = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "order",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://snomed.info/sct",
                        "code": "108252007",
                        "display": "Laboratory procedure",
                    }
                ]
            }
        ],
        "code": code,
        "subject": {"reference": f"Patient/{patient_id}"},
        "occurrenceDateTime": fhir_datetime(at),
        "note": [{"text": f"Serum natalizumab level {when}, to check washout (PML-PLEX decision support)."}],
    }
    # plain JSON values built here: pydantic-core's encoding is as good a shape key as shape_key's
    # (one-to-one on such values, r4b_shape.parsed_json_key) and ~3 µs cheaper than a sorted json.dumps
    return _validate_keyed(resource, r4b_shape.parsed_json_key(resource))


def medication_request(patient_id: str, ingredient: str, now: datetime) -> dict[str, Any]:
    return _medication_request(patient_id, ingredient, fhir_datetime(now))


def _medication_request(patient_id: str, ingredient: str, authored_on: str) -> dict[str, Any]:
    return validate_emitted(_medication_resource(patient_id, ingredient, authored_on))


# The DMT card drafts one MedicationRequest per ingredient, all for the same patient and authoredOn: they
# differ only in the ingredient. Their shape keys (cds.r4b_shape) mask the subject reference and
# authoredOn, so once the first draft's key exists (both values masked), every other draft's key equals
# the key of the same ingredient's draft for a stand-in patient and date-time, worked out once per
# ingredient instead of once per draft and request. A draft whose shape is not known valid is validated
# in full, exactly as validate_emitted does.
_STAND_IN_PATIENT = "shape-stand-in"
_STAND_IN_AUTHORED_ON = "2000-01-01T00:00:00Z"


def _stand_in_shape_key(ingredient: str) -> str | None:
    return r4b_shape.shape_key(_medication_resource(_STAND_IN_PATIENT, ingredient, _STAND_IN_AUTHORED_ON))


_MED_SHAPE_KEYS: Memo[str, str | None] = Memo(_stand_in_shape_key, 256)
_medication_shape_key = _MED_SHAPE_KEYS.__getitem__


def _medication_drafts(patient_id: str, ingredients: list[str], authored_on: str) -> list[dict[str, Any]]:
    """[_medication_request(patient_id, i, authored_on) for i in ingredients], each validated as
    validate_emitted would (see _MED_SHAPE_KEYS for how the shape keys are found)."""
    drafts: list[dict[str, Any]] = []
    masked: bool | None = None  # patient and authoredOn are masked in every key (known from the first)
    for ingredient in ingredients:
        resource = _medication_resource(patient_id, ingredient, authored_on)
        if masked is None:
            masked = r4b_shape.maskable(resource)  # the same checks as shape_key, without the encoding
        key = _medication_shape_key(ingredient) if masked else None
        if key is None:
            key = r4b_shape.shape_key(resource)
        drafts.append(_validate_keyed(resource, key))
    return drafts


def _medication_resource(patient_id: str, ingredient: str, authored_on: str) -> dict[str, Any]:
    concept: dict[str, Any] = {"text": ingredient}
    if ingredient in RXCUI:
        concept["coding"] = [{"system": RXNORM, "code": RXCUI[ingredient], "display": ingredient}]
    return {
        "resourceType": "MedicationRequest",
        "status": "draft",
        "intent": "proposal",
        "medicationCodeableConcept": concept,
        "subject": {"reference": f"Patient/{patient_id}"},
        "authoredOn": authored_on,
        "note": [
            {"text": "Draft: disease-modifying therapy after natalizumab PML; timing per the DMT card."}
        ],
    }


def course_update(order: PlexOrder, sessions: int) -> dict[str, Any] | None:
    """The draft PLEX order with its session count set to `sessions` (whole resource, as `update` needs)."""
    res = copy.deepcopy(order.resource)
    if not res.get("id") or res.get("resourceType") != "ServiceRequest":
        return None
    raw_qty = res.get("quantityQuantity")
    qty: dict[str, Any] = raw_qty if isinstance(raw_qty, dict) else {}
    res["quantityQuantity"] = {**qty, "value": sessions, "unit": qty.get("unit") or "sessions"}
    repeat = (
        res.get("occurrenceTiming", {}).get("repeat")
        if isinstance(res.get("occurrenceTiming"), dict)
        else None
    )
    if isinstance(repeat, dict) and "count" in repeat:
        repeat["count"] = sessions
    try:
        return validate_emitted(res)
    except ValueError:
        log.warning("draft PLEX order is not valid R4B; no update suggestion")
        return None


# ---------------------------------------------------------------- links


def chart_link(url: str | None) -> Link | None:
    """The estimate card's link to the projected-level chart (absolute URL with an opaque id, no PHI).

    The route makes the URL (cds.views.charts.chart_url) when the chart store is enabled; None otherwise.
    """
    if not url:
        return None
    return Link(label="Projected natalizumab level chart", url=url, type="absolute")


# ---------------------------------------------------------------- the three cards


def _latest_level(est: PlexEstimate) -> NatalizumabLevel | None:
    if est.starting_level is not None:
        return est.starting_level
    return max(est.levels_used, key=lambda lv: lv.drawn_at, default=None)


def estimate_extension(est: PlexEstimate, ordered: int | None) -> dict[str, Any]:
    ext: dict[str, Any] = {"kind": "plex-estimate", "basis": est.basis, "conclusion": est.conclusion}
    latest = _latest_level(est)
    if est.basis == "measured" and latest is not None:
        lvl: dict[str, Any] = {"value": round(latest.value_ug_per_ml, 4)}
        if est.adjusted_level_ug_per_ml is not None:
            lvl["adjusted"] = round(est.adjusted_level_ug_per_ml, 4)
        lvl["unit"] = "ug/mL"
        lvl["date"] = fhir_datetime(latest.drawn_at)
        if latest.comparator:
            lvl["comparator"] = latest.comparator
        ext["latestLevel"] = lvl
    elif est.basis == "dosing-history" and est.adjusted_level_ug_per_ml is not None:
        ext["latestLevel"] = {"adjusted": round(est.adjusted_level_ug_per_ml, 4), "unit": "ug/mL"}
    ext["target"] = {"value": est.target_ug_per_ml, "unit": "ug/mL"}
    ext["sessionsCompleted"] = est.sessions_completed
    if est.basis != "none" and est.remaining is not None:
        r = est.remaining
        ext["remainingSessions"] = {"estimate": r.estimate, "low": r.low, "high": r.high}
    if ordered is not None:
        ext["orderedSessions"] = ordered
    if est.flags:
        ext["flags"] = list(est.flags)
    if est.unusable:
        ext["unusable"] = [{"kind": u.kind, "code": u.code or "unusable"} for u in est.unusable]
    return {EXTENSION_KEY: ext}


# why the estimate asks for a measurement instead of a count (engine flag -> summary clause)
_MEASURE_FIRST_WHY = (
    ("last-dose-unknown", "the last infusion date is unknown"),
    ("antibodies-no-level", "antibodies are on record but no usable level"),
    ("newer-unusable-result", "the latest natalizumab result could not be used"),
    ("projected-below-target", "a projection, not a measurement, reaches the target"),
    ("date-ambiguous", "the sample time is ambiguous"),
)


# data problems a clinician must see before acting on the count: the card is at least a warning
_WARNING_FLAGS = frozenset(
    {
        "antibody-level-discordance",
        "discordant-same-time",
        "date-ambiguous",
        "post-session-sample",
        "newer-unusable-result",
        "last-dose-unknown",
    }
)


def _measure_first_summary(est: PlexEstimate, no_level: str) -> str:
    why = [text for flag, text in _MEASURE_FIRST_WHY if flag in est.flags]
    if not why:
        return _fit(
            f"Measure serum natalizumab: {no_level.lower()} and no dosing history to estimate PLEX sessions",
            "Measure serum natalizumab: remaining PLEX sessions cannot be estimated",
        )
    return _fit(
        f"Measure serum natalizumab before deciding the PLEX course: {'; '.join(why)}",
        f"Measure serum natalizumab before deciding the PLEX course: {why[0]}",
        "Measure serum natalizumab before deciding the PLEX course",
    )


def _estimate_summary(est: PlexEstimate, labs_unread: bool = False) -> str:
    no_level = "No natalizumab level could be read" if labs_unread else "No natalizumab level on record"
    target = fmt_num(est.target_ug_per_ml)
    r = est.remaining
    latest = _latest_level(est)
    adj = est.adjusted_level_ug_per_ml
    if est.conclusion == "measure-first" or est.basis == "none" or r is None:
        return _measure_first_summary(est, no_level)
    rng = f"range {r.low}-{r.high}" if r.low != r.high else f"range {r.low}"
    sessions = "session" if r.estimate == 1 else "sessions"
    if est.basis == "dosing-history":
        now_txt = f" (about {fmt_num(adj)} µg/mL now)" if adj is not None else ""
        return _fit(
            f"{no_level}{now_txt}: about {r.estimate} more PLEX {sessions} to reach <{target} µg/mL ({rng}), from dosing history",
            f"No natalizumab level: about {r.estimate} more PLEX {sessions} to reach <{target} µg/mL ({rng}), from dosing history",
        )
    # measured
    if latest is None:  # the engine always names the level it used; degrade rather than fail if not
        return _fit(f"About {r.estimate} more PLEX {sessions} to reach natalizumab <{target} µg/mL ({rng})")
    lvl = _level_text(latest)
    adj_txt = fmt_num(adj) if adj is not None else lvl
    decayed = (
        adj is not None
        and latest.comparator is None  # a censored value is shown as censored, never as "about X"
        and latest.value_ug_per_ml > 0
        and abs(adj - latest.value_ug_per_ml) / latest.value_ug_per_ml > 0.1
    )
    if est.conclusion == "at-or-below-target":
        if decayed:
            return _fit(
                f"Natalizumab about {adj_txt} µg/mL now ({lvl} on {fmt_date(latest.drawn_at)}): below the <{target} µg/mL target, no more PLEX needed for clearance",
                f"Natalizumab about {adj_txt} µg/mL now: below the <{target} µg/mL target, no more PLEX needed for clearance",
            )
        return _fit(
            f"Natalizumab {lvl} µg/mL ({fmt_date(latest.drawn_at)}): below the <{target} µg/mL target, no more PLEX needed for drug clearance",
            f"Natalizumab {lvl} µg/mL: below the <{target} µg/mL target, no more PLEX needed for drug clearance",
        )
    if decayed:
        return _fit(
            f"Natalizumab about {adj_txt} µg/mL now ({lvl} on {fmt_date(latest.drawn_at)}): about {r.estimate} more PLEX {sessions} to reach <{target} µg/mL ({rng})",
            f"Natalizumab about {adj_txt} µg/mL now: about {r.estimate} more PLEX {sessions} to reach <{target} µg/mL ({rng})",
        )
    return _fit(
        f"Natalizumab {lvl} µg/mL: about {r.estimate} more PLEX {sessions} to reach <{target} µg/mL ({rng})",
        f"Natalizumab {lvl} µg/mL: ~{r.estimate} more PLEX {sessions} ({rng})",
    )


# notes whose content the card already shows in its own sections (plan, ordered course, assumptions,
# the not-used list and the decision-support sentence): shown once, not twice
_NOTES_SHOWN_ELSEWHERE = (
    "Re-measure serum natalizumab before session",
    "Measure serum natalizumab before the next session",
    "This estimate concerns drug clearance only",
    "The order is for ",
    "Patient-specific remaining fraction per session",
)
_NOTE_UNUSABLE = re.compile(r"^\d+ natalizumab result\(s\) (was|were) not used")
# unusable values the estimate card names besides the engine's screened levels
_ESTIMATE_UNUSABLE_KINDS = ("natalizumab antibody result", "PLEX procedure")


def _engine_notes(est: PlexEstimate) -> list[str]:
    return [n for n in est.notes if not n.startswith(_NOTES_SHOWN_ELSEWHERE) and not _NOTE_UNUSABLE.match(n)]


def _n_sessions(n: int, more: bool = True) -> str:
    return f"{n} {'more ' if more else ''}session{'' if n == 1 else 's'}"


def _remeasure_when(est: PlexEstimate) -> tuple[str, str] | None:
    """(verb, what) for the next natalizumab draw, or None when the card has nothing to ask."""
    if est.basis != "measured":
        return "measure", "serum natalizumab before the next session"
    if est.remeasure_at is None:
        return None
    around = f"around {fmt_date(est.remeasure_at)}"
    n = est.remeasure_after_session
    if not n:
        return "re-measure", f"a pre-session level before the next session ({around})"
    if est.sessions_completed:
        return "re-measure", f"a pre-session level after {_n_sessions(n)}, before the next one ({around})"
    return "re-measure", f"a pre-session level after session {n}, before session {n + 1} ({around})"


def _plan_md(est: PlexEstimate, order: PlexOrder) -> str:
    r = est.remaining
    target = fmt_num(est.target_ug_per_ml)
    remeasure = _remeasure_when(est)
    if est.conclusion == "measure-first" or est.basis == "none" or r is None:
        why = [text for flag, text in _MEASURE_FIRST_WHY if flag in est.flags]
        because = f" ({'; '.join(why)})" if why else ""
        return (
            f"**Plan:** Measure serum natalizumab before the next session: the record cannot support a "
            f"session count{because}. Do not shorten the course on this card's word."
        )
    if est.conclusion == "at-or-below-target":
        latest = _latest_level(est)
        now_txt = (
            f": natalizumab {_level_text(latest)} µg/mL on {fmt_date(latest.drawn_at)}"
            if latest is not None
            else ""
        )
        line = (
            f"**Plan:** No more sessions needed for drug clearance{now_txt}, below the <{target} µg/mL target"
        )
        return line + (f"; {' '.join(remeasure)}." if remeasure and est.basis != "measured" else ".")
    rng = f"range {r.low}-{r.high}" if r.low != r.high else f"range {r.low}"
    head = (
        "**Plan (from dosing history, not a measured level):**"
        if est.basis == "dosing-history"
        else "**Plan:**"
    )
    line = (
        f"{head} About {_n_sessions(r.estimate)} ({rng}) at {fmt_num(order.plan.plasma_volumes_per_session)} "
        f"plasma volumes every {fmt_num(order.plan.interval_days)} days; target <{target} µg/mL"
    )
    if est.target_expected_at:
        line += f" expected around {fmt_date(est.target_expected_at)}"
    return line + (f"; {' '.join(remeasure)}." if remeasure else ".")


def _ordered_md(est: PlexEstimate, order: PlexOrder, ordered: int | None, update_offered: bool) -> str:
    what = md_escape(order.text) if order.text else "Plasma exchange"
    r = est.remaining
    if ordered is None:
        return f"**Ordered course:** {what}, no session count given."
    line = f"**Ordered course:** {what}, {_n_sessions(ordered, more=False)}"
    if r is None or est.basis == "none":
        return line + "."
    if ordered < r.estimate:
        line += f", shorter than the estimate ({r.estimate})"
        return line + (f": a suggestion below updates the order to {r.estimate}." if update_offered else ".")
    if est.conclusion == "at-or-below-target" and ordered > 0:
        return (
            line
            + ": a serum level already confirms the target; consider shortening or cancelling the course."
        )
    if ordered > r.high:
        return (
            line
            + f", more than the estimate's high end ({r.high}): consider stopping once a level confirms the target."
        )
    return line + ", covers the estimate."


def _levels_table(est: PlexEstimate) -> str | None:
    if not est.levels_used and est.adjusted_level_ug_per_ml is None:
        return None
    rows = ["| Value | Unit | Date | Kind |", "|---|---|---|---|"]
    for lv in sorted(est.levels_used, key=lambda x: x.drawn_at):
        kind = f"measured, {lv.specimen if lv.specimen != 'unspecified' else 'specimen not stated (taken as serum)'}"
        if lv.qualitative:
            kind += f" ('{md_escape(lv.qualitative)}', below the assay limit)"
        elif lv.reported_value is not None and md_escape(lv.reported_unit) not in ("ug/mL", "µg/mL"):
            kind += f" (reported {fmt_num(lv.reported_value)} {md_escape(lv.reported_unit)})"
        value = md_escape(lv.comparator or "") + fmt_num(lv.value_ug_per_ml)
        rows.append(f"| {value} | µg/mL | {fmt_date(lv.drawn_at)} | {kind} |")
    latest = _latest_level(est)
    censored = latest is not None and latest.comparator is not None and est.basis == "measured"
    if est.adjusted_level_ug_per_ml is not None and not censored:
        how = (
            "estimated from dosing history (not measured)"
            if est.basis == "dosing-history"
            else "adjusted to now (decay, sessions since)"
        )
        rows.append(f"| {fmt_num(est.adjusted_level_ug_per_ml)} | µg/mL | now | {how} |")
    return "**Levels used**\n\n" + "\n".join(rows)


def _assumptions_md(est: PlexEstimate, order: PlexOrder) -> str:
    def pct(x: float) -> str:
        return f"{round(x * 100)}%"

    remains = est.removal_fraction
    removal = f"each session removes about {pct(1 - remains)} of the level ({pct(remains)} remains"
    if est.removal_fraction_fitted is not None:
        clipped = ", clipped to the plausible range" if "fit-clipped" in est.flags else ""
        removal += (
            f": fitted to this patient's levels{clipped}; population value {pct(est.removal_fraction_population)}"
            " remains)"
        )
    else:
        removal += ": population value, calibrated on Khatri 2009)"
    return (
        "**Assumptions:** "
        f"{fmt_num(order.plan.plasma_volumes_per_session)} plasma volumes exchanged per session, "
        f"one session every {fmt_num(order.plan.interval_days)} days; "
        f"natalizumab half-life {fmt_num(est.half_life_days)} days; {removal}."
    )


def _estimate_detail(
    est: PlexEstimate,
    load: LoadResult,
    order: PlexOrder,
    ordered: int | None,
    update_offered: bool = False,
) -> str:
    parts: list[str] = [_plan_md(est, order), _ordered_md(est, order, ordered, update_offered)]
    table = _levels_table(est)
    if table:
        parts.append(table)
    parts.append(f"**PLEX sessions done:** {est.sessions_completed}")
    parts.append(_assumptions_md(est, order))
    notes = _engine_notes(est)
    if notes:
        parts.append("**Notes**\n\n" + "\n".join(f"- {md_escape(n)}" for n in notes))
    other = [u for u in load.facts.unusable if u.kind in _ESTIMATE_UNUSABLE_KINDS]
    problems = _problems_md(load, (*est.unusable, *other))
    if problems:
        parts.append("**Could not be used or read**\n\n" + problems)
    remeasure = _remeasure_when(est)
    if remeasure:
        parts.append(
            f"**{remeasure[0].capitalize()}:** {remeasure[1]}; adjust the course to the measured level "
            "(same laboratory and assay for serial values)."
        )
    parts.append("**Sources**\n\n" + _sources[(*est.references, LANDI_2017)][0])
    parts.append(DISCLAIMER)
    return "\n\n".join(parts)


def estimate_card(
    est: PlexEstimate,
    load: LoadResult,
    order: PlexOrder,
    settings: Any,
    now: datetime,
    patient_id: str,
    chart_url: str | None = None,
) -> Card:
    ordered = order.plan.ordered_sessions if order.plan.ordered_sessions is not None else est.ordered_sessions
    # suggestions as plain values, validated with the card (see dmt_card)
    suggestions: list[dict[str, Any]] = []
    if est.remeasure_at is not None or est.basis != "measured":
        at = est.remeasure_at or now
        after = est.remeasure_after_session if est.remeasure_at else None
        resource = level_request(patient_id, at, after, settings, completed=est.sessions_completed)
        if after:
            when = f"after {_n_sessions(after)}" if est.sessions_completed else f"after session {after}"
            when += f" (around {fmt_date(at)})"
        elif est.remeasure_at:
            when = f"before the next session (around {fmt_date(at)})"
        else:
            when = "now, before the next session"
        suggestions.append(
            {
                "label": f"Order a natalizumab serum level {when}",
                "isRecommended": True,
                "actions": [
                    {"type": "create", "description": f"Draft order: {LEVEL_TEXT}", "resource": resource}
                ],
            }
        )
    r = est.remaining
    update_offered = False
    if r is not None and est.basis != "none" and ordered is not None and ordered < r.estimate:
        updated = course_update(order, r.estimate)
        if updated is not None:
            source = " from dosing history" if est.basis == "dosing-history" else ""
            suggestions.append(
                {
                    "label": f"Set the PLEX course to {r.estimate} sessions (ordered {ordered}; estimate{source} "
                    f"{r.estimate}, range {r.low}-{r.high})",
                    "actions": [
                        {
                            "type": "update",
                            "description": f"Set the draft PLEX order's session count to {r.estimate}",
                            "resource": updated,
                        }
                    ],
                }
            )
            update_offered = True
    warn = (
        est.basis == "none"
        or est.conclusion == "measure-first"
        or bool(_WARNING_FLAGS & set(est.flags))
        or (r is not None and ordered is not None and ordered < r.estimate)
    )
    link = chart_link(chart_url)
    uuids = _uuids(1 + len(suggestions))
    for suggestion, uuid in zip(suggestions, uuids[1:], strict=True):
        suggestion["uuid"] = uuid
    return Card.model_validate(
        {
            "uuid": uuids[0],
            "summary": _estimate_summary(est, labs_unread=load.sources.get("labs") in ("missing", "error")),
            "detail": _estimate_detail(est, load, order, ordered, update_offered),
            "indicator": "warning" if warn else "info",
            "source": _sources[(*est.references, LANDI_2017)][1],
            "suggestions": suggestions or None,
            "selectionBehavior": "any" if suggestions else None,
            "overrideReasons": list(OVERRIDE_REASONS),
            "links": [link] if link else None,
            "extension": estimate_extension(est, ordered),
        }
    )


_REASON = re.compile(r"^(?P<finding>[^()]+?) \((?P<detail>.*)\)$")


def _findings(reasons: Iterable[str]) -> dict[str, list[str]]:
    """'brainstem involvement (pons)', 'brainstem involvement (brain stem)' -> {'brainstem involvement':
    ['pons', 'brain stem']}: one finding per line, its sites together (spelling variants once)."""
    out: dict[str, list[str]] = {}
    for reason in reasons:
        m = _REASON.match(reason)
        finding, detail = (m["finding"], m["detail"]) if m else (reason, "")
        details = out.setdefault(finding, [])
        key = re.sub(r"[\s-]", "", detail.lower())
        if detail and key not in {re.sub(r"[\s-]", "", d.lower()) for d in details}:
            details.append(detail)
    return out


_FINDING_SHORT = {
    "brainstem involvement": "brainstem",
    "infratentorial involvement": "infratentorial",
    "widespread PML": "widespread",
    "contrast enhancement at diagnosis": "contrast enhancement",
}
_STEROID_EVIDENCE = {
    "evidence": "Evidence (observational)",
    "case report": "Case report",
    "expert practice": "Expert practice (no single source)",
    "expert opinion": "Expert opinion only",
}


def _steroid_lines(steroids: tuple[SteroidStatement, ...]) -> str:
    lines = []
    for s in steroids:
        level = _STEROID_EVIDENCE.get(s.evidence, md_escape(s.evidence))
        ref = f" ({_short_ref(s.reference)})" if s.reference is not None else ""
        lines.append(f"- **{level}:** {md_escape(s.text)}{ref}")
    return "**Steroids** (evidence level of each statement)\n\n" + "\n".join(lines)


# the steroid section per tuple of statements (module-level constants of the engine, as for _sources)
_steroids_md: Memo[tuple[SteroidStatement, ...], str] = Memo(_steroid_lines, _BY_REFS_MAX_ENTRIES)


def _iris_extension(iris: IrisAssessment) -> dict[str, Any]:
    ext: dict[str, Any] = {
        "kind": "iris",
        "risk": iris.risk,
        "severeIrisRisk": "raised" if iris.risk == "high" else "not-raised",
        "irisOnRecord": iris.iris_on_record,
    }
    if iris.reason_codes:
        ext["reasons"] = list(iris.reason_codes)
    if iris.watch_from is not None:
        ext["watchFrom"] = iris.watch_from.date().isoformat()  # a day: the card speaks in days
    return ext


def iris_card(iris: IrisAssessment, load: LoadResult) -> Card:
    findings = _findings(iris.reasons)
    names = [_FINDING_SHORT.get(f, f) for f in findings]
    window = f"from {fmt_date(iris.watch_from)}" if iris.watch_from else ""
    if iris.iris_on_record:
        summary = _fit(
            f"IRIS is on record: manage as PML-IRIS during washout ({', '.join(names)})" if names else "",
            "IRIS is on record: manage as PML-IRIS during natalizumab washout",
        )
    elif iris.risk == "high":
        summary = _fit(
            f"Raised risk of severe PML-IRIS ({', '.join(names)}): watch closely {window}"
            if window and names
            else "",
            f"Raised risk of severe PML-IRIS ({_join(names, 2)}): watch closely {window}"
            if window and names
            else "",
            f"Raised risk of severe PML-IRIS ({_join(names, 1)})" if names else "",
            f"Raised risk of severe PML-IRIS: watch closely {window}" if window else "",
            "Raised risk of severe PML-IRIS after natalizumab washout: watch closely",
        )
    else:
        summary = _fit(
            f"IRIS follows washout in most patients; no sign of raised severe-IRIS risk: watch {window}"
            if window
            else "",
            "IRIS follows washout in most patients; no sign of raised severe-IRIS risk: watch for it",
        )
    parts = []
    if not iris.pml_on_record:
        parts.append("_No PML diagnosis was found on record; the assessment assumes PML as ordered._")
    if findings:
        lines = [
            f"- {md_escape(f)}" + (f" ({md_escape('; '.join(d))})" if d else "") for f, d in findings.items()
        ]
        parts.append("**Risk of severe IRIS: raised.** Findings that raise it:\n\n" + "\n".join(lines))
    else:
        parts.append("**Risk of severe IRIS: not raised by the record.** IRIS itself is still expected.")
    if window or iris.watch_note:
        parts.append(
            f"**Watch:** {window + ', no end date' if window else 'see note'}"
            + (f". {md_escape(iris.watch_note)}" if iris.watch_note else "")
        )
    if iris.steroids:
        parts.append(_steroids_md[iris.steroids])
    problems = _problems_md(load)
    if problems:
        parts.append("**Could not be read**\n\n" + problems)
    refs, source = _sources[
        (*iris.references, *[s.reference for s in iris.steroids if s.reference is not None])
    ]
    if refs:
        parts.append("**Sources**\n\n" + refs)
    return Card(
        summary=summary,
        detail="\n\n".join(parts),
        indicator="warning" if iris.risk == "high" or iris.iris_on_record else "info",
        source=source,
        overrideReasons=list(OVERRIDE_REASONS),
        extension={EXTENSION_KEY: _iris_extension(iris)},
    )


def _conflict_name(m: Any) -> str:
    return (m.ingredient or m.text or "unnamed medication").lower()


def _join(names: Iterable[str], limit: int) -> str:
    names = list(names)
    if len(names) > limit:
        return ", ".join(names[:limit]) + f" +{len(names) - limit}"
    return ", ".join(names)


# display classes (clinical-reference.md §5.2): the card speaks in classes, the lists name ingredients
_CLASS_OF: dict[str, str] = {
    "interferon beta": "interferon beta",
    "interferon beta-1a": "interferon beta",
    "interferon beta-1b": "interferon beta",
    "peginterferon beta-1a": "interferon beta",
    "dimethyl fumarate": "fumarate",
    "diroximel fumarate": "fumarate",
    "monomethyl fumarate": "fumarate",
    "natalizumab": "restart contraindicated",
    "fingolimod": "S1P modulators",
    "siponimod": "S1P modulators",
    "ozanimod": "S1P modulators",
    "ponesimod": "S1P modulators",
    "ocrelizumab": "anti-CD20",
    "ofatumumab": "anti-CD20",
    "ublituximab": "anti-CD20",
    "rituximab": "anti-CD20",
    "alemtuzumab": "anti-CD52",
    "cladribine": "purine analogue",
    "mitoxantrone": "cytotoxic",
    "teriflunomide": "DHODH inhibitor",
    "daclizumab": "anti-CD25, withdrawn",
    "cyclophosphamide": "other immunosuppressants",
    "methotrexate": "other immunosuppressants",
    "azathioprine": "other immunosuppressants",
    "mycophenolic acid": "other immunosuppressants",
}


def _classes(names: Iterable[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for n in names:
        lowered = n.lower()
        out.setdefault(_CLASS_OF.get(lowered, lowered), []).append(n)
    return out


def _by_class_md(names: Iterable[str]) -> str:
    groups = []
    for cls, members in _classes(names).items():
        if members == [cls]:
            groups.append(cls)
        elif len(members) == 1:
            groups.append(f"{members[0]} ({cls})")
        else:
            groups.append(f"{cls} ({', '.join(members)})")
    return "; ".join(groups)


def _lower_all(names: tuple[str, ...]) -> tuple[tuple[str, ...], frozenset[str]]:
    """(the names lower-cased, in order; the set of them)."""
    lowered = tuple(n.lower() for n in names)
    return lowered, frozenset(lowered)


# Per tuple of names: the engine's allowed and avoid lists are the same on (almost) every call.
_CLASS_MEMO_MAX_ENTRIES = 256
_avoid_md: Memo[tuple[str, ...], str] = Memo(_by_class_md, _CLASS_MEMO_MAX_ENTRIES)
_class_names: Memo[tuple[str, ...], tuple[str, ...]] = Memo(
    lambda names: tuple(_classes(names)), _CLASS_MEMO_MAX_ENTRIES
)
_lowered: Memo[tuple[str, ...], tuple[tuple[str, ...], frozenset[str]]] = Memo(
    _lower_all, _CLASS_MEMO_MAX_ENTRIES
)


def _lymph_text(c: ConditionalDmt) -> str:
    lc = c.lymphocytes
    return f"lymphocytes {fmt_num(lc.value_10e9_per_l)} ×10⁹/L on {fmt_date(lc.drawn_at)}" if lc else ""


def _fumarate_summary(dmt: DmtAdvice) -> str:
    thr = fmt_num(LYMPHOCYTE_THRESHOLD_10E9_PER_L)
    if not dmt.conditional:
        return ""
    advised = [c for c in dmt.conditional if c.advised]
    counted = next((c.lymphocytes for c in dmt.conditional if c.lymphocytes is not None), None)
    if advised and counted is not None:
        return f"fumarate possible (lymphocytes {fmt_num(counted.value_10e9_per_l)} ×10⁹/L)"
    if counted is not None:
        return f"no fumarate (lymphocytes {fmt_num(counted.value_10e9_per_l)} ×10⁹/L, below {thr})"
    return f"fumarate only if lymphocytes ≥{thr} (none on record)"


def _summary_names(ms: Iterable[Any]) -> list[str] | None:
    """Engine ingredient names of the conflicting medications (never FHIR text); None if one is unknown."""
    names: list[str] = []
    for m in ms:
        name = m.ingredient or identify(tuple(m.codes), m.text or "")
        if not name:
            return None
        if name not in names:
            names.append(name)
    return names


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def dmt_suggestible(dmt: DmtAdvice) -> list[str]:
    """Ingredients a draft MedicationRequest may be offered for: never one of the avoid class."""
    avoid = _lowered[dmt.avoid][1]
    ok = set(dmt.allowed) | {c.ingredient for c in dmt.conditional if c.advised}
    out = [i for i in dmt.suggestible if i in ok and i.lower() not in avoid]
    assert not (set(out) & avoid), "an avoid-class drug must never be suggested"
    return out


def _dmt_summary(dmt: DmtAdvice, conflicts: list[str]) -> str:
    opts = _class_names[dmt.allowed]
    fum = _fumarate_summary(dmt)
    if conflicts:
        names = _summary_names(dmt.active_conflicts)
        verb = "conflicts" if names is not None and len(names) == 1 else "conflict"
        return _fit(
            f"Active {_and(names)} {verb} with PML recovery: stop; use {' or '.join(opts)}"
            if names and opts
            else "",
            f"Active {_join(names, 2)} {verb} with PML recovery: stop; use {_join(opts, 2)}"
            if names and opts
            else "",
            f"Active {_join(names, 2)} {verb} with PML recovery: review and stop" if names else "",
            "An active immunosuppressive medication conflicts with PML recovery: review and stop it",
        )
    return _fit(
        f"Rebound-safe options: {', '.join(opts)}; {fum}" if opts and fum else "",
        f"Rebound-safe options: {', '.join(opts)}" if opts else "",
        f"Rebound-safe options: {_join(opts, 2)}" if opts else "",
        "Next DMT after natalizumab PML: see allowed, conditional and avoided therapies",
    )


def _lymph_texts(conditional: tuple[ConditionalDmt, ...]) -> list[str]:
    """[_lymph_text(c) for c in conditional], each count formatted once (the fumarates share one)."""
    by_count: dict[int, str] = {}  # id(count): the counts are alive for the whole call
    texts = []
    for c in conditional:
        lc = c.lymphocytes
        if lc is None:
            texts.append("")
            continue
        text = by_count.get(id(lc))
        if text is None:
            text = by_count[id(lc)] = _lymph_text(c)
        texts.append(text)
    return texts


def _conditional_md(dmt: DmtAdvice, unusable_counts: int, lymph_texts: list[str] | None = None) -> str:
    """The conditional section; lymph_texts: _lymph_texts(dmt.conditional) when already at hand."""
    thr = fmt_num(LYMPHOCYTE_THRESHOLD_10E9_PER_L)
    groups: dict[tuple[bool, str], list[str]] = {}
    if lymph_texts is None:
        lymph_texts = _lymph_texts(dmt.conditional)
    for c, lc in zip(dmt.conditional, lymph_texts, strict=True):
        groups.setdefault((c.advised, lc), []).append(md_escape(c.ingredient))
    lines = []
    for (advised, lc), names in groups.items():
        if advised:
            why = f"may be used ({lc}, at or above {thr} ×10⁹/L); monitor the count"
        elif lc:
            why = f"not advised now ({lc}, below {thr} ×10⁹/L)"
        else:
            why = (
                f"not advised now (no absolute lymphocyte count on record; at least {thr} ×10⁹/L is required)"
            )
            if unusable_counts:
                why += f"; {unusable_counts} lymphocyte result{'s' if unusable_counts != 1 else ''} could not be used"
        lines.append(f"- {', '.join(names)}: {why}.")
    return "**Conditional**\n\n" + "\n".join(lines)


def dmt_card(dmt: DmtAdvice, load: LoadResult, patient_id: str, now: datetime) -> Card:
    conflicts = sorted({_conflict_name(m) for m in dmt.active_conflicts})
    parts = []
    if conflicts:
        lines = []
        for m in dmt.active_conflicts:
            extra = f", {md_escape(m.status)}" if m.status else ""
            extra += f", last {fmt_date(m.last_date)}" if m.last_date else ""
            lines.append(f"- **{md_escape(m.text or m.ingredient or 'medication')}**{extra}")
        parts.append("**Active conflicting medication: stop or review**\n\n" + "\n".join(lines))
    parts.append(
        "**Allowed (rebound-safe immunomodulators):** "
        + (", ".join(dmt.allowed) if dmt.allowed else "none on current data")
    )
    lymph_unusable = [u for u in load.facts.unusable if u.kind == "lymphocyte count"]
    lymph_texts = _lymph_texts(dmt.conditional)
    if dmt.conditional:
        parts.append(_conditional_md(dmt, len(lymph_unusable), lymph_texts))
    if dmt.avoid:
        parts.append("**Avoid (immunosuppressive):** " + _avoid_md[dmt.avoid])
    if dmt.rebound_from or dmt.rebound_note:
        win = ""
        if dmt.rebound_from and dmt.rebound_until:
            win = f"{fmt_date(dmt.rebound_from)} to {fmt_date(dmt.rebound_until)}"
            if dmt.rebound_peak:
                win += f" (peak around {fmt_date(dmt.rebound_peak)})"
        parts.append(
            f"**Rebound window:** {win or 'see note'}"
            + (f". {md_escape(dmt.rebound_note)}" if dmt.rebound_note else "")
        )
    problems = _problems_md(load, lymph_unusable)
    if problems:
        parts.append("**Could not be used or read**\n\n" + problems)
    refs, source = _sources[dmt.references]
    if refs:
        parts.append("**Sources**\n\n" + refs)
    # the lymphocyte text of each conditional ingredient (the last entry of an ingredient wins)
    lymph_of = dict(zip([c.ingredient for c in dmt.conditional], lymph_texts, strict=True))
    suggestible = dmt_suggestible(dmt)
    drafts = _medication_drafts(patient_id, suggestible, fhir_datetime(now))
    # Suggestions and their actions as plain values, validated with the card in one validator call
    # (not one per model): the same models, about 0.6 µs less per model
    suggestions: list[dict[str, Any]] = []
    for ing, draft in zip(suggestible, drafts, strict=True):
        lc = lymph_of.get(ing)
        why = f" ({lc})" if lc else ""
        suggestions.append(
            {
                "label": f"Draft {_an(ing)} {ing} order{why}",
                "actions": [
                    {
                        "type": "create",
                        "description": f"Draft MedicationRequest (proposal): {ing}",
                        "resource": draft,
                    }
                ],
            }
        )
    ext = {
        "kind": "dmt",
        "allowed": list(_lowered[dmt.allowed][0]),
        "conditional": [c.ingredient.lower() for c in dmt.conditional],
        "avoid": list(_lowered[dmt.avoid][0]),
        "activeConflicts": conflicts,
    }
    if dmt.blocked_by:
        ext["blockedBy"] = list(dmt.blocked_by)
    if dmt.conditional and dmt.conditional[0].reason_code:
        ext["fumarateReason"] = dmt.conditional[0].reason_code
    uuids = _uuids(1 + len(suggestions))
    for suggestion, uuid in zip(suggestions, uuids[1:], strict=True):
        suggestion["uuid"] = uuid
    return Card.model_validate(
        {
            "uuid": uuids[0],
            "summary": _dmt_summary(dmt, conflicts),
            "detail": "\n\n".join(parts),
            "indicator": "critical" if conflicts else "info",
            "source": source,
            "suggestions": suggestions or None,
            "selectionBehavior": "at-most-one" if suggestions else None,
            "overrideReasons": list(OVERRIDE_REASONS),
            "extension": {EXTENSION_KEY: ext},
        }
    )


def render(
    estimate: PlexEstimate,
    iris: IrisAssessment,
    dmt: DmtAdvice,
    load_result: LoadResult,
    order: PlexOrder,
    settings: Any,
    now: datetime,
    *,
    patient_id: str,
    chart_url: str | None = None,
) -> list[Card]:
    """The three cards, in the order a clinician reads them."""
    return [
        estimate_card(estimate, load_result, order, settings, now, patient_id, chart_url),
        iris_card(iris, load_result),
        dmt_card(dmt, load_result, patient_id, now),
    ]
