"""Fixtures for the dashboard tests: a real backend world and a real headless Chromium."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

try:  # `python -m pytest` from the repo root
    from tests.runtime.harness import World
    from tests.ui.browser import CHROMIUM_ARGS, Artefacts, chromium_path
except ImportError:  # plain `pytest`
    from runtime.harness import World  # type: ignore[no-redef]
    from ui.browser import CHROMIUM_ARGS, Artefacts, chromium_path  # type: ignore[no-redef]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = World(tmp_path)
    await w.start()
    try:
        yield w
    finally:
        await w.stop()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """One headless Chromium per test, with a fresh profile (Playwright makes a new one)."""
    executable = chromium_path()
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("Playwright for Python is not installed (pip install -e '.[dev]')")
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    page.set_default_timeout(15_000)
    try:
        yield page
    finally:
        await context.close()


@pytest.fixture
def artefacts(tmp_path: Path, request: pytest.FixtureRequest) -> Artefacts:
    return Artefacts(tmp_path, request.node.name)
