"""Driving a demo page in headless Chromium, for the demo's browser tests and the README's screenshot
(scripts/readme_pictures.py). Not part of the package: it needs Playwright and the system's Chromium.

    from scripts.browser import headless_page      # from the repository root (the tests)
    from browser import headless_page              # from a script in scripts/
"""
from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-first-run"]


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextmanager
def headless_page(url: str, width: int = 1400, height: int = 1000) -> Iterator[tuple[Any, list[str]]]:
    """(page, blocked URLs): `url` opened in headless Chromium (the system's, driven by Playwright, which
    must be installed), with every request to another host than localhost blocked, so that nothing waits
    on a network that is not there, and so that a test can check nothing was asked of it."""
    from playwright.sync_api import sync_playwright

    chromium = find_chromium()
    if chromium is None:
        raise FileNotFoundError("no chromium on PATH (Debian: apt-get install chromium)")
    blocked: list[str] = []

    def local_only(route: Any) -> None:
        if urlparse(route.request.url).hostname in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.route("**/*", local_only)
            page.goto(url)
            yield page, blocked
        finally:
            browser.close()
