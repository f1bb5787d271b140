"""The next-DMT card: an active conflicting immunosuppressant to stop, the immunomodulators that may
follow (with their regimen and when they may start), fumarates as conditional, the avoid list."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from cds.engine.dmt import LYMPHOCYTE_THRESHOLD_10E9_PER_L
from cds.engine.domain import ConditionalDmt, DmtAdvice, Reference
from cds.engine.drugs import FUMARATES, identify
from cds.engine.memo import Memo
from cds.engine.references import FOX_2014
from cds.fhir_io import LoadResult
from cds.hooks.cards import (
    EXTENSION_KEY,
    OVERRIDE_REASONS,
    REGIMENS,
    _fit,
    _join,
    _medication_drafts,
    _problems_md,
    _refs_md,
    _short_ref,
    _source,
    _sources,
    _unique_refs,
    fhir_datetime,
    fmt_date,
    fmt_num,
    md_escape,
    validate_emitted,
)
from cds.hooks.cards.layout import CardDraft

log = logging.getLogger("cds.hooks.cards")


def _conflict_name(m: Any) -> str:
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
    code = dmt.conditional[0].reason_code
    if advised and counted is not None:
        return f"fumarate possible (lymphocytes {fmt_num(counted.value_10e9_per_l)} ×10⁹/L)"
    if code == "no-count-after-last-dose":  # a count exists, but from before the last natalizumab dose
        return "no fumarate yet (no lymphocyte count since the last natalizumab dose)"
    if code == "pregnancy":
        return "no fumarate (pregnancy)"
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
        f"Next DMT without PML risk: {' or '.join(opts)} (rebound still possible); {fum}"
        if opts and fum
        else "",
        f"Next DMT without PML risk: {' or '.join(opts)}; {fum}" if opts and fum else "",
        f"Next DMT without PML risk: {' or '.join(opts)} (rebound still possible)" if opts else "",
        f"Next DMT without PML risk: {_join(opts, 2)}" if opts else "",
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
    codes: dict[tuple[bool, str], str] = {}
    for c, lc in zip(dmt.conditional, lymph_texts, strict=True):
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
    assert not (set(out) & set(_lowered[dmt.avoid][1])), "an avoid-class drug must never be suggested"
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
    full: list[str] = []
    short: list[str] = []
    if conflicts:
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
        short.append(
            f"**Stop {md_escape(_and(list(names)))} now:** immunosuppressive, it conflicts with PML recovery; {how}."
        )
        full.append("**Active conflicting medication: stop**\n\n" + "\n".join(lines))
    allowed = ", ".join(dmt.allowed) if dmt.allowed else "none on current data"
    regimens = "; ".join(f"{i} {REGIMENS[i]}" for i in drafts_for)
    start = _start_md(dmt)
    short.append(
        f"**Next DMT (no added PML risk):** {' or '.join(_class_names[dmt.allowed]) or 'none on current data'}. "
        + start
    )
    if regimens:
        short.append(f"**Drafts offered:** {regimens}.")
    if dmt.blocked_by:
        blocked = f"**No DMT drafted:** {md_escape(', '.join(dmt.blocked_by))} on record; decide with the specialist."
        short.append(blocked)
        full.append(blocked)
    full.append(f"**Allowed (immunomodulators, no added PML risk):** {allowed}. {start}")
    if regimens:
        full.append(f"**Drafts offered (label regimens):** {regimens}.")
    lymph_unusable = [u for u in load.facts.unusable if u.kind == "lymphocyte count"]
    lymph_texts = _lymph_texts(dmt.conditional)
    if dmt.avoid:
        full.append("**Avoid (immunosuppressive):** " + _avoid_md[dmt.avoid])
        classes = [_SHORT_CLASS.get(c, c) for c in _class_names[dmt.avoid]]
        short.append("**Avoid (immunosuppressive):** " + ", ".join(classes) + ".")
    short.append(f"**Sources:** {_short_ref(O_CONNOR_2011)} and {_short_ref(FOX_2014)}.")
    if dmt.conditional:
        full.append(_conditional_md(dmt, len(lymph_unusable), lymph_texts))
        short.append(
            "**Fumarates:** "
            + _fumarate_summary(dmt)
            + "; they carry their own PML warning and are never drafted here."
        )
    if dmt.rebound_from or dmt.rebound_note:
        win = ""
        if dmt.rebound_from and dmt.rebound_until:
            win = f"{fmt_date(dmt.rebound_from)} to {fmt_date(dmt.rebound_until)}"
            if dmt.rebound_peak:
                win += f" (peak around {fmt_date(dmt.rebound_peak)})"
        full.append(
            f"**Rebound window:** {win or 'see note'}"
            + (f". {md_escape(dmt.rebound_note)}" if dmt.rebound_note else "")
            + f" Activity returned with or without another DMT ({_short_ref(O_CONNOR_2011)}; {_short_ref(FOX_2014)})."
        )
    problems = _problems_md(load, lymph_unusable)
    if problems:
        full.append("**Could not be used or read**\n\n" + problems)
        short.append("**Not used:** some values could not be used or read (listed on the full page).")
    refs = _unique_refs((*dmt.references, O_CONNOR_2011, FOX_2014))
    full.append("**Sources**\n\n" + _refs_md(refs))
    source = _sources[dmt.references][1] if dmt.references else _source((FOX_2014,))
    suggestions: list[dict[str, Any]] = [stop] if stop else []
    med_drafts = _medication_drafts(patient_id, drafts_for, fhir_datetime(now))
    for ing, draft in zip(drafts_for, med_drafts, strict=True):
        suggestions.append(
            {
                "label": f"Draft {ing} {REGIMENS[ing]} (start after PLEX, once PML is stable)",
                "actions": [
                    {
                        "type": "create",
                        "description": f"Draft MedicationRequest (proposal): {ing} {REGIMENS[ing]}",
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
    return CardDraft(
        kind="dmt",
        title="Next disease-modifying therapy after natalizumab PML",
        fields={
            "summary": _dmt_summary(dmt, conflicts),
            "indicator": "critical" if conflicts else "info",
            "source": source,
            "overrideReasons": list(OVERRIDE_REASONS),
            "extension": {EXTENSION_KEY: ext},
        },
        short=short,
        full=full,
        suggestions=suggestions,
    )
