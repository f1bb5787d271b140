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

from cds.engine.domain import (
    DmtAdvice,
    IrisAssessment,
    NatalizumabLevel,
    PlexEstimate,
    Reference,
)
from cds.fhir_io import LoadResult, PlexOrder
from cds.hooks.models import Action, Card, Coding, Link, Source, Suggestion

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

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-!|~>])")
_WS = re.compile(r"\s+")
_CTRL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def md_escape(text: object) -> str:
    """Make FHIR-sourced text inert in GitHub-flavoured markdown (and HTML): one line, no markup."""
    s = _CTRL.sub("", str(text))
    s = _WS.sub(" ", s).strip()
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", s)


def fmt_num(x: float) -> str:
    """25 → '25', 3.46 → '3.5', 0.456 → '0.46'."""
    ax = abs(x)
    if ax >= 10:
        s = f"{x:.0f}"
    elif ax >= 1:
        s = f"{x:.1f}"
    else:
        s = f"{x:.2f}"
    return s.rstrip("0").rstrip(".") if "." in s else s


def fmt_date(dt: datetime | None) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%d") if dt else "unknown date"


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


def _refs_md(refs: Iterable[Reference]) -> str:
    seen: set[str] = set()
    lines = []
    for r in refs:
        if r.citation in seen:
            continue
        seen.add(r.citation)
        lines.append(f"- [{r.citation}]({r.url})" if r.url else f"- {r.citation}")
    return "\n".join(lines)


def _source(refs: Iterable[Reference]) -> Source:
    url = next((r.url for r in refs if r.url.startswith("https://")), None)
    return Source(label=SOURCE_LABEL, url=url)


def _problems_md(load: LoadResult | None, unusable: Iterable[Any] = ()) -> str:
    lines = []
    for u in unusable:
        what = f"{u.kind}"
        if u.reported:
            what += f" {u.reported}"
        if u.at:
            what += f" ({fmt_date(u.at)})"
        lines.append(f"- {md_escape(what)}: {md_escape(u.reason)}")
    if load is not None:
        for p in load.problems:
            lines.append(f"- {md_escape(p)}")
        if load.skipped:
            lines.append(
                f"- {load.skipped} malformed FHIR entr{'y was' if load.skipped == 1 else 'ies were'} skipped"
            )
    return "\n".join(lines)


# ---------------------------------------------------------------- FHIR resources we emit


_MODEL_CACHE: dict[str, Any] = {}


def validate_emitted(resource: dict[str, Any]) -> dict[str, Any]:
    """Validate a resource we put in a suggestion against fhir.resources R4B; raise ValueError if invalid."""
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
    return resource


def level_request(patient_id: str, at: datetime, after_session: int | None, settings: Any) -> dict[str, Any]:
    code: dict[str, Any] = {"text": LEVEL_TEXT}
    codes = [c for c in (getattr(settings, "natalizumab_level_codes", None) or []) if "|" in c]
    if codes:
        system, value = codes[0].split("|", 1)
        code["coding"] = [{"system": system, "code": value, "display": LEVEL_TEXT}]
    when = f"after PLEX session {after_session}" if after_session else "before the next PLEX session"
    return validate_emitted(
        {
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
            "note": [
                {"text": f"Serum natalizumab level {when}, to check washout (PML-PLEX decision support)."}
            ],
        }
    )


def medication_request(patient_id: str, ingredient: str, now: datetime) -> dict[str, Any]:
    concept: dict[str, Any] = {"text": ingredient}
    if ingredient in RXCUI:
        concept["coding"] = [{"system": RXNORM, "code": RXCUI[ingredient], "display": ingredient}]
    return validate_emitted(
        {
            "resourceType": "MedicationRequest",
            "status": "draft",
            "intent": "proposal",
            "medicationCodeableConcept": concept,
            "subject": {"reference": f"Patient/{patient_id}"},
            "authoredOn": fhir_datetime(now),
            "note": [
                {"text": "Draft: disease-modifying therapy after natalizumab PML; timing per the DMT card."}
            ],
        }
    )


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
    ext: dict[str, Any] = {"kind": "plex-estimate", "basis": est.basis}
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
    return {EXTENSION_KEY: ext}


def _estimate_summary(est: PlexEstimate, labs_unread: bool = False) -> str:
    no_level = "No natalizumab level could be read" if labs_unread else "No natalizumab level on record"
    target = fmt_num(est.target_ug_per_ml)
    r = est.remaining
    latest = _latest_level(est)
    adj = est.adjusted_level_ug_per_ml
    if est.basis == "none" or r is None:
        return _fit(
            f"{no_level} and no dosing history: remaining PLEX sessions cannot be estimated; order a serum level",
            "No usable natalizumab level or dosing history: remaining PLEX sessions cannot be estimated; order a serum level",
            "Remaining PLEX sessions cannot be estimated: order a natalizumab serum level",
        )
    rng = f"range {r.low}-{r.high}" if r.low != r.high else f"range {r.low}"
    sessions = "session" if r.estimate == 1 else "sessions"
    if est.basis == "dosing-history":
        now_txt = f" (about {fmt_num(adj)} µg/mL now)" if adj is not None else ""
        if r.estimate == 0:
            return _fit(
                f"{no_level}; from dosing history likely below {target} µg/mL{now_txt}: measure to confirm",
                f"{no_level}; likely below {target} µg/mL from dosing history",
            )
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
        and latest.value_ug_per_ml > 0
        and abs(adj - latest.value_ug_per_ml) / latest.value_ug_per_ml > 0.1
    )
    if r.estimate == 0:
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


def _estimate_detail(est: PlexEstimate, load: LoadResult, order: PlexOrder, ordered: int | None) -> str:
    parts: list[str] = []
    if order.text:
        parts.append(f"**Order:** {md_escape(order.text)}")
    if est.levels_used or est.adjusted_level_ug_per_ml is not None:
        rows = ["| Date | Value | Unit | Kind |", "|---|---|---|---|"]
        for lv in sorted(est.levels_used, key=lambda x: x.drawn_at):
            kind = "measured"
            if lv.reported_value is not None and md_escape(lv.reported_unit) not in ("ug/mL", "µg/mL"):
                kind += f" (reported {fmt_num(lv.reported_value)} {md_escape(lv.reported_unit)})"
            rows.append(
                f"| {fmt_date(lv.drawn_at)} | {lv.comparator or ''}{fmt_num(lv.value_ug_per_ml)} | µg/mL | {kind} |"
            )
        if est.adjusted_level_ug_per_ml is not None:
            how = (
                "estimated from dosing history"
                if est.basis == "dosing-history"
                else "adjusted to now (decay, sessions since)"
            )
            rows.append(f"| now | {fmt_num(est.adjusted_level_ug_per_ml)} | µg/mL | {how} |")
        parts.append("**Levels used**\n\n" + "\n".join(rows))
    parts.append(f"**PLEX sessions done:** {est.sessions_completed}")
    r = est.remaining
    target = fmt_num(est.target_ug_per_ml)
    if r is not None and est.basis != "none":
        line = f"**Estimate:** about {r.estimate} more session{'s' if r.estimate != 1 else ''} (range {r.low}-{r.high}) to reach <{target} µg/mL"
        if est.target_expected_at:
            line += f", expected around {fmt_date(est.target_expected_at)}"
        parts.append(line + f" (basis: {est.basis.replace('-', ' ')}).")
        if ordered is not None:
            cmp = "shorter than" if ordered < r.estimate else "covers"
            parts.append(
                f"**Ordered course:** {ordered} session{'s' if ordered != 1 else ''}, {cmp} the estimate."
            )
    else:
        parts.append("**Estimate:** not possible without a natalizumab level or dosing history.")
    removal = (
        "fitted to this patient's levels" if est.removal_fraction_fitted is not None else "population value"
    )
    parts.append(
        "**Assumptions:** "
        f"{fmt_num(order.plan.plasma_volumes_per_session)} plasma volumes exchanged per session, "
        f"one session every {fmt_num(order.plan.interval_days)} days; natalizumab half-life {fmt_num(est.half_life_days)} days; "
        f"{round(est.removal_fraction * 100)}% of the level remains after each session ({removal}"
        + (
            f"; population {round(est.removal_fraction_population * 100)}%"
            if est.removal_fraction_fitted is not None
            else ""
        )
        + ")."
    )
    if est.remeasure_at is not None:
        after = f"after session {est.remeasure_after_session}, " if est.remeasure_after_session else ""
        parts.append(f"**Re-measure:** serum natalizumab {after}around {fmt_date(est.remeasure_at)}.")
    elif est.basis != "measured":
        parts.append("**Re-measure:** measure serum natalizumab before the next session.")
    if est.notes:
        parts.append("\n".join(f"- {md_escape(n)}" for n in est.notes))
    problems = _problems_md(load, est.unusable)
    if problems:
        parts.append("**Could not be used or read**\n\n" + problems)
    refs = _refs_md((*est.references, LANDI_2017))
    parts.append("**Sources**\n\n" + refs)
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
    suggestions: list[Suggestion] = []
    if est.remeasure_at is not None or est.basis != "measured":
        at = est.remeasure_at or now
        resource = level_request(
            patient_id, at, est.remeasure_after_session if est.remeasure_at else None, settings
        )
        when = (
            f"after session {est.remeasure_after_session}"
            if est.remeasure_at and est.remeasure_after_session
            else (f"on {fmt_date(at)}" if est.remeasure_at else "now")
        )
        suggestions.append(
            Suggestion(
                label=f"Order a natalizumab serum level {when}",
                isRecommended=True,
                actions=[Action(type="create", description=f"Draft order: {LEVEL_TEXT}", resource=resource)],
            )
        )
    r = est.remaining
    if r is not None and est.basis != "none" and ordered is not None and ordered < r.estimate:
        updated = course_update(order, r.estimate)
        if updated is not None:
            suggestions.append(
                Suggestion(
                    label=f"Set the PLEX course to {r.estimate} sessions (ordered: {ordered})",
                    actions=[
                        Action(
                            type="update",
                            description=f"Update the draft PLEX order to {r.estimate} sessions",
                            resource=updated,
                        )
                    ],
                )
            )
    warn = est.basis == "none" or (r is not None and ordered is not None and ordered < r.estimate)
    link = chart_link(chart_url)
    return Card(
        summary=_estimate_summary(est, labs_unread=load.sources.get("labs") in ("missing", "error")),
        detail=_estimate_detail(est, load, order, ordered),
        indicator="warning" if warn else "info",
        source=_source((*est.references, LANDI_2017)),
        suggestions=suggestions or None,
        selectionBehavior="any" if suggestions else None,
        overrideReasons=list(OVERRIDE_REASONS),
        links=[link] if link else None,
        extension=estimate_extension(est, ordered),
    )


def iris_card(iris: IrisAssessment, load: LoadResult) -> Card:
    first = iris.reasons[0] if iris.reasons else ""
    more = f" +{len(iris.reasons) - 1} more" if len(iris.reasons) > 1 else ""
    window = ""
    if iris.watch_from and iris.watch_until:
        window = f"{fmt_date(iris.watch_from)} to {fmt_date(iris.watch_until)}"
    if iris.risk == "high":
        summary = _fit(
            f"High PML-IRIS risk: {first}{more}; watch {window}" if window and first else "",
            f"High PML-IRIS risk: {first}{more}" if first else "",
            f"High PML-IRIS risk: watch closely {window}" if window else "",
            "High PML-IRIS risk after natalizumab washout: watch closely",
        )
    else:
        summary = _fit(
            f"PML-IRIS risk standard; watch for IRIS {window}" if window else "",
            "PML-IRIS risk standard; watch for IRIS after natalizumab washout",
        )
    parts = []
    if not iris.pml_on_record:
        parts.append("_No PML diagnosis was found on record; the assessment assumes PML as ordered._")
    parts.append(f"**Risk:** {iris.risk}")
    if iris.reasons:
        parts.append(
            "**Findings that raised the risk**\n\n" + "\n".join(f"- {md_escape(r)}" for r in iris.reasons)
        )
    if window or iris.watch_note:
        parts.append(
            f"**Watch window:** {window or 'see note'}"
            + (f". {md_escape(iris.watch_note)}" if iris.watch_note else "")
        )
    if iris.steroids:
        lines = []
        for s in iris.steroids:
            ref = f"[{s.reference.citation}]({s.reference.url})" if s.reference.url else s.reference.citation
            lines.append(f"- {md_escape(s.text)} (_{s.evidence}_; {ref})")
        parts.append("**Steroids**\n\n" + "\n".join(lines))
    problems = _problems_md(load)
    if problems:
        parts.append("**Could not be read**\n\n" + problems)
    refs = _refs_md((*iris.references, *(s.reference for s in iris.steroids)))
    if refs:
        parts.append("**Sources**\n\n" + refs)
    return Card(
        summary=summary,
        detail="\n\n".join(parts),
        indicator="warning" if iris.risk == "high" else "info",
        source=_source((*iris.references, *(s.reference for s in iris.steroids))),
        overrideReasons=list(OVERRIDE_REASONS),
        extension={EXTENSION_KEY: {"kind": "iris", "risk": iris.risk, "reasons": list(iris.reasons)}},
    )


def _conflict_name(m: Any) -> str:
    return (m.ingredient or m.text or "unnamed medication").lower()


def _join(names: Iterable[str], limit: int) -> str:
    names = list(names)
    if len(names) > limit:
        return ", ".join(names[:limit]) + f" +{len(names) - limit}"
    return ", ".join(names)


def dmt_suggestible(dmt: DmtAdvice) -> list[str]:
    """Ingredients a draft MedicationRequest may be offered for: never one of the avoid class."""
    avoid = {a.lower() for a in dmt.avoid}
    ok = set(dmt.allowed) | {c.ingredient for c in dmt.conditional if c.advised}
    out = [i for i in dmt.suggestible if i in ok and i.lower() not in avoid]
    assert not (set(out) & avoid), "an avoid-class drug must never be suggested"
    return out


def dmt_card(dmt: DmtAdvice, load: LoadResult, patient_id: str, now: datetime) -> Card:
    conflicts = sorted({_conflict_name(m) for m in dmt.active_conflicts})
    options = list(dmt.allowed) + [c.ingredient for c in dmt.conditional if c.advised]
    if conflicts:
        summary = _fit(
            f"Active {_join(conflicts, 2)} conflicts with PML recovery: review and stop; rebound-safe options: {_join(options, 2)}"
            if options
            else "",
            f"Active {_join(conflicts, 2)} conflicts with PML recovery: review and stop it",
            "An active immunosuppressive medication conflicts with PML recovery: review and stop it",
        )
    else:
        summary = _fit(
            f"Next DMT after natalizumab: {_join(options, 3)} considered rebound-safe; avoid {_join(dmt.avoid, 2)}"
            if options and dmt.avoid
            else "",
            f"Next DMT after natalizumab: {_join(options, 2)} considered rebound-safe" if options else "",
            "Next DMT after natalizumab PML: see allowed, conditional and avoided therapies",
        )
    parts = []
    if conflicts:
        lines = []
        for m in dmt.active_conflicts:
            extra = f", {md_escape(m.status)}" if m.status else ""
            extra += f", last {fmt_date(m.last_date)}" if m.last_date else ""
            lines.append(f"- **{md_escape(m.text or m.ingredient or 'medication')}**{extra}")
        parts.append("**Active conflicting medication**\n\n" + "\n".join(lines))
    parts.append("**Allowed:** " + (", ".join(dmt.allowed) if dmt.allowed else "none on current data"))
    if dmt.conditional:
        lines = []
        for c in dmt.conditional:
            if c.lymphocytes is not None:
                lc = f"lymphocytes {fmt_num(c.lymphocytes.value_10e9_per_l)} ×10⁹/L on {fmt_date(c.lymphocytes.drawn_at)}"
            else:
                lc = "no lymphocyte count on record"
            lines.append(
                f"- {md_escape(c.ingredient)}: {'may be used' if c.advised else 'not advised now'} ({lc}). {md_escape(c.reason)}"
            )
        parts.append("**Conditional**\n\n" + "\n".join(lines))
    if dmt.avoid:
        parts.append("**Avoid:** " + ", ".join(dmt.avoid))
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
    problems = _problems_md(load)
    if problems:
        parts.append("**Could not be read**\n\n" + problems)
    refs = _refs_md(dmt.references)
    if refs:
        parts.append("**Sources**\n\n" + refs)
    suggestions = [
        Suggestion(
            label=f"Draft a {ing} order",
            actions=[
                Action(
                    type="create",
                    description=f"Draft MedicationRequest: {ing}",
                    resource=medication_request(patient_id, ing, now),
                )
            ],
        )
        for ing in dmt_suggestible(dmt)
    ]
    ext = {
        "kind": "dmt",
        "allowed": [a.lower() for a in dmt.allowed],
        "conditional": [c.ingredient.lower() for c in dmt.conditional],
        "avoid": [a.lower() for a in dmt.avoid],
        "activeConflicts": conflicts,
    }
    return Card(
        summary=summary,
        detail="\n\n".join(parts),
        indicator="critical" if conflicts else "info",
        source=_source(dmt.references),
        suggestions=suggestions or None,
        selectionBehavior="at-most-one" if suggestions else None,
        overrideReasons=list(OVERRIDE_REASONS),
        extension={EXTENSION_KEY: ext},
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
