"""The projected-level chart: natalizumab level over time, as SVG (and PNG for EHRs without SVG).

Pure functions of an engine result: `render_svg(estimate, sessions, now)` draws
- measured levels (filled circles, value labelled; an open circle for a "<" result),
- the level adjusted to `now` (diamond),
- the projected level after each planned session (dashed line, squares) with its low-high range as a
  hatched band,
- the target line (dash-dot, labelled), and
- PLEX sessions as marks on the time axis (filled triangles done, open triangles planned, numbered).

It reads without colour: every series has its own marker shape and dash pattern, values are written
next to the points, a text legend sits under the plot, and `<title>`/`<desc>` describe the chart for
screen readers. The y axis is logarithmic (first-order washout is a straight line on it).
No PHI: only numbers, units and dates appear; no names, identifiers or resource references.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from xml.sax.saxutils import escape, quoteattr

from cds.engine.domain import NatalizumabLevel, PlexEstimate, PlexSession, ProjectedPoint
from cds.engine.pk import REFERENCE_INTERVAL_DAYS

__all__ = ["HEIGHT", "WIDTH", "render_png", "render_svg"]

WIDTH = 760
HEIGHT = 490
_X0, _X1 = 70, 672  # plot area, user units
_Y0, _Y1 = 46, 318
_FLOOR = 0.01  # µg/mL: anything lower (or zero) is drawn on this floor
_FONT = "DejaVu Sans, Liberation Sans, Arial, Helvetica, sans-serif"

_C_MEASURED = "#1f4e79"  # dark blue
_C_PROJ = "#a64600"  # dark orange
_C_BAND = "#f6d7bd"
_C_TARGET = "#1b5e20"  # dark green
_C_GRID = "#d9d9d9"
_C_SESSION = "#444444"


def _fmt(v: float) -> str:
    """A level to two significant figures, no exponent: 125, 25, 2.5, 0.35, 0.012."""
    if v >= 10:
        return f"{v:.0f}"
    if v >= 1:
        return f"{v:.1f}".rstrip("0").rstrip(".")
    if v <= 0:
        return "0"
    digits = max(2, -math.floor(math.log10(v)) + 1)
    return f"{v:.{digits}f}".rstrip("0").rstrip(".")


def _day(d: datetime) -> str:
    return d.astimezone(UTC).strftime("%Y-%m-%d")


def _short(d: datetime) -> str:
    return d.astimezone(UTC).strftime("%d %b")


@dataclass(frozen=True, slots=True)
class _Scale:
    t0: datetime
    t1: datetime
    lo: float  # y axis bottom, µg/mL (a power of ten)
    hi: float  # y axis top

    def x(self, t: datetime) -> float:
        span = (self.t1 - self.t0).total_seconds()
        return _X0 + (_X1 - _X0) * (t - self.t0).total_seconds() / span

    def y(self, v: float) -> float:
        v = max(v, self.lo)
        f = (math.log10(v) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        return _Y1 - (_Y1 - _Y0) * f


def _scale(times: list[datetime], values: list[float]) -> _Scale:
    t0, t1 = min(times), max(times)
    if t1 - t0 < timedelta(days=2):
        t0, t1 = t0 - timedelta(days=1), t1 + timedelta(days=1)
    pad = (t1 - t0) * 0.06
    positive = [v for v in values if v > 0] or [1.0]
    vmin = max(min(positive) * 0.8, _FLOOR)
    vmax = max(max(positive) * 1.25, vmin * 10)
    lo = 10.0 ** math.floor(math.log10(vmin))
    hi = 10.0 ** math.ceil(math.log10(vmax))
    return _Scale(t0 - pad, t1 + pad, lo, hi)


def _x_ticks(s: _Scale) -> list[datetime]:
    span_days = (s.t1 - s.t0).total_seconds() / 86400
    step = next((d for d in (1, 2, 3, 7, 14, 28, 56, 91, 182, 365) if span_days / d <= 8), 730)
    start = datetime(s.t0.year, s.t0.month, s.t0.day, tzinfo=UTC) + timedelta(days=1)
    ticks, t = [], start
    while t <= s.t1:
        ticks.append(t)
        t += timedelta(days=step)
    return ticks


def _text(
    x: float,
    y: float,
    body: str,
    *,
    anchor: str = "start",
    size: int = 12,
    weight: str = "normal",
    fill: str = "#222222",
    cls: str = "",
) -> str:
    c = f" class={quoteattr(cls)}" if cls else ""
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" '
        f'font-weight="{weight}" fill="{fill}"{c}>{escape(body)}</text>'
    )


def _triangle(x: float, y: float, filled: bool, cls: str, dashed: bool = False) -> str:
    pts = f"{x:.1f},{y - 9:.1f} {x - 6:.1f},{y + 1:.1f} {x + 6:.1f},{y + 1:.1f}"
    fill = _C_SESSION if filled else "#ffffff"
    dash = ' stroke-dasharray="2 2"' if dashed else ""
    return f'<polygon class="{cls}" points="{pts}" fill="{fill}" stroke="{_C_SESSION}" stroke-width="1.5"{dash}/>'


def _session_times(estimate: PlexEstimate) -> list[datetime]:
    """When each planned session takes place: a projected point is the equilibrated level after session
    j, drawn before session j+1, one interval after session j (cds.engine.pk), so the session itself is
    one interval earlier. The interval is the spacing of the points (the reference 2 days for one point)."""
    proj = sorted(estimate.projection, key=lambda p: p.session_number)
    if len(proj) >= 2:
        step = (proj[-1].at - proj[0].at) / (len(proj) - 1)
    else:
        step = timedelta(days=REFERENCE_INTERVAL_DAYS)
    return [p.at - step for p in proj]


def _ordered_planned(estimate: PlexEstimate) -> int | None:
    """How many of the planned sessions the order covers (None: the order gives no count)."""
    if estimate.ordered_sessions is None:
        return None
    return max(estimate.ordered_sessions, 0)


def _describe(estimate: PlexEstimate, sessions: tuple[PlexSession, ...], now: datetime) -> str:
    """The <desc>: everything the chart shows, as sentences, for screen readers and text-only views."""
    parts: list[str] = []
    levels = sorted(estimate.levels_used, key=lambda lv: lv.drawn_at)
    if levels:
        parts.append(
            "Measured natalizumab levels: "
            + "; ".join(
                f"{lv.comparator or ''}{_fmt(lv.value_ug_per_ml)} µg/mL on {_day(lv.drawn_at)}"
                for lv in levels
            )
            + "."
        )
    else:
        parts.append("No measured natalizumab level.")
    if sessions:
        parts.append(
            f"{len(sessions)} PLEX session(s) done: "
            + ", ".join(_day(s.performed_at) for s in sorted(sessions, key=lambda s: s.performed_at))
            + "."
        )
    if estimate.adjusted_level_ug_per_ml is not None:
        parts.append(f"Estimated level today ({_day(now)}): {_fmt(estimate.adjusted_level_ug_per_ml)} µg/mL.")
    for p in estimate.projection:
        parts.append(
            f"After planned session {p.session_number} ({_day(p.at)}): {_fmt(p.level_ug_per_ml)} "
            f"µg/mL (range {_fmt(p.low_ug_per_ml)} to {_fmt(p.high_ug_per_ml)})."
        )
    ordered = _ordered_planned(estimate)
    times = _session_times(estimate)
    if times:
        parts.append(
            "Planned sessions: "
            + ", ".join(
                f"{i} on {_day(t)}" + ("" if ordered is None or i <= ordered else " (estimate, not ordered)")
                for i, t in enumerate(times, start=len(sessions) + 1)
            )
            + "."
        )
    if ordered is not None and estimate.remaining is not None:
        parts.append(f"Ordered: {ordered} session(s); estimate {estimate.remaining.estimate}.")
    if estimate.remeasure_at is not None:
        parts.append(f"Re-measure the level around {_day(estimate.remeasure_at)}.")
    parts.append(f"Target: below {_fmt(estimate.target_ug_per_ml)} µg/mL.")
    if estimate.target_expected_at is not None:
        parts.append(f"Target expected around {_day(estimate.target_expected_at)}.")
    return " ".join(parts)


@dataclass(frozen=True, slots=True)
class _Chart:
    """What the drawing steps share: the engine result, its series in drawing order, and the scale."""

    estimate: PlexEstimate
    now: datetime
    done: tuple[PlexSession, ...]  # sessions done, oldest first
    levels: tuple[NatalizumabLevel, ...]  # measured levels (and the starting level), oldest first
    proj: tuple[ProjectedPoint, ...]  # projected points, by session number
    planned_at: tuple[datetime, ...]  # when each planned session takes place
    ordered: int | None  # how many planned sessions the order covers
    s: _Scale

    @property
    def adjusted(self) -> float | None:
        return self.estimate.adjusted_level_ug_per_ml

    @property
    def xn(self) -> float:
        return self.s.x(self.now)


def _chart(estimate: PlexEstimate, sessions: tuple[PlexSession, ...], now: datetime) -> _Chart:
    """Sort the series and fit the scale to every time and value the chart shows."""
    done = tuple(sorted(sessions, key=lambda s: s.performed_at))
    levels = sorted(estimate.levels_used, key=lambda lv: lv.drawn_at)
    if estimate.starting_level is not None and estimate.starting_level not in levels:
        levels = sorted([*levels, estimate.starting_level], key=lambda lv: lv.drawn_at)
    proj = tuple(sorted(estimate.projection, key=lambda p: p.session_number))
    planned_at = tuple(_session_times(estimate))
    times = [now, *(lv.drawn_at for lv in levels), *(s.performed_at for s in done), *(p.at for p in proj)]
    times += planned_at
    times += [t for t in (estimate.target_expected_at, estimate.remeasure_at) if t is not None]
    values = [estimate.target_ug_per_ml, *(lv.value_ug_per_ml for lv in levels)]
    values += [v for p in proj for v in (p.level_ug_per_ml, p.low_ug_per_ml, p.high_ug_per_ml)]
    if estimate.adjusted_level_ug_per_ml is not None:
        values.append(estimate.adjusted_level_ug_per_ml)
    scale = _scale(times, values)
    return _Chart(estimate, now, done, tuple(levels), proj, planned_at, _ordered_planned(estimate), scale)


def _header(c: _Chart) -> list[str]:
    """The svg element, title and description, the hatch pattern, the background and the heading."""
    title = "Natalizumab serum level: measured and projected over plasma exchange sessions"
    out = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
            f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="chart-title chart-desc" '
            f"font-family={quoteattr(_FONT)}>"
        ),
        f'<title id="chart-title">{escape(title)}</title>',
        f'<desc id="chart-desc">{escape(_describe(c.estimate, c.done, c.now))}</desc>',
        (
            '<defs><pattern id="hatch" patternUnits="userSpaceOnUse" width="7" height="7" '
            'patternTransform="rotate(45)">'
            f'<rect width="7" height="7" fill="{_C_BAND}"/>'
            f'<line x1="0" y1="0" x2="0" y2="7" stroke="{_C_PROJ}" stroke-width="1.2" stroke-opacity="0.55"/>'
            "</pattern></defs>"
        ),
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
        _text(_X0, 22, "Natalizumab serum level (µg/mL, log scale)", size=15, weight="bold"),
    ]
    if c.estimate.basis == "dosing-history":
        note = "No level measured: today's level is estimated from the dosing history"
        out.append(_text(_X0, 39, note, size=11, fill="#555555", cls="basis-note"))
    return out


def _y_grid(s: _Scale) -> list[str]:
    """A line per decade (labelled) and dotted lines at 2x and 5x (labelled when the axis is short)."""
    out: list[str] = []
    decade = s.lo
    while decade <= s.hi * 1.0001:
        y = s.y(decade)
        out.append(f'<line x1="{_X0}" y1="{y:.1f}" x2="{_X1}" y2="{y:.1f}" stroke="{_C_GRID}"/>')
        out.append(_text(_X0 - 8, y + 4, _fmt(decade), anchor="end", cls="y-tick"))
        for m in (2, 5):
            if decade * m >= s.hi:
                continue
            ym = s.y(decade * m)
            out.append(
                f'<line x1="{_X0}" y1="{ym:.1f}" x2="{_X1}" y2="{ym:.1f}" stroke="{_C_GRID}" '
                'stroke-dasharray="1 3"/>'
            )
            if s.hi / s.lo <= 100:
                label = _fmt(decade * m)
                out.append(_text(_X0 - 8, ym + 4, label, anchor="end", size=10, fill="#555555", cls="y-tick"))
        decade *= 10
    return out


def _axes(s: _Scale) -> list[str]:
    """Grid, date ticks, the plot frame and the date axis title."""
    out = ['<g id="axes" class="axes">', *_y_grid(s)]
    for t in _x_ticks(s):
        x = s.x(t)
        out.append(f'<line x1="{x:.1f}" y1="{_Y1}" x2="{x:.1f}" y2="{_Y1 + 5}" stroke="#222222"/>')
        out.append(_text(x, _Y1 + 46, _short(t), anchor="middle", size=11, cls="x-tick"))
    out.append(
        f'<rect x="{_X0}" y="{_Y0}" width="{_X1 - _X0}" height="{_Y1 - _Y0}" fill="none" stroke="#222222"/>'
    )
    years = "–".join(str(y) for y in sorted({t.astimezone(UTC).year for t in (s.t0, s.t1)}))
    out.append(_text((_X0 + _X1) / 2, _Y1 + 64, f"Date (UTC, {years})", anchor="middle", size=11))
    out.append("</g>")
    return out


def _today(c: _Chart) -> str:
    xn = c.xn
    return (
        f'<g id="today"><line x1="{xn:.1f}" y1="{_Y0}" x2="{xn:.1f}" y2="{_Y1}" stroke="#888888" '
        f'stroke-dasharray="2 2"/>{_text(xn + 3, _Y1 - 5, "today", size=10, fill="#555555")}</g>'
    )


def _projection(c: _Chart) -> list[str]:
    """The projected range (hatched band) and line from the adjusted level today, a square per session."""
    if not c.proj:
        return []
    s, adjusted = c.s, c.adjusted
    start = [(c.now, adjusted, adjusted, adjusted)] if adjusted is not None else []
    pts = start + [(p.at, p.level_ug_per_ml, p.low_ug_per_ml, p.high_ug_per_ml) for p in c.proj]
    upper = [f"{s.x(t):.1f},{s.y(hi):.1f}" for t, _, _, hi in pts]
    lower = [f"{s.x(t):.1f},{s.y(lo):.1f}" for t, _, lo, _ in reversed(pts)]
    line = " ".join(f"{s.x(t):.1f},{s.y(v):.1f}" for t, v, _, _ in pts)
    out = [
        (
            f'<g id="band"><polygon class="band" points="{" ".join(upper + lower)}" '
            f'fill="url(#hatch)" stroke="{_C_PROJ}" stroke-width="0.8" stroke-dasharray="2 2"/></g>'
        ),
        (
            f'<g id="projection"><polyline class="projection-line" points="{line}" fill="none" '
            f'stroke="{_C_PROJ}" stroke-width="2" stroke-dasharray="7 4"/>'
        ),
    ]
    every = 1 if len(c.proj) <= 7 else 2
    for i, p in enumerate(c.proj):
        x, y = s.x(p.at), s.y(p.level_ug_per_ml)
        out.append(
            f'<rect class="projected-point" x="{x - 4:.1f}" y="{y - 4:.1f}" width="8" height="8" '
            f'fill="{_C_PROJ}"><title>After planned session {p.session_number}: '
            f"{_fmt(p.level_ug_per_ml)} µg/mL (range {_fmt(p.low_ug_per_ml)}–"
            f"{_fmt(p.high_ug_per_ml)})</title></rect>"
        )
        if i % every == 0 or i == len(c.proj) - 1:
            out.append(
                _text(x + 6, y - 7, _fmt(p.level_ug_per_ml), size=10, fill=_C_PROJ, cls="projected-label")
            )
    out.append("</g>")
    return out


def _target_label(y: float, body: str) -> str:
    return _text(_X1 + 6, y, body, size=11, weight="bold", fill=_C_TARGET, cls="target-label")


def _target(c: _Chart) -> list[str]:
    """The target line, its label, and a tick where the projection expects to reach it."""
    estimate = c.estimate
    yt = c.s.y(estimate.target_ug_per_ml)
    out = [
        (
            f'<g id="target" class="target"><line class="target-line" x1="{_X0}" y1="{yt:.1f}" '
            f'x2="{_X1}" y2="{yt:.1f}" stroke="{_C_TARGET}" stroke-width="2" stroke-dasharray="10 4 2 4"/>'
        ),
        _target_label(yt - 3, "target"),
        _target_label(yt + 11, f"<{_fmt(estimate.target_ug_per_ml)} µg/mL"),
    ]
    if estimate.target_expected_at is not None:
        xe = c.s.x(estimate.target_expected_at)
        out.append(
            f'<line x1="{xe:.1f}" y1="{yt - 7:.1f}" x2="{xe:.1f}" y2="{yt + 7:.1f}" '
            f'stroke="{_C_TARGET}" stroke-width="2"/>'
        )
    out.append("</g>")
    return out


def _measured_point(s: _Scale, lv: NatalizumabLevel) -> list[str]:
    """A filled circle (open for a "<" result) with its value written above it."""
    x, y = s.x(lv.drawn_at), s.y(lv.value_ug_per_ml)
    fill = "#ffffff" if lv.comparator in ("<", "<=") else _C_MEASURED
    label = f"{lv.comparator or ''}{_fmt(lv.value_ug_per_ml)}"
    return [
        (
            f'<circle class="measured-point" cx="{x:.1f}" cy="{y:.1f}" r="5.5" fill="{fill}" '
            f'stroke="{_C_MEASURED}" stroke-width="2"><title>Measured {escape(label)} µg/mL on '
            f"{_day(lv.drawn_at)}</title></circle>"
        ),
        _text(
            x,
            y - 11,
            f"{label} µg/mL",
            anchor="middle",
            size=11,
            weight="bold",
            fill=_C_MEASURED,
            cls="measured-label",
        ),
    ]


def _adjusted_point(c: _Chart, adjusted: float) -> list[str]:
    """The level adjusted to today: a diamond on the today line, labelled on the side with room."""
    xn, y = c.xn, c.s.y(adjusted)
    x, y_label, anchor = (xn - 9, y + 16, "end") if xn - 90 > _X0 else (xn + 10, y - 9, "start")
    return [
        (
            f'<polygon class="adjusted-point" points="{xn:.1f},{y - 7:.1f} {xn + 7:.1f},{y:.1f} '
            f'{xn:.1f},{y + 7:.1f} {xn - 7:.1f},{y:.1f}" fill="#ffffff" stroke="{_C_MEASURED}" '
            f'stroke-width="2"><title>Estimated today: {_fmt(adjusted)} µg/mL</title></polygon>'
        ),
        _text(
            x,
            y_label,
            f"today ≈{_fmt(adjusted)}",
            anchor=anchor,
            size=10,
            fill=_C_MEASURED,
            cls="adjusted-label",
        ),
    ]


def _measured(c: _Chart) -> list[str]:
    out = ['<g id="measured">']
    for lv in c.levels:
        out += _measured_point(c.s, lv)
    if c.adjusted is not None:
        out += _adjusted_point(c, c.adjusted)
    out.append("</g>")
    return out


def _planned_session(c: _Chart, j: int, when: datetime, ym: float) -> list[str]:
    """Planned session `j` (1-based): an open triangle, dashed when the order does not cover it."""
    x = c.s.x(when)
    beyond = c.ordered is not None and j > c.ordered  # estimated, not (yet) ordered
    grey = "#999999" if beyond else "#555555"
    cls = "session-mark session-planned" + (" session-beyond-order" if beyond else " session-ordered")
    return [
        (
            f'<line x1="{x:.1f}" y1="{_Y0}" x2="{x:.1f}" y2="{_Y1}" stroke="{_C_SESSION}" '
            f'stroke-opacity="{0.2 if beyond else 0.35}" stroke-dasharray="2 3"/>'
        ),
        _triangle(x, ym, False, cls, dashed=beyond),
        _text(x, ym + 12, str(len(c.done) + j), anchor="middle", size=9, fill=grey, cls="session-label"),
    ]


def _sessions(c: _Chart) -> list[str]:
    """PLEX sessions on the time axis, numbered: done (filled), then planned (open)."""
    ym = _Y1 + 18
    out = ['<g id="sessions">', _text(_X0 - 8, ym - 1, "PLEX", anchor="end", size=10, fill=_C_SESSION)]
    for i, sess in enumerate(c.done, start=1):
        x = c.s.x(sess.performed_at)
        out.append(
            f'<line x1="{x:.1f}" y1="{_Y0}" x2="{x:.1f}" y2="{_Y1}" stroke="{_C_SESSION}" '
            'stroke-opacity="0.35"/>'
        )
        out.append(_triangle(x, ym, True, "session-mark session-done"))
        out.append(_text(x, ym + 12, str(i), anchor="middle", size=9, cls="session-label"))
    for j, when in enumerate(c.planned_at, start=1):
        out += _planned_session(c, j, when, ym)
    out.append("</g>")
    return out


def _ordered_note(c: _Chart) -> list[str]:
    """How many sessions the order covers, and the estimate when it differs (top right)."""
    remaining = c.estimate.remaining
    if c.ordered is None or remaining is None:
        return []
    extra = "" if remaining.estimate == c.ordered else f"; estimate {remaining.estimate}"
    text = f"Ordered: {c.ordered} session{'' if c.ordered == 1 else 's'}{extra}"
    return [_text(_X1, 39, text, anchor="end", size=11, fill=_C_SESSION, cls="ordered-note")]


def _remeasure(c: _Chart) -> list[str]:
    """When to re-measure the level: a dotted vertical line with an open circle at the top."""
    when = c.estimate.remeasure_at
    if when is None:
        return []
    xr = c.s.x(when)
    return [
        f'<g id="remeasure" class="remeasure"><line x1="{xr:.1f}" y1="{_Y0}" x2="{xr:.1f}" y2="{_Y1}" '
        f'stroke="{_C_MEASURED}" stroke-width="1.5" stroke-dasharray="1 3"/>'
        f'<circle class="remeasure-mark" cx="{xr:.1f}" cy="{_Y0 + 8}" r="5" fill="#ffffff" '
        f'stroke="{_C_MEASURED}" stroke-width="2"><title>Re-measure the level around '
        f"{_day(when)}</title></circle>"
        + _text(xr + 8, _Y0 + 12, "re-measure", size=10, fill=_C_MEASURED, cls="remeasure-label")
        + "</g>"
    ]


def _nothing_to_chart(c: _Chart) -> list[str]:
    if c.levels or c.adjusted is not None or c.proj:
        return []
    middle = ((_X0 + _X1) / 2, (_Y0 + _Y1) / 2)
    return [_text(*middle, "No natalizumab level to chart", anchor="middle", size=14, fill="#555555")]


def render_svg(estimate: PlexEstimate, sessions: tuple[PlexSession, ...], now: datetime) -> str:
    """The chart as a standalone SVG document (UTF-8 text, no external references)."""
    c = _chart(estimate, sessions, now)
    out = [
        *_header(c),
        *_axes(c.s),
        _today(c),
        *_projection(c),
        *_target(c),
        *_measured(c),
        *_sessions(c),
        *_ordered_note(c),
        *_remeasure(c),
        *_nothing_to_chart(c),
        _legend(),
        "</svg>",
    ]
    return "\n".join(out)


def _legend() -> str:
    y1, y2, y3 = _Y1 + 96, _Y1 + 122, _Y1 + 148
    c1, c2, c3 = _X0, _X0 + 230, _X0 + 460
    items = [
        (c1, y1, f'<circle cx="{c1 + 12}" cy="{y1 - 4}" r="5" fill="{_C_MEASURED}"/>', "measured level"),
        (
            c2,
            y1,
            (
                f'<polygon points="{c2 + 12},{y1 - 11} {c2 + 19},{y1 - 4} {c2 + 12},{y1 + 3} {c2 + 5},'
                f'{y1 - 4}" fill="#ffffff" stroke="{_C_MEASURED}" stroke-width="2"/>'
            ),
            "estimated today",
        ),
        (
            c3,
            y1,
            (
                f'<line x1="{c3}" y1="{y1 - 4}" x2="{c3 + 24}" y2="{y1 - 4}" stroke="{_C_TARGET}" '
                'stroke-width="2" stroke-dasharray="10 4 2 4"/>'
            ),
            "target",
        ),
        (
            c1,
            y2,
            (
                f'<line x1="{c1}" y1="{y2 - 4}" x2="{c1 + 24}" y2="{y2 - 4}" stroke="{_C_PROJ}" '
                f'stroke-width="2" stroke-dasharray="7 4"/><rect x="{c1 + 8}" y="{y2 - 8}" width="8" '
                f'height="8" fill="{_C_PROJ}"/>'
            ),
            "projected after each session",
        ),
        (
            c2,
            y2,
            (
                f'<rect x="{c2}" y="{y2 - 11}" width="24" height="14" fill="url(#hatch)" '
                f'stroke="{_C_PROJ}" stroke-width="0.8"/>'
            ),
            "projected range (low–high)",
        ),
        (
            c3,
            y2,
            _triangle(c3 + 7, y2, True, "legend-done")
            + _triangle(c3 + 22, y2, False, "legend-planned")
            + _triangle(c3 + 37, y2, False, "legend-beyond", dashed=True),
            "PLEX done/ordered/estimate",
        ),
        (
            c1,
            y3,
            (
                f'<line x1="{c1 + 12}" y1="{y3 - 14}" x2="{c1 + 12}" y2="{y3 + 4}" stroke="{_C_MEASURED}" '
                f'stroke-width="1.5" stroke-dasharray="1 3"/><circle cx="{c1 + 12}" cy="{y3 - 4}" r="5" '
                f'fill="#ffffff" stroke="{_C_MEASURED}" stroke-width="2"/>'
            ),
            "re-measure the level",
        ),
    ]
    out = ['<g id="legend" class="legend">']
    for x, y, sample, label in items:
        shift = 16 if label.startswith("PLEX") else 0  # three triangles
        out.append(f'<g class="legend-item">{sample}{_text(x + 32 + shift, y, label, size=11)}</g>')
    out.append("</g>")
    return "".join(out)


def render_png(
    estimate: PlexEstimate, sessions: tuple[PlexSession, ...], now: datetime, scale: float = 1.5
) -> bytes:
    """The same chart as PNG (cairosvg; needs the system's libcairo2). Raises RuntimeError without it."""
    try:
        import cairosvg  # type: ignore[import-untyped]
    except (ImportError, OSError) as exc:  # OSError: cairocffi cannot find libcairo
        raise RuntimeError(f"PNG rendering unavailable: {exc}") from exc
    svg = render_svg(estimate, sessions, now)
    png: bytes = cairosvg.svg2png(bytestring=svg.encode("utf-8"), scale=scale, background_color="white")
    return png
