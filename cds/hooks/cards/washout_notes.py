"""The IRIS watch window's and the DMT rebound window's notes in words: one sentence per engine Note code
(cds.engine.iris.WATCH_NOTE_CODES, cds.engine.dmt.REBOUND_NOTE_CODES).

The engine returns what each window rests on as codes and values; the IRIS and DMT cards join these
sentences after their "Watch" and "Rebound window" lines. The text is plain: escape it before markdown.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from cds.engine.domain import Note, NoteValue

__all__ = ["rebound_text", "watch_text"]

Values = Mapping[str, NoteValue]


def _g(values: Values, key: str) -> str:
    value = values.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"note value {key!r} is not a number: {value!r}")
    return f"{value:g}"


def _text(values: Values, key: str) -> str:
    value = values.get(key)
    return value if isinstance(value, str) else ""


def _names(values: Values, key: str) -> tuple[str, ...]:
    value = values.get(key)
    return value if isinstance(value, tuple) else ()


def _not_raised(v: Values) -> str:
    lobar = (
        " Multilobar PML is named; alone it does not raise the risk." if v.get("multilobar") is True else ""
    )
    return (
        "Risk of severe IRIS not raised by the record (no brainstem, widespread or enhancing PML "
        f"found); IRIS itself is still expected: monitor.{lobar}"
    )


_WATCH_WORDS: dict[str, Callable[[Values], str]] = {
    "iris-expected": lambda v: (
        f"IRIS follows natalizumab washout in most patients ({_g(v, 'tan_iris')} of {_g(v, 'tan_cases')}; "
        f"{_g(v, 'stefoski_iris')} of {_g(v, 'stefoski_cases')})."
    ),
    "iris-on-record": lambda v: (
        "IRIS is already recorded for this patient: manage it as IRIS, not as a risk."
    ),
    "onset-after-last-infusion": lambda v: (
        f"It usually appears weeks to about 3 months after the last infusion ({_text(v, 'last_infusion_on')}; "
        f"mean {_g(v, 'mean_days')} ± {_g(v, 'sd_days')} days), and later onset is possible: there is no "
        "safe end date."
    ),
    "plex-brings-forward": lambda v: "Plasma exchange may bring IRIS forward: watch from the start of PLEX.",
    "no-infusion-on-record": lambda v: (
        "No natalizumab infusion is on record: watch from the start of PLEX; "
        "IRIS may come weeks to months after the last infusion."
    ),
    "last-infusion-unknown": lambda v: (
        "The date of the last infusion is unknown: watch for IRIS from now and through plasma exchange; "
        "it may come weeks to months after the last infusion."
    ),
    "no-pml-on-record": lambda v: (
        "No PML diagnosis is on record, so no imaging description could be assessed."
    ),
    "severe-risk-raised": lambda v: (
        "Risk of severe IRIS raised: watch closely for clinical and MRI worsening during and after "
        "plasma exchange."
    ),
    "severe-risk-not-raised": _not_raised,
}

_REBOUND_WORDS: dict[str, Callable[[Values], str]] = {
    "rebound-after-last-dose": lambda v: (
        f"MS activity may return from about 4 weeks after the last natalizumab dose "
        f"({_text(v, 'last_dose_on')}), peaking around 3-4 months and lasting to about 6 months."
    ),
    "plex-brings-forward": lambda v: (
        "Plasma exchange removes the drug sooner and brings the rebound window forward."
    ),
    "last-dose-unknown": lambda v: (
        "The date of the last natalizumab dose is unknown: expect possible MS rebound from the "
        "start of plasma exchange, peaking around 3-4 months after the last dose."
    ),
    "relapse-within-a-year": lambda v: (
        f"About {_g(v, 'percent')}% relapse within a year of stopping natalizumab."
    ),
    "no-dmt-drafted": lambda v: (
        f"{' and '.join(_names(v, 'blocked_by')).capitalize()} on record: no DMT order is drafted."
    ),
}


def _text_of(words: Mapping[str, Callable[[Values], str]], note: Note) -> str:
    write = words.get(note.code)
    return write(note.values) if write is not None else note.code


def watch_text(notes: Sequence[Note]) -> str:
    """The IRIS watch window's notes as one paragraph (plain text), in the engine's order."""
    return " ".join(_text_of(_WATCH_WORDS, n) for n in notes)


def rebound_text(notes: Sequence[Note]) -> str:
    """The DMT rebound window's notes as one paragraph (plain text), in the engine's order."""
    return " ".join(_text_of(_REBOUND_WORDS, n) for n in notes)
