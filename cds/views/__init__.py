"""What the clinician sees beyond the card JSON: the projected-level chart, the cards' full pages, the demo.

level_chart.render_svg(estimate, sessions, now) -> str    pure SVG of the level over time
level_chart.render_png(estimate, sessions, now) -> bytes  the same as PNG (cairosvg)
link_store.LinkStore (Memory / Redis)                     what a hook keeps for its links and for order-sign
chart_links.keep_chart_link, chart_links.router           the chart link and /charts/{id}.svg|png
pages.router                                              /cards/{id}, a card's full page
demo.router                                               GET /demo, its static files, demo requests
"""
