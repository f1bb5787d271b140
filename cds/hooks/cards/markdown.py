"""Markdown and number formatting the cards share: escaping, numbers, dates, sources, the not-used list.

Every piece of text that did not originate in this package (FHIR text, drug names) goes through
`md_escape` before it enters markdown.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from datetime import UTC, datetime

from cds.engine.domain import NatalizumabLevel, Reference, UnusableValue
from cds.fhir_io import LoadResult
from cds.hooks.models import Source

__all__ = [
    "SOURCE_LABEL",
    "card_source",
    "fhir_datetime",
    "fit_summary",
    "fmt_date",
    "fmt_num",
    "join_names",
    "level_text",
    "md_escape",
    "problems_md",
    "refs_md",
    "short_ref",
    "unique_refs",
]

SOURCE_LABEL = "PML-PLEX decision support"

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


def md_escape(text: object) -> str:
    """Make FHIR-sourced text inert in GitHub-flavoured markdown (and HTML): one line, no markup."""
    s = str(text)
    return _escaped_short(s) if len(s) <= _SHORT_TEXT_CHARS else _escaped(s)


# Engine sentences, steroid texts, drug names and units recur on every call: about 20 short texts a
# call are escaped once per worker instead of each time (measured on the bench's select case: the
# cards' drafts take about 260 µs with this cache and 317 µs without it).
_SHORT_TEXT_CHARS = 400


@functools.lru_cache(maxsize=1024)
def _escaped_short(text: str) -> str:
    return _escaped(text)


def _escaped(text: str) -> str:
    s = _CONTROL_CHARS.sub("", text)
    for old, new in _MD_REPLACEMENTS:
        s = s.replace(old, new)
    s = " ".join(s.split())  # split(): the same whitespace as \s; no replacement adds whitespace
    return _BLOCK_START.sub(_escape_block_start, s, count=1)


def _escape_block_start(m: re.Match[str]) -> str:
    return "\\" + m[1] if m[1] else m[2] + "\\" + m[3]


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
    """The UTC day of `dt` as YYYY-MM-DD ('unknown date' for None)."""
    if not dt:
        return "unknown date"
    day = dt.astimezone(UTC).date()
    # isoformat is cheaper than strftime; they differ only before year 1000 (strftime does not pad)
    return day.isoformat() if day.year >= 1000 else day.strftime("%Y-%m-%d")


def fhir_datetime(dt: datetime) -> str:
    """A FHIR dateTime (UTC, 'Z')."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def level_text(level: NatalizumabLevel) -> str:
    """'<0.5' or '25': the level in µg/mL with its comparator."""
    return f"{level.comparator or ''}{fmt_num(level.value_ug_per_ml)}"


def fit_summary(*candidates: str) -> str:
    """The first candidate that fits a card summary (≤ 139 characters)."""
    for c in candidates:
        if c and len(c) <= 139:
            return c
    return candidates[-1][:136].rstrip() + "..."


def join_names(names: Iterable[str], limit: int) -> str:
    """'a, b +2': at most `limit` names, then how many more."""
    names = list(names)
    if len(names) > limit:
        return ", ".join(names[:limit]) + f" +{len(names) - limit}"
    return ", ".join(names)


def _ref_key(r: Reference) -> str:
    """One source, however it is cited: the same DOI/URL (or, without one, the same citation)."""
    return r.url.strip().rstrip("/").lower() if r.url else r.citation.strip().lower()


def unique_refs(refs: Iterable[Reference]) -> tuple[Reference, ...]:
    """`refs` without repeats of one source, in order."""
    out: dict[str, Reference] = {}
    for r in refs:
        out.setdefault(_ref_key(r), r)
    return tuple(out.values())


def refs_md(refs: Iterable[Reference]) -> str:
    """The markdown list of the sources `refs` cite, each once."""
    return "\n".join(f"- [{r.citation}]({r.url})" if r.url else f"- {r.citation}" for r in unique_refs(refs))


_YEAR = re.compile(r"\b(19|20)\d\d\b")


def short_ref(r: Reference) -> str:
    """'Tan IL et al. Neurology 2011;…' -> 'Tan 2011' (first word and first year), linked when it has a URL."""
    first = r.citation.split(" ", 1)[0].rstrip(".,")
    year = _YEAR.search(r.citation)
    label = f"{first} {year.group(0)}" if year else r.citation
    return f"[{label}]({r.url})" if r.url else label


def card_source(refs: Iterable[Reference]) -> Source:
    """The card's Source: our label and the first https link among its references."""
    url = next((r.url for r in refs if r.url.startswith("https://")), None)
    return Source(label=SOURCE_LABEL, url=url)


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


def problems_md(load: LoadResult | None, unusable: Iterable[UnusableValue] = ()) -> str:
    """The not-used values and the read problems, one markdown list line each."""
    lines = _unusable_lines(unusable)
    if load is not None:
        for p in dict.fromkeys(load.problems):
            lines.append(f"- {md_escape(p)}")
        if load.skipped:
            lines.append(
                f"- {load.skipped} malformed FHIR entr{'y was' if load.skipped == 1 else 'ies were'} skipped"
            )
    return "\n".join(lines)
