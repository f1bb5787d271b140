"""The remaining-PLEX card: sessions to the target, the ordered course, the next level to draw."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cds.engine.domain import NatalizumabLevel, PlexEstimate, SessionRange, UnusableValue
from cds.engine.references import LANDI_2017, TAN_2011
from cds.fhir.orders import PlexOrder
from cds.fhir_io import LoadResult
from cds.hooks.cards.estimate_notes import notes_shown
from cds.hooks.cards.layout import EXTENSION_KEY, OVERRIDE_REASONS, CardDraft
from cds.hooks.cards.markdown import (
    card_source,
    fhir_datetime,
    fit_summary,
    fmt_date,
    fmt_num,
    level_text,
    md_escape,
    problems_md,
    refs_md,
    short_ref,
    unique_refs,
)
from cds.hooks.cards.suggestions import LEVEL_TEXT, course_update, level_request
from cds.hooks.models import Link

SHORT_DISCLAIMER = (
    "Drug clearance only: in natalizumab PML, PLEX did not reduce mortality or poor outcome "
    f"([Landi 2017]({LANDI_2017.url}))."
)
DISCLAIMER = (
    "This is decision support about **drug clearance**, not proof of clinical benefit: in natalizumab-"
    "associated PML, PLEX did not reduce mortality or poor outcome ([Landi 2017]"
    f"({LANDI_2017.url}), Class III)."
)


def chart_link(url: str | None) -> Link | None:
    """The estimate card's link to the projected-level chart (absolute URL with an opaque id, no PHI).

    The route makes the URL (cds.views.chart_links.keep_chart_link) when the link store keeps one; None otherwise.
    """
    if not url:
        return None
    return Link(label="Projected natalizumab level chart", url=url, type="absolute")


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
        return fit_summary(
            f"Measure serum natalizumab: {no_level.lower()} and no dosing history to estimate PLEX sessions",
            "Measure serum natalizumab: remaining PLEX sessions cannot be estimated",
        )
    return fit_summary(
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
    rng = f" (range {r.low}-{r.high})" if r.low != r.high else ""
    sessions = "session" if r.estimate == 1 else "sessions"
    if est.basis == "dosing-history":
        now_txt = f"; dosing history suggests about {fmt_num(adj)} µg/mL now" if adj is not None else ""
        return fit_summary(
            f"{no_level}{now_txt}: about {r.estimate} more PLEX {sessions} to reach <{target} µg/mL{rng}, from dosing history",
            f"No natalizumab level: about {r.estimate} more PLEX {sessions} to reach <{target} µg/mL{rng}, from dosing history",
        )
    # measured
    if latest is None:  # the engine always names the level it used; degrade rather than fail if not
        return fit_summary(
            f"About {r.estimate} more PLEX {sessions} to reach natalizumab <{target} µg/mL{rng}"
        )
    lvl = level_text(latest)
    adj_txt = fmt_num(adj) if adj is not None else lvl
    decayed = (
        adj is not None
        and latest.comparator is None  # a censored value is shown as censored, never as "about X"
        and latest.value_ug_per_ml > 0
        and abs(adj - latest.value_ug_per_ml) / latest.value_ug_per_ml > 0.1
    )
    if est.conclusion == "at-or-below-target":
        if decayed:
            return fit_summary(
                f"Natalizumab about {adj_txt} µg/mL now ({lvl} on {fmt_date(latest.drawn_at)}): below the <{target} µg/mL target, no more PLEX needed for clearance",
                f"Natalizumab about {adj_txt} µg/mL now: below the <{target} µg/mL target, no more PLEX needed for clearance",
            )
        return fit_summary(
            f"Natalizumab {lvl} µg/mL ({fmt_date(latest.drawn_at)}): below the <{target} µg/mL target, no more PLEX needed for drug clearance",
            f"Natalizumab {lvl} µg/mL: below the <{target} µg/mL target, no more PLEX needed for drug clearance",
        )
    if decayed:
        return fit_summary(
            f"Natalizumab about {adj_txt} µg/mL now ({lvl} on {fmt_date(latest.drawn_at)}): about {r.estimate} more PLEX {sessions} to reach <{target} µg/mL{rng}",
            f"Natalizumab about {adj_txt} µg/mL now: about {r.estimate} more PLEX {sessions} to reach <{target} µg/mL{rng}",
        )
    return fit_summary(
        f"Natalizumab {lvl} µg/mL: about {r.estimate} more PLEX {sessions} to reach <{target} µg/mL{rng}",
        f"Natalizumab {lvl} µg/mL: ~{r.estimate} more PLEX {sessions}{rng}",
    )


# unusable values the estimate card names besides the engine's screened levels
_ESTIMATE_UNUSABLE_KINDS = ("natalizumab antibody result", "PLEX procedure")


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
            f": natalizumab {level_text(latest)} µg/mL on {fmt_date(latest.drawn_at)}"
            if latest is not None
            else ""
        )
        line = (
            f"**Plan:** No more sessions needed for drug clearance{now_txt}, below the <{target} µg/mL target"
        )
        return line + (f"; {' '.join(remeasure)}." if remeasure and est.basis != "measured" else ".")
    rng = f" (range {r.low}-{r.high})" if r.low != r.high else ""
    head = (
        "**Plan (from dosing history, not a measured level):**"
        if est.basis == "dosing-history"
        else "**Plan:**"
    )
    line = (
        f"{head} About {_n_sessions(r.estimate)}{rng} at {fmt_num(order.plan.plasma_volumes_per_session)} "
        f"plasma volumes every {fmt_num(order.plan.interval_days)} days; target <{target} µg/mL"
    )
    if est.target_expected_at:
        line += f" expected around {fmt_date(est.target_expected_at)}"
    return line + (f"; {' '.join(remeasure)}." if remeasure else ".")


def _regimen(order: PlexOrder) -> str:
    """The PLEX regimen a suggested course states in its label (some EHRs fill defaults otherwise)."""
    return (
        f"{fmt_num(order.plan.plasma_volumes_per_session)} plasma volumes every "
        f"{fmt_num(order.plan.interval_days)} days"
    )


def _ordered_md(est: PlexEstimate, order: PlexOrder, ordered: int | None, action: str | None) -> str:
    """The ordered course against the estimate; `action` names the suggestion that acts on it, if any."""
    what = md_escape(order.text) if order.text else "Plasma exchange"
    r = est.remaining
    if ordered is None:
        line = f"**Ordered course:** {what}, no session count given"
        return line + (f": {action}." if action else ".")
    line = f"**Ordered course:** {what}, {_n_sessions(ordered, more=False)}"
    if r is None or est.basis == "none":
        return line + "."
    if est.conclusion == "at-or-below-target" and ordered > 0:
        line += ": a serum level already confirms the target"
        return line + (f"; {action}." if action else "; consider shortening or cancelling the course.")
    if ordered < r.estimate:
        line += f", shorter than the estimate ({r.estimate})"
        return line + (f": {action}." if action else ".")
    if ordered > r.high:
        line += f", more than the estimate's high end ({r.high})"
        if action:
            return line + f": {action}."
        return line + ": stop once a pre-session level confirms the target."
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


def _based_on_md(est: PlexEstimate) -> str | None:
    """The numbers the estimate rests on, in one line."""
    latest = _latest_level(est)
    bits = []
    if est.basis == "measured" and latest is not None:
        bits.append(f"level {level_text(latest)} µg/mL on {fmt_date(latest.drawn_at)}")
        if "post-session-sample" in est.flags:
            bits[-1] += (
                " (drawn soon after a session: corrected for re-equilibration; redraw it before the next session)"
            )
    adj = est.adjusted_level_ug_per_ml
    censored = latest is not None and latest.comparator is not None and est.basis == "measured"
    if adj is not None and not censored:  # a censored value is shown as censored, never as "about X"
        how = "from dosing history" if est.basis == "dosing-history" else "now"
        bits.append(f"about {fmt_num(adj)} µg/mL {how}")
    if est.basis == "none":
        return None
    bits.append(f"{est.sessions_completed} session{'' if est.sessions_completed == 1 else 's'} done")
    bits.append(f"each session leaves about {round(est.removal_fraction * 100)}%")
    bits.append(f"half-life {fmt_num(est.half_life_days)} days")
    return "**Based on:** " + "; ".join(bits) + "."


def _problems_count_md(load: LoadResult, unusable: tuple[UnusableValue, ...]) -> str | None:
    n = len(unusable) + len(set(load.problems)) + (1 if load.skipped else 0)
    if not n:
        return None
    return (
        f"**Not used:** {n} item{'' if n == 1 else 's'} could not be used or read (listed on the full page)."
    )


def _estimate_parts(
    est: PlexEstimate,
    load: LoadResult,
    order: PlexOrder,
    ordered: int | None,
    action: str | None,
) -> tuple[list[str], list[str]]:
    """(the detail's parts, most important first; the full page's sections)."""
    plan = _plan_md(est, order)
    ordered_line = _ordered_md(est, order, ordered, action)
    remeasure = _remeasure_when(est)
    remeasure_line = (
        f"**{remeasure[0].capitalize()}:** {remeasure[1]}; adjust the course to the measured level "
        "(same laboratory and assay for serial values)."
        if remeasure
        else None
    )
    other = tuple(u for u in load.facts.unusable if u.kind in _ESTIMATE_UNUSABLE_KINDS)
    unusable = (*est.unusable, *other)
    refs = unique_refs((*est.references, LANDI_2017))
    first = next((r for r in est.references if r.url), None)
    cited = " and ".join(short_ref(r) for r in (first, LANDI_2017) if r is not None)
    short = [
        plan,
        ordered_line,
        remeasure_line if remeasure_line and remeasure and remeasure[1] not in plan else "",
        _based_on_md(est) or "",
        _problems_count_md(load, unusable) or "",
        SHORT_DISCLAIMER,
        f"**Sources:** {cited}." if cited else "",
    ]
    full = [plan, ordered_line]
    table = _levels_table(est)
    if table:
        full.append(table)
    full.append(f"**PLEX sessions done:** {est.sessions_completed}")
    full.append(_assumptions_md(est, order))
    notes = notes_shown(est)
    if notes:
        full.append("**Notes**\n\n" + "\n".join(f"- {md_escape(n)}" for n in notes))
    problems = problems_md(load, unusable)
    if problems:
        full.append("**Could not be used or read**\n\n" + problems)
    if remeasure_line:
        full.append(remeasure_line)
    full.append("**Sources**\n\n" + refs_md(refs))
    full.append(DISCLAIMER)
    return short, full


def _level_suggestion(
    est: PlexEstimate, now: datetime, patient_id: str, coding: tuple[str, str] | None
) -> dict[str, Any] | None:
    if est.remeasure_at is None and est.basis == "measured":
        return None
    at = est.remeasure_at or now
    after = est.remeasure_after_session if est.remeasure_at else None
    resource = level_request(patient_id, at, after, coding, completed=est.sessions_completed)
    if after:
        when = f"after {_n_sessions(after)}" if est.sessions_completed else f"after session {after}"
        when += f" (around {fmt_date(at)})"
    elif est.remeasure_at:
        when = f"before the next session (around {fmt_date(at)})"
    else:
        when = "now, before the next session"
    return {
        "label": f"Order a natalizumab serum level {when}",
        "actions": [{"type": "create", "description": f"Draft order: {LEVEL_TEXT}", "resource": resource}],
    }


def _no_clearance_needed(est: PlexEstimate) -> bool:
    """At or below target: only ever concluded from a usable serum or plasma level after the last known
    dose (the engine's safety invariant, docs/safety.md H1)."""
    return est.conclusion == "at-or-below-target"


def _course_suggestion(
    est: PlexEstimate, order: PlexOrder, ordered: int | None
) -> tuple[dict[str, Any] | None, str | None]:
    """(a suggestion that sets, shortens or removes the draft PLEX order; the card's words for it)."""
    r = est.remaining
    if r is None or est.basis == "none":
        return None, None
    ref = order.reference if order.reference.startswith("ServiceRequest/") else None
    if _no_clearance_needed(est) and (ordered is None or ordered > 0) and ref and order.resource.get("id"):
        label = (
            "Cancel the draft PLEX order: natalizumab is below the target, no session is needed for clearance"
        )
        return (
            {
                "label": label,
                "isRecommended": True,
                "actions": [
                    {"type": "delete", "description": "Remove the draft PLEX order", "resourceId": ref}
                ],
            },
            "a suggestion removes the draft order",
        )
    if ordered is None or r.estimate == 0 or r.estimate <= ordered <= r.high:
        return None, None
    if ordered > r.high and (est.basis != "measured" or "lower-bound" in est.flags):
        # shortening rests on a measured level, never on a dosing-history projection or a lower bound
        return None, None
    updated = course_update(order, r.estimate)
    if updated is None:
        return None, None
    source = " from dosing history" if est.basis == "dosing-history" else ""
    verb = "Set" if ordered < r.estimate else "Shorten"
    regimen = _regimen(order)
    label = (
        f"{verb} the PLEX course to {r.estimate} sessions, {regimen} (ordered {ordered}; estimate{source} "
        f"{r.estimate}{_range(r)}). PLEX may bring IRIS sooner (Tan 2011)"
    )
    return (
        {
            "label": label,
            "actions": [
                {
                    "type": "update",
                    "description": f"Set the draft PLEX order's session count to {r.estimate} ({regimen})",
                    "resource": updated,
                }
            ],
        },
        (
            f"a suggestion sets it to {r.estimate} sessions, {regimen}; PLEX may bring IRIS sooner "
            f"({short_ref(TAN_2011)})"
        ),
    )


def _range(r: SessionRange) -> str:
    """', range 3-5' (nothing when low and high agree: 'range 3' reads badly)."""
    return f", range {r.low}-{r.high}" if r.low != r.high else ""


def estimate_draft(
    est: PlexEstimate,
    load: LoadResult,
    order: PlexOrder,
    now: datetime,
    patient_id: str,
    level_coding: tuple[str, str] | None = None,
    chart_url: str | None = None,
) -> CardDraft:
    ordered = order.plan.ordered_sessions if order.plan.ordered_sessions is not None else est.ordered_sessions
    course, action = _course_suggestion(est, order, ordered)
    level = _level_suggestion(est, now, patient_id, level_coding)
    suggestions = [s for s in (course, level) if s is not None]
    if suggestions and not any(s.get("isRecommended") for s in suggestions):
        (level or suggestions[0])["isRecommended"] = True
    r = est.remaining
    warn = (
        est.basis == "none"
        or est.conclusion == "measure-first"
        or bool(_WARNING_FLAGS & set(est.flags))
        or (r is not None and ordered is not None and ordered < r.estimate)
        or (course is not None and course["actions"][0]["type"] == "delete")
        or (course is not None and ordered is not None and r is not None and ordered > r.high)
    )
    short, full = _estimate_parts(est, load, order, ordered, action)
    link = chart_link(chart_url)
    return CardDraft(
        kind="plex-estimate",
        title="Remaining PLEX sessions for natalizumab clearance",
        fields={
            "summary": _estimate_summary(est, labs_unread=load.sources.get("labs") in ("missing", "error")),
            "indicator": "warning" if warn else "info",
            "source": card_source((*est.references, LANDI_2017)),
            "overrideReasons": list(OVERRIDE_REASONS),
            "extension": estimate_extension(est, ordered),
        },
        short=short,
        full=full,
        suggestions=suggestions,
        links=[link] if link else [],
    )
