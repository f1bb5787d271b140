"""Browser tests: Playwright (Python) driving Debian's Chromium against the real service under uvicorn.

Chromium is /usr/bin/chromium from Debian (`scripts/install-system.sh`), launched headless with
--no-sandbox (CI runs as root); Playwright's own browser download is never used. The tests skip
cleanly when that binary or the playwright package is absent.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("CDS_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} not installed (bash scripts/install-system.sh)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) not installed")


class Service:
    """The running service: base URL and its settings (for reading the feedback store)."""

    def __init__(self, url: str, settings: Any) -> None:
        self.url = url
        self.settings = settings

    def feedback(self) -> list[dict[str, Any]]:
        from cds.store import open_store

        async def read() -> list[dict[str, Any]]:
            store = open_store(self.settings)
            await store.start()
            try:
                return await store.feedback()
            finally:
                await store.close()

        # sync Playwright keeps an event loop on this thread: read the store from another one
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, read()).result(timeout=30)


@pytest.fixture(scope="session")
def service() -> Iterator[Service]:
    from cds.app import create_app
    from cds.settings import Settings
    from tests.support.servers import free_port, serve_asgi

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="cds-browser-") as state:
        settings = Settings(
            auth="off",
            demo=True,
            public_base_url=f"http://127.0.0.1:{port}",
            state_dir=Path(state),
            database_url=None,
        )
        with serve_asgi(create_app(settings), port) as url:
            yield Service(url, settings)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium; Playwright starts it with a new empty --user-data-dir of its own.

    Module scope: sync Playwright runs an event loop on the main thread while it lives, which would
    break every asyncio test collected after it if it lived for the whole session.
    """
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


class Watched:
    """A page plus what it did that a test must see: dialogs (alert/confirm), page errors, console errors."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        page.on("dialog", self._dialog)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)

    def _dialog(self, d: Any) -> None:
        self.dialogs.append(d.message)
        d.dismiss()


def open_demo(browser: Any, service: Service, *, bypass_csp: bool = False) -> Watched:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=bypass_csp)
    w = Watched(ctx.new_page())
    w.page.goto(service.url + "/demo")
    w.page.wait_for_selector("body[data-ready='1']")
    return w


@pytest.fixture
def demo(browser: Any, service: Service) -> Iterator[Watched]:
    w = open_demo(browser, service)
    try:
        yield w
    finally:
        w.page.context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def wait_done(page: Any, hook: str) -> None:
    page.wait_for_selector(
        f"body[data-state='done'][data-hook='{hook}'], body[data-state='error']", state="attached"
    )
    assert page.get_attribute("body", "data-state") == "done", page.inner_text("#hook-status")


def order(page: Any, name: str) -> None:
    """Choose demo patient `name` and press "Order plasma exchange"; wait for the cards."""
    page.click(f"button[data-patient='{name}']")
    page.wait_for_selector(f"body[data-patient='{name}'] #btn-order:not([disabled])")
    page.evaluate("() => { delete document.body.dataset.state; }")
    page.click("#btn-order")
    wait_done(page, "order-select")


def sign(page: Any) -> None:
    page.evaluate("() => { delete document.body.dataset.state; }")
    page.click("#btn-sign")
    wait_done(page, "order-sign")
