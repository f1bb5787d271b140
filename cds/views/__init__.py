"""What the clinician sees beyond the card JSON: the projected-level chart and the demo page.

chart.render_svg(estimate, sessions, now) -> str      pure SVG of the level over time
chart.render_png(estimate, sessions, now) -> bytes    the same as PNG (cairosvg)
charts.ChartStore(ttl_s, max_entries)                 short-lived opaque-id store; charts.router
demo.router                                           GET /demo, its static files, demo requests
"""
