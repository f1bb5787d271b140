"""Engine results → CDS Hooks cards (pure: no I/O, `now` passed in).

Three cards for a PLEX order on a natalizumab-exposed patient: the remaining-PLEX estimate
(cards/estimate.py), the IRIS card (cards/iris.py) and the next-DMT card (cards/dmt.py). Each builder
returns a `CardDraft`; cards/layout.py orders them most severe first, cuts each detail to 1,000
characters with a link to the card's full page, and adds links[], source.topic and uuids. This module
holds what they share: text helpers, the FHIR resources suggestions carry, and `render`.

Every piece of text that did not originate in this package (FHIR text, and engine sentences, which may
quote FHIR values) goes through `md_escape` before it enters markdown. Every FHIR resource a suggestion
carries is validated with the fhir.resources R4B models (`validate_emitted`); the DMT suggestions never
name a drug of the avoid class or a fumarate.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from cds.engine.domain import (
    DmtAdvice,
    IrisAssessment,
    NatalizumabLevel,
    PlexEstimate,
    Reference,
    UnusableValue,
)
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
SHORT_DISCLAIMER = (
    "Drug clearance only: in natalizumab PML, PLEX did not reduce mortality or poor outcome "
    f"([Landi 2017]({LANDI_2017.url}))."
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
# Only what safety needs (issue 17: dates and parentheses stay plain): & < > as HTML entities (no raw
# HTML, no <autolink>), and backslash before what makes emphasis, code, links, images, strikethrough
# or a table cell. Backslash first and & before < >, so no replacement is replaced again.
_MD_REPLACEMENTS: tuple[tuple[str, str], ...] = (
    ("\\", "\\\\"),
    ("&", "&amp;"),
    ("<", "&lt;"),
    (">", "&gt;"),
    *((c, "\\" + c) for c in "`*_[]|~"),
    # GFM turns bare URLs into links: break the scheme and www. patterns (rendered unchanged)
    ("://", "\\://"),
    ("www.", "www\\."),
)
# at the start of the text, what would open a block (heading, list item, setext underline)
_BLOCK_START = re.compile(r"^(?:([#=+-])|(\d+)([.)]))")


# Engine sentences, steroid texts, drug names and units recur on every call: each is escaped once per
# worker. Bounded: at most 512 texts of up to 400 characters, cleared when full.
_ESCAPED_MAX_ENTRIES = 512
_ESCAPED_MAX_CHARS = 400


def _escape(text: str) -> str:
    s = _CONTROL_CHARS.sub("", text)
    for old, new in _MD_REPLACEMENTS:
        s = s.replace(old, new)
    s = " ".join(s.split())  # split(): the same whitespace as \s; no replacement adds whitespace
    return _BLOCK_START.sub(_escape_block_start, s, count=1)


def _escape_block_start(m: re.Match[str]) -> str:
    return "\\" + m[1] if m[1] else m[2] + "\\" + m[3]


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


def _join(names: Iterable[str], limit: int) -> str:
    names = list(names)
    if len(names) > limit:
        return ", ".join(names[:limit]) + f" +{len(names) - limit}"
    return ", ".join(names)


def _an(word: str) -> str:
    """English indefinite article for an ingredient name: 'an interferon…', 'a glatiramer…'."""
    return "an" if word[:1].lower() in "aeiou" else "a"


_uuids = new_uuids  # a card and its suggestions take their uuids from one os.urandom call


# ---------------------------------------------------------------- FHIR resources we emit


_MODEL_CACHE: dict[str, Any] = {}


def validate_emitted(resource: dict[str, Any]) -> dict[str, Any]:
    """Validate a resource we put in a suggestion against fhir.resources R4B; raise ValueError if invalid.

    In full once per shape (cds.fhir.r4b: the same resource up to a checked id, subject reference and
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
# differ only in the ingredient. Their shape keys (cds.fhir.r4b) mask the subject reference and
# authoredOn, so once the first draft's key exists (both values masked), every other draft's key equals
# the key of the same ingredient's draft for a stand-in patient and date-time, worked out once per
# ingredient instead of once per draft and request. A draft whose shape is not known valid is validated
# in full, exactly as validate_emitted does.
# Label regimens of the immunomodulators a draft may name (a suggested order states its regimen: some
# EHRs fill an unsigned order with their own defaults), in the order the DMT card prefers them
REGIMENS: dict[str, str] = {
    "glatiramer acetate": "20 mg subcutaneously once daily",
    "peginterferon beta-1a": "125 micrograms subcutaneously every 14 days",
    "interferon beta-1a": "30 micrograms intramuscularly once weekly",
    "interferon beta-1b": "250 micrograms subcutaneously every other day",
}
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
    resource: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "status": "draft",
        "intent": "proposal",
        "medicationCodeableConcept": concept,
        "subject": {"reference": f"Patient/{patient_id}"},
        "authoredOn": authored_on,
        "note": [
            {
                "text": "Draft: disease-modifying therapy after natalizumab PML. Start once the PLEX course is "
                "over and the treating team judges PML stable; it does not prevent rebound."
            }
        ],
    }
    regimen = REGIMENS.get(ingredient)
    if regimen:
        resource["dosageInstruction"] = [{"text": regimen}]
    return resource


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


from cds.hooks.cards.dmt import dmt_draft, dmt_suggestible
from cds.hooks.cards.estimate import estimate_draft
from cds.hooks.cards.iris import iris_draft
from cds.hooks.cards.layout import CardDraft, card_digest, finish, page_markdown


def drafts(
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
    records: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[CardDraft]:
    """The three cards before their detail is cut to size; `records`: raw resources by reference
    ("MedicationRequest/1"), for suggestions that act on what the record holds."""
    return [
        estimate_draft(estimate, load_result, order, settings, now, patient_id, chart_url),
        iris_draft(iris, load_result),
        dmt_draft(dmt, load_result, patient_id, now, records),
    ]


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
    records: Mapping[str, Mapping[str, Any]] | None = None,
    page_urls: Mapping[str, str] | None = None,
) -> list[Card]:
    """The three cards, most severe first; `page_urls`: the full page of each kind of card, if kept."""
    made = drafts(
        estimate,
        iris,
        dmt,
        load_result,
        order,
        settings,
        now,
        patient_id=patient_id,
        chart_url=chart_url,
        records=records,
    )
    return finish(made, page_urls or {}, _uuids)


__all__ = [
    "CardDraft",
    "card_digest",
    "course_update",
    "dmt_suggestible",
    "drafts",
    "finish",
    "fmt_date",
    "fmt_num",
    "md_escape",
    "page_markdown",
    "render",
    "validate_emitted",
]
