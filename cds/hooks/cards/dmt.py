"""The next-DMT card: an active conflicting immunosuppressant to stop, the immunomodulators that may
follow (with their regimen and when they may start), fumarates as conditional, the avoid list."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from cds.engine.dmt import LYMPHOCYTE_THRESHOLD_10E9_PER_L
from cds.engine.domain import ConditionalDmt, DmtAdvice, MedicationUse, Reference
from cds.engine.drugs import FUMARATES, identify
from cds.engine.references import FOX_2014
from cds.fhir_io import LoadResult
from cds.hooks.cards.layout import EXTENSION_KEY, OVERRIDE_REASONS, CardDraft
from cds.hooks.cards.markdown import (
    card_source,
    fit_summary,
    fmt_date,
    fmt_num,
    join_names,
    md_escape,
    problems_md,
    refs_md,
    short_ref,
)
from cds.hooks.cards.suggestions import REGIMENS, medication_request, validate_emitted
from cds.hooks.cards.washout_notes import rebound_text

log = logging.getLogger("cds.hooks.cards")


def _conflict_name(m: MedicationUse) -> str:
    return (m.ingredient or m.text or "unnamed medication").lower()


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


def _class_names(names: tuple[str, ...]) -> tuple[str, ...]:
    """The display classes of `names`, in order of first mention."""
    return tuple(_classes(names))


def _lowered(names: tuple[str, ...]) -> list[str]:
    return [n.lower() for n in names]


def _lymph_text(c: ConditionalDmt) -> str:
    lc = c.lymphocytes
    return f"lymphocytes {fmt_num(lc.value_10e9_per_l)} ×10⁹/L on {fmt_date(lc.drawn_at)}" if lc else ""


def _fumarate_summary(dmt: DmtAdvice) -> str:
    thr = fmt_num(LYMPHOCYTE_THRESHOLD_10E9_PER_L)
    if not dmt.conditional:
        return ""
    advised = [c for c in dmt.conditional if c.advised]
    counted = next((c.lymphocytes for c in dmt.conditional if c.lymphocytes is not None), None)
    code = dmt.conditional[0].reason_code
    if advised and counted is not None:
        return f"fumarate possible (lymphocytes {fmt_num(counted.value_10e9_per_l)} ×10⁹/L)"
    if code == "no-count-after-last-dose":  # a count exists, but from before the last natalizumab dose
        return "no fumarate yet (no lymphocyte count since the last natalizumab dose)"
    if code == "count-too-old":
        return "no fumarate yet (the last lymphocyte count is over 6 months old)"
    if code == "pregnancy":
        return "no fumarate (pregnancy)"
    if counted is not None:
        return f"no fumarate (lymphocytes {fmt_num(counted.value_10e9_per_l)} ×10⁹/L, below {thr})"
    return f"fumarate only if lymphocytes ≥{thr} (none on record)"


def _summary_names(ms: Iterable[MedicationUse]) -> list[str] | None:
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
    avoid = set(_lowered(dmt.avoid))
    ok = set(dmt.allowed) | {c.ingredient for c in dmt.conditional if c.advised}
    out = [i for i in dmt.suggestible if i in ok and i.lower() not in avoid]
    assert not (set(out) & avoid), "an avoid-class drug must never be suggested"
    return out


def _dmt_summary(dmt: DmtAdvice, conflicts: list[str]) -> str:
    opts = _class_names(dmt.allowed)
    fum = _fumarate_summary(dmt)
    if conflicts:
        names = _summary_names(dmt.active_conflicts)
        verb = "conflicts" if names is not None and len(names) == 1 else "conflict"
        return fit_summary(
            f"Active {_and(names)} {verb} with PML recovery: stop; use {' or '.join(opts)}"
            if names and opts
            else "",
            f"Active {join_names(names, 2)} {verb} with PML recovery: stop; use {join_names(opts, 2)}"
            if names and opts
            else "",
            f"Active {join_names(names, 2)} {verb} with PML recovery: review and stop" if names else "",
            "An active immunosuppressive medication conflicts with PML recovery: review and stop it",
        )
    return fit_summary(
        f"Next DMT without PML risk: {' or '.join(opts)} (rebound still possible); {fum}"
        if opts and fum
        else "",
        f"Next DMT without PML risk: {' or '.join(opts)}; {fum}" if opts and fum else "",
        f"Next DMT without PML risk: {' or '.join(opts)} (rebound still possible)" if opts else "",
        f"Next DMT without PML risk: {join_names(opts, 2)}" if opts else "",
        "Next DMT after natalizumab PML: see allowed, conditional and avoided therapies",
    )


def _conditional_md(dmt: DmtAdvice, unusable_counts: int) -> str:
    """The conditional section: the fumarates grouped by advice and lymphocyte count."""
    thr = fmt_num(LYMPHOCYTE_THRESHOLD_10E9_PER_L)
    groups: dict[tuple[bool, str], list[str]] = {}
    codes: dict[tuple[bool, str], str] = {}
    for c in dmt.conditional:
        lc = _lymph_text(c)
        groups.setdefault((c.advised, lc), []).append(md_escape(c.ingredient))
        codes.setdefault((c.advised, lc), c.reason_code)
    lines = []
    for (advised, lc), names in groups.items():
        code = codes[(advised, lc)]
        if not advised and code == "no-count-after-last-dose":
            why = (
                f"not advised now (the count on record{' (' + lc + ')' if lc else ''} is from before the last "
                f"natalizumab dose; a new count of at least {thr} ×10⁹/L is required)"
            )
        elif not advised and code == "count-too-old":
            why = (
                f"not advised now (the count on record{' (' + lc + ')' if lc else ''} is over 6 months old; "
                f"a new count of at least {thr} ×10⁹/L is required)"
            )
        elif not advised and code == "pregnancy":
            why = "not advised now (pregnancy)"
        elif advised:
            why = (
                f"possible ({lc}, at or above {thr} ×10⁹/L), with their own PML warning: monitor the count; "
                "never drafted here"
            )
        elif lc:
            why = f"not advised now ({lc}, below {thr} ×10⁹/L; fumarates carry their own PML warning)"
        else:
            why = (
                f"not advised now (no absolute lymphocyte count on record; at least {thr} ×10⁹/L is required)"
            )
            if unusable_counts:
                why += f"; {unusable_counts} lymphocyte result{'s' if unusable_counts != 1 else ''} could not be used"
        lines.append(f"- {', '.join(names)}: {why}.")
    return "**Conditional**\n\n" + "\n".join(lines)


# the avoid classes as the short detail names them (the full page lists every ingredient)
_SHORT_CLASS = {"restart contraindicated": "natalizumab restart", "anti-CD25, withdrawn": "daclizumab"}
START_TEXT = (
    "Start once the PLEX course is over and the treating team judges PML stable; it does not prevent rebound."
)
O_CONNOR_2011 = Reference(
    citation="O'Connor PW et al. Neurology 2011 (disease activity returned with or without another DMT)",
    url="https://multiple-sclerosis-research.blogspot.com/2011/05/disease-activity-return-during.html",
)
_ACTIVE_ORDER_STATUSES = ("active", "on-hold", "draft")


def draftable(dmt: DmtAdvice, limit: int) -> list[str]:
    """Immunomodulators a draft order may name: allowed, with a label regimen, never a fumarate or an
    avoid-class drug (clarifications.md: fumarates carry their own PML warning, never drafted)."""
    ok = set(dmt_suggestible(dmt)) - set(FUMARATES) - {c.ingredient for c in dmt.conditional}
    out = [i for i in REGIMENS if i in ok][:limit]
    assert not (set(out) & set(_lowered(dmt.avoid))), "an avoid-class drug must never be suggested"
    return out


def stop_request(resource: Mapping[str, Any]) -> dict[str, Any] | None:
    """The active MedicationRequest with status `stopped` (whole resource, as `update` needs), or None
    when the record does not allow it (no id, not active, or not valid R4B once changed)."""
    if resource.get("resourceType") != "MedicationRequest" or not resource.get("id"):
        return None
    if resource.get("status") not in _ACTIVE_ORDER_STATUSES:
        return None
    res = copy.deepcopy(dict(resource))
    res["status"] = "stopped"
    res["statusReason"] = {"text": "Stopped: conflicts with recovery from natalizumab-associated PML"}
    try:
        return validate_emitted(res)
    except ValueError:
        log.warning("active MedicationRequest is not valid R4B; no stop suggestion")
        return None


def _stop_suggestion(dmt: DmtAdvice, records: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
    actions = []
    names: list[str] = []
    for m in dmt.active_conflicts:
        record = records.get(m.source) if m.source.startswith("MedicationRequest/") else None
        stopped = stop_request(record) if record is not None else None
        if stopped is None:
            continue
        name = m.ingredient or "the conflicting medication"
        if name not in names:
            names.append(name)
        actions.append(
            {"type": "update", "description": f"Set the active {name} order to stopped", "resource": stopped}
        )
    if not actions:
        return None
    return {
        "label": f"Stop {_and(names)} now (set the active order{'s' if len(actions) > 1 else ''} to stopped)",
        "isRecommended": True,
        "actions": actions,
    }


def _start_md(dmt: DmtAdvice) -> str:
    when = START_TEXT
    if dmt.rebound_from:
        when = when.removesuffix(".") + f" (rebound window from {fmt_date(dmt.rebound_from)}"
        if dmt.rebound_peak:
            when += f", peak around {fmt_date(dmt.rebound_peak)}"
        when += ")."
    return when


def _conflicts_md(dmt: DmtAdvice, conflicts: list[str], stop: dict[str, Any] | None) -> tuple[str, str]:
    """(the detail's line, the full page's section) about the active conflicting medications."""
    lines = []
    for m in dmt.active_conflicts:
        extra = f", {md_escape(m.status)}" if m.status else ""
        extra += f", last {fmt_date(m.last_date)}" if m.last_date else ""
        lines.append(f"- **{md_escape(m.text or m.ingredient or 'medication')}**{extra}")
    names = _summary_names(dmt.active_conflicts) or conflicts
    how = (
        "a suggestion sets its active order to stopped"
        if stop
        else "no active order in the record to update: stop it in the medication list"
    )
    short = f"**Stop {md_escape(_and(list(names)))} now:** immunosuppressive, it conflicts with PML recovery; {how}."
    return short, "**Active conflicting medication: stop**\n\n" + "\n".join(lines)


def _rebound_md(dmt: DmtAdvice) -> str:
    win = ""
    if dmt.rebound_from and dmt.rebound_until:
        win = f"{fmt_date(dmt.rebound_from)} to {fmt_date(dmt.rebound_until)}"
        if dmt.rebound_peak:
            win += f" (peak around {fmt_date(dmt.rebound_peak)})"
    return (
        f"**Rebound window:** {win or 'see note'}"
        + (f". {md_escape(note)}" if (note := rebound_text(dmt.rebound_notes)) else "")
        + f" Activity returned with or without another DMT ({short_ref(O_CONNOR_2011)}; {short_ref(FOX_2014)})."
    )


def _therapy_parts(dmt: DmtAdvice, drafts_for: list[str], load: LoadResult) -> tuple[list[str], list[str]]:
    """(detail parts, full page sections) about what may follow: allowed, drafts, avoid, conditional."""
    allowed = ", ".join(dmt.allowed) if dmt.allowed else "none on current data"
    regimens = "; ".join(f"{i} {REGIMENS[i]}" for i in drafts_for)
    start = _start_md(dmt)
    classes = " or ".join(_class_names(dmt.allowed)) or "none on current data"
    short = [f"**Next DMT (no added PML risk):** {classes}. " + start]
    full: list[str] = []
    if regimens:
        short.append(f"**Drafts offered:** {regimens}.")
    if dmt.blocked_by:
        blocked = f"**No DMT drafted:** {md_escape(', '.join(dmt.blocked_by))} on record; decide with the specialist."
        short.append(blocked)
        full.append(blocked)
    full.append(f"**Allowed (immunomodulators, no added PML risk):** {allowed}. {start}")
    if regimens:
        full.append(f"**Drafts offered (label regimens):** {regimens}.")
    if dmt.avoid:
        full.append("**Avoid (immunosuppressive):** " + _by_class_md(dmt.avoid))
        avoid = [_SHORT_CLASS.get(c, c) for c in _class_names(dmt.avoid)]
        short.append("**Avoid (immunosuppressive):** " + ", ".join(avoid) + ".")
    short.append(f"**Sources:** {short_ref(O_CONNOR_2011)} and {short_ref(FOX_2014)}.")
    if dmt.conditional:
        lymph_unusable = [u for u in load.facts.unusable if u.kind == "lymphocyte count"]
        full.append(_conditional_md(dmt, len(lymph_unusable)))
        short.append(
            "**Fumarates:** "
            + _fumarate_summary(dmt)
            + "; they carry their own PML warning and are never drafted here."
        )
    return short, full


def _draft_suggestions(patient_id: str, drafts_for: list[str], now: datetime) -> list[dict[str, Any]]:
    return [
        {
            "label": f"Draft {ing} {REGIMENS[ing]} (start after PLEX, once PML is stable)",
            "actions": [
                {
                    "type": "create",
                    "description": f"Draft MedicationRequest (proposal): {ing} {REGIMENS[ing]}",
                    "resource": medication_request(patient_id, ing, now),
                }
            ],
        }
        for ing in drafts_for
    ]


def _dmt_extension(dmt: DmtAdvice, conflicts: list[str]) -> dict[str, Any]:
    ext: dict[str, Any] = {
        "kind": "dmt",
        "allowed": _lowered(dmt.allowed),
        "conditional": [c.ingredient.lower() for c in dmt.conditional],
        "avoid": _lowered(dmt.avoid),
        "activeConflicts": conflicts,
    }
    if dmt.blocked_by:
        ext["blockedBy"] = list(dmt.blocked_by)
    if dmt.conditional and dmt.conditional[0].reason_code:
        ext["fumarateReason"] = dmt.conditional[0].reason_code
    return {EXTENSION_KEY: ext}


def dmt_draft(
    dmt: DmtAdvice,
    load: LoadResult,
    patient_id: str,
    now: datetime,
    records: Mapping[str, Mapping[str, Any]] | None = None,
) -> CardDraft:
    conflicts = sorted({_conflict_name(m) for m in dmt.active_conflicts})
    stop = _stop_suggestion(dmt, records or {})
    drafts_for = draftable(dmt, 2)  # with the stop suggestion, 3 in all
    short: list[str] = []
    full: list[str] = []
    if conflicts:
        conflict_short, conflict_full = _conflicts_md(dmt, conflicts, stop)
        short.append(conflict_short)
        full.append(conflict_full)
    therapy_short, therapy_full = _therapy_parts(dmt, drafts_for, load)
    short += therapy_short
    full += therapy_full
    if dmt.rebound_from or dmt.rebound_notes:
        full.append(_rebound_md(dmt))
    lymph_unusable = [u for u in load.facts.unusable if u.kind == "lymphocyte count"]
    problems = problems_md(load, lymph_unusable)
    if problems:
        full.append("**Could not be used or read**\n\n" + problems)
        short.append("**Not used:** some values could not be used or read (listed on the full page).")
    full.append("**Sources**\n\n" + refs_md((*dmt.references, O_CONNOR_2011, FOX_2014)))
    suggestions = ([stop] if stop else []) + _draft_suggestions(patient_id, drafts_for, now)
    return CardDraft(
        kind="dmt",
        title="Next disease-modifying therapy after natalizumab PML",
        fields={
            "summary": _dmt_summary(dmt, conflicts),
            "indicator": "critical" if conflicts else "info",
            "source": card_source(dmt.references or (FOX_2014,)),
            "overrideReasons": list(OVERRIDE_REASONS),
            "extension": _dmt_extension(dmt, conflicts),
        },
        short=short,
        full=full,
        suggestions=suggestions,
    )
