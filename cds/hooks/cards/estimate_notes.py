"""The estimate's notes in words: one sentence per engine Note code (cds.engine.remaining.NOTE_CODES).

The engine returns what the estimate rests on as codes and values; this module writes the sentences the
estimate card's full page lists under "Notes". Notes whose content the card shows in a section of its
own (the plan, the ordered course, the assumptions, the not-used list, the disclaimer) are not repeated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from cds.engine.domain import Note, NoteValue, PlexEstimate

__all__ = ["note_text", "notes_shown"]

# shown by the card in its own sections: the plan and re-measurement, the ordered course, the
# assumptions (fitted removal), the not-used list and the decision-support sentence
SHOWN_ELSEWHERE = frozenset(
    {
        "remeasure-after-session",
        "measure-before-next-session",
        "clearance-only",
        "ordered-course-short",
        "ordered-course-long",
        "fitted-removal",
        "unusable-values",
    }
)

Values = Mapping[str, NoteValue]


def _num(values: Values, key: str) -> float:
    value = values.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"note value {key!r} is not a number: {value!r}")
    return float(value)


def _int(values: Values, key: str) -> int:
    return round(_num(values, key))


def _text(values: Values, key: str) -> str:
    value = values.get(key)
    return value if isinstance(value, str) else ""


def _g(values: Values, key: str) -> str:
    return f"{_num(values, key):g}"


def _post_session(v: Values) -> str:
    return (
        f"The latest level was drawn {_num(v, 'hours'):.0f} h after a session ended, before re-equilibration: "
        f"the equilibrated level is about {_num(v, 'factor'):.1f} times higher after {_g(v, 'plasma_volumes')} "
        f"plasma volumes (range {_num(v, 'factor_low'):.1f}-{_num(v, 'factor_high'):.1f}). Redraw the level "
        "before the next session."
    )


def _decayed(v: Values) -> str:
    n = _int(v, "sessions_since")
    carried = f" through {n} session(s) since then and" if n else ""
    now_txt = (
        ""
        if v.get("level_now") is None  # a censored value stays censored: no "about X now" from a "<X"
        else f": about {_num(v, 'level_now'):.2g} µg/mL now "
        f"(range {_num(v, 'level_low'):.2g}-{_num(v, 'level_high'):.2g})"
    )
    return (
        f"The level from {_text(v, 'drawn_on')} was carried to now{carried} with natural decay "
        f"(half-life {_g(v, 'half_life')} days; the range uses {_g(v, 'half_life_short')}-"
        f"{_g(v, 'half_life_long')} days){now_txt}."
    )


def _below_limit(v: Values) -> str:
    words = f"'{_text(v, 'qualitative')}', " if _text(v, "qualitative") else ""
    return f"The level is reported under the assay's limit ({words}{_text(v, 'comparator')}{_g(v, 'value')} µg/mL)."


def _dosing_history(v: Values) -> str:
    return (
        f"No usable natalizumab level: projected from the last infusion ({_text(v, 'last_dose_on')}) from the "
        f"label's steady state (peak {_g(v, 'peak')} ± {_g(v, 'peak_sd')} µg/mL; half-lives "
        f"{_g(v, 'half_life_short')}-{_g(v, 'half_life_long')} days). Low confidence, not a measurement: "
        "measure serum natalizumab before the first session."
    )


def _projected_below_target(v: Values) -> str:
    return (
        f"The projection reaches the {_g(v, 'target')} µg/mL target (about {_num(v, 'level_now'):.2g} µg/mL "
        f"now; high end {_num(v, 'level_high'):.2g} µg/mL, {_int(v, 'sessions_high')} session(s)), but a "
        "projection is not a measurement: confirm with a serum level drawn now."
    )


_MEASURE = "Measure serum natalizumab before the first session."

_WORDS: dict[str, Callable[[Values], str]] = {
    "plan-defaulted": lambda v: (
        "The planned exchange volume or interval was missing or invalid; "
        "the reference schedule (1.5 plasma volumes every other day) was used."
    ),
    "immunoadsorption": lambda v: (
        "Immunoadsorption is modelled like plasma exchange of the same processed volume; "
        "no natalizumab-specific removal data for immunoadsorption were found."
    ),
    "outside-population-age": lambda v: (
        f"The patient is {_int(v, 'age_years')} years old: natalizumab's PK data come from adults, so the "
        "estimate is outside the population it rests on."
    ),
    "weight-not-modelled": lambda v: (
        f"Body weight {_num(v, 'weight_kg'):.0f} kg: weight changes natalizumab clearance "
        "(Muralidharan 2017); the model uses population values."
    ),
    "last-dose-unknown": lambda v: (
        "The date of the last natalizumab infusion is unknown (an order or course on record without "
        "an administration after it): no level can be shown to follow the last dose."
    ),
    "unusable-values": lambda v: f"{_int(v, 'count')} natalizumab result(s) were not used.",
    "levels-before-last-dose": lambda v: (
        f"{_int(v, 'count')} level(s) drawn before the last infusion were not used."
    ),
    "discordant-same-time": lambda v: (
        f"{_int(v, 'count')} results drawn at the same time disagree: the highest was used; ask the lab "
        "which one stands."
    ),
    "newer-unusable-result": lambda v: (
        "A natalizumab result newer than any level used could not be used: ask the lab for a "
        "quantitative serum result before deciding on the course."
    ),
    "fit-excluded-old-level": lambda v: (
        f"{_int(v, 'count')} level(s) drawn more than {_g(v, 'days')} days before the first session "
        "were left out of the patient fit: natural decay over that time is too uncertain."
    ),
    "fitted-removal": lambda v: (
        f"Patient-specific remaining fraction per session r = {_num(v, 'r'):.3f} (fitted to "
        f"{_int(v, 'levels')} levels bracketing sessions; population default {_num(v, 'population'):.3f}); "
        "the fitted value is used."
    ),
    "antibodies-no-level": lambda v: (
        "Anti-natalizumab antibodies are on record but no usable level: antibodies raise "
        "clearance (about 2.45-fold) but do not show the drug is gone. Measure serum natalizumab."
    ),
    "antibody-level-discordance": lambda v: (
        "Anti-natalizumab antibodies are on record, yet the level is measurable above the target: "
        "the two disagree. The level decides the estimate; re-test both."
    ),
    "measure-before-first-session": lambda v: _MEASURE,
    "no-data": lambda v: (
        "No natalizumab level and no dosing history on record: the sessions needed cannot be "
        f"estimated. {_MEASURE}"
    ),
    "dosing-history": _dosing_history,
    "post-session-sample": _post_session,
    "date-ambiguous": lambda v: (
        f"The level from {_text(v, 'drawn_on')} has a date but no time, on the same day as a "
        "session or an infusion: whether it was drawn before or after is unknown, so the range "
        "covers both. Record the draw time or redraw."
    ),
    "decayed": _decayed,
    "old-level": lambda v: (
        f"The level is {_num(v, 'age_days'):.0f} days old: a fresh pre-session level is advised."
    ),
    "below-limit": _below_limit,
    "upper-bound": lambda v: (
        f"The level is reported as {_text(v, 'comparator')}{_g(v, 'value')} µg/mL, above the target: it was "
        "used as an upper bound, so the estimate is a maximum and the low end is 0."
    ),
    "lower-bound": lambda v: (
        f"The level is reported as {_text(v, 'comparator')}{_g(v, 'value')} µg/mL: the true level may be "
        "higher, so the estimate is a minimum. Ask for a quantified result."
    ),
    "capped": lambda v: (
        f"The arithmetic reached {_int(v, 'max_sessions')} sessions: re-check the level and the target."
    ),
    "projected-below-target": _projected_below_target,
    "remeasure-after-session": lambda v: (
        f"Re-measure serum natalizumab before session {_int(v, 'after_session') + 1} (after session "
        f"{_int(v, 'after_session')}) and adjust the course to the measured level."
    ),
    "measure-before-next-session": lambda v: "Measure serum natalizumab before the next session.",
    "ordered-course-short": lambda v: (
        f"The order is for {_int(v, 'ordered')} session(s); the estimate is {_int(v, 'estimate')} "
        f"(range {_int(v, 'low')}-{_int(v, 'high')})."
    ),
    "ordered-course-long": lambda v: (
        f"The order is for {_int(v, 'ordered')} session(s), at least {_int(v, 'excess')} more than the "
        f"high end of the estimate ({_int(v, 'high')})."
    ),
    "clearance-only": lambda v: (
        "This estimate concerns drug clearance only; PLEX has not been shown to improve PML outcome."
    ),
}


def note_text(note: Note) -> str:
    """The sentence for one engine note (plain text: escape it before markdown)."""
    words = _WORDS.get(note.code)
    return words(note.values) if words is not None else note.code


def notes_shown(est: PlexEstimate) -> list[str]:
    """The sentences of the notes the card lists under "Notes", in the engine's order."""
    return [note_text(n) for n in est.notes if n.code not in SHOWN_ELSEWHERE]
