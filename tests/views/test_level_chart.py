"""The projected-level chart: well-formed SVG with every element the issue names, readable without colour."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import timedelta

import pytest

from cds.engine.domain import NatalizumabLevel, PlexSession
from cds.views.level_chart import render_png, render_svg
from tests.views.conftest import NOW, make_estimate

NS = {"s": "http://www.w3.org/2000/svg"}


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return root


def by_class(root: ET.Element, cls: str) -> list[ET.Element]:
    return [e for e in root.iter() if cls in (e.get("class") or "").split()]


def texts(root: ET.Element) -> str:
    return " ".join(t for e in root.iter("{http://www.w3.org/2000/svg}text") for t in e.itertext())


def test_well_formed_with_title_and_desc(estimate, sessions, now):
    root = parse(render_svg(estimate, sessions, now))
    assert root.get("role") == "img"
    title = root.find("s:title", NS)
    desc = root.find("s:desc", NS)
    assert title is not None and "Natalizumab" in (title.text or "")
    assert desc is not None
    d = desc.text or ""
    assert "25 µg/mL on 2026-03-04" in d and "Target: below 1 µg/mL" in d
    assert "After planned session 1" in d and "2 PLEX session(s) done" in d


def test_target_line_and_label(estimate, sessions, now):
    root = parse(render_svg(estimate, sessions, now))
    lines = by_class(root, "target-line")
    assert len(lines) == 1
    assert lines[0].get("stroke-dasharray")  # a pattern, not only a colour
    assert lines[0].get("y1") == lines[0].get("y2")
    assert "target" in texts(root) and "<1 µg/mL" in texts(root)


def test_one_mark_per_session_done_and_planned(estimate, sessions, now):
    root = parse(render_svg(estimate, sessions, now))
    assert len(by_class(root, "session-done")) == len(sessions) == 2
    assert len(by_class(root, "session-planned")) == len(estimate.projection) == 5
    labels = [e.text for e in by_class(root, "session-label")]
    assert labels == ["1", "2", "3", "4", "5", "6", "7"]  # numbered through the whole course


def test_band_projection_and_measured_points(estimate, sessions, now):
    root = parse(render_svg(estimate, sessions, now))
    band = by_class(root, "band")
    assert len(band) == 1 and band[0].get("fill") == "url(#hatch)"  # hatched, not only tinted
    # the band runs out along the highs and back along the lows: 2 × (today + 5 sessions) vertices
    assert len((band[0].get("points") or "").split()) == 12
    line = by_class(root, "projection-line")
    assert len(line) == 1 and line[0].get("stroke-dasharray")
    assert len(by_class(root, "projected-point")) == 5
    assert len(by_class(root, "measured-point")) == 2
    assert len(by_class(root, "adjusted-point")) == 1
    t = texts(root)
    assert "25 µg/mL" in t and "14 µg/mL" in t and "today ≈12" in t


def test_log_axis_decades(estimate, sessions, now):
    root = parse(render_svg(estimate, sessions, now))
    ticks = [e.text for e in by_class(root, "y-tick")]
    assert {"0.1", "1", "10", "100"} <= set(ticks)
    ys = {e.text: float(e.get("y") or 0) for e in by_class(root, "y-tick")}
    # equal spacing per decade (log scale)
    assert abs((ys["0.1"] - ys["1"]) - (ys["1"] - ys["10"])) < 0.2


def test_legend_names_every_series(estimate, sessions, now):
    root = parse(render_svg(estimate, sessions, now))
    legend = next(e for e in root.iter() if e.get("id") == "legend")
    words = " ".join(legend.itertext())
    for w in (
        "measured level",
        "estimated today",
        "target",
        "projected after each session",
        "projected range",
        "PLEX done/ordered/estimate",
        "re-measure the level",
    ):
        assert w in words


def test_no_phi_or_references(sessions, now):
    est = make_estimate(
        levels=(NatalizumabLevel(25.0, NOW - timedelta(days=6), source="Observation/secret-id"),)
    )
    svg = render_svg(est, (PlexSession(NOW - timedelta(days=1), source="Procedure/p1"),), now)
    assert "secret-id" not in svg and "Procedure/" not in svg and "Observation/" not in svg


def test_censored_level_is_open_and_labelled(now):
    est = make_estimate(
        levels=(NatalizumabLevel(0.5, NOW - timedelta(days=3), comparator="<"),), n_proj=0, start=0.4, done=0
    )
    root = parse(render_svg(est, (), now))
    pts = by_class(root, "measured-point")
    assert len(pts) == 1 and pts[0].get("fill") == "#ffffff"
    assert "<0.5 µg/mL" in texts(root)
    assert not by_class(root, "band") and not by_class(root, "session-mark")


def test_nothing_to_chart_is_still_valid(now):
    est = make_estimate(levels=(), n_proj=0, basis="none")
    root = parse(render_svg(est, (), now))
    assert "No natalizumab level to chart" in texts(root)


def test_many_sessions_and_tiny_values(now):
    est = make_estimate(n_proj=14, start=40.0)
    root = parse(render_svg(est, (), now))
    assert len(by_class(root, "session-planned")) == 14
    assert "0.001" in [e.text for e in by_class(root, "y-tick")] or "0.01" in [
        e.text for e in by_class(root, "y-tick")
    ]


def test_png(estimate, sessions, now):
    try:
        png = render_png(estimate, sessions, now)
    except RuntimeError as exc:  # no libcairo2 on this machine
        pytest.skip(str(exc))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def _x_of_triangle(e: ET.Element) -> float:
    top = e.get("points", "").split()[0]
    return float(top.split(",")[0])


def test_planned_sessions_at_their_times_not_one_interval_late(sessions, now):
    # a projected point is the level after session j, drawn before session j+1 (one interval later)
    est = make_estimate(n_proj=3)
    root = parse(render_svg(est, sessions, now))
    planned = sorted(_x_of_triangle(e) for e in by_class(root, "session-planned"))
    points = sorted(float(e.get("x", "0")) + 4 for e in by_class(root, "projected-point"))
    assert len(planned) == len(points) == 3
    gap = points[1] - points[0]
    # session j one interval before the point "after session j": session 1 today (now), not at point 1
    assert [round(p - x, 1) for p, x in zip(points, planned, strict=True)] == [round(gap, 1)] * 3
    desc = root.find("s:desc", NS)
    assert desc is not None and "Planned sessions: 3 on 2026-03-10, 4 on 2026-03-12, 5 on 2026-03-14" in (
        desc.text or ""
    )


def test_ordered_sessions_told_apart_from_the_estimate(sessions, now):
    import dataclasses

    est = dataclasses.replace(make_estimate(n_proj=5), ordered_sessions=3)
    root = parse(render_svg(est, sessions, now))
    assert len(by_class(root, "session-ordered")) == 3
    beyond = by_class(root, "session-beyond-order")
    assert len(beyond) == 2 and all(e.get("stroke-dasharray") for e in beyond)
    assert "Ordered: 3 sessions; estimate 5" in texts(root)


def test_remeasure_marker(sessions, now):
    import dataclasses

    est = dataclasses.replace(make_estimate(), remeasure_at=now + timedelta(days=4))
    root = parse(render_svg(est, sessions, now))
    (mark,) = by_class(root, "remeasure-mark")
    assert "Re-measure the level around 2026-03-14" in "".join(mark.itertext())
    assert "re-measure" in texts(root)
    assert not by_class(parse(render_svg(make_estimate(), sessions, now)), "remeasure-mark")
