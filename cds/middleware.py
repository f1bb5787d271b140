"""Request hygiene at the edge: CORS, body size, content type, JSON depth. Security work owns it.

CONTRACT: install(app, settings) -> None, called once by cds.app.create_app.
"""

from __future__ import annotations

from typing import Any

from cds.settings import Settings


def install(app: Any, settings: Settings) -> None:
    return None
