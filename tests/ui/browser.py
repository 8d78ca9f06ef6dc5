"""Headless Chromium for the dashboard tests: Debian's ``chromium`` driven by Playwright.

Playwright is pointed at the system browser (never ``playwright install``). Tests skip, saying
why, only when no browser or no Playwright can be found; scripts/system-deps.sh installs the
browser, so CI always runs them.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

# The flags that let Chromium run as root in this sandbox without reaching for the network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    """The system Chromium, or skip the test with the reason."""
    candidates = [os.environ.get("CHROMIUM", ""), "/usr/bin/chromium",
                  shutil.which("chromium") or "", shutil.which("chromium-browser") or ""]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.skip("no Chromium found (install Debian's `chromium` package, as "
                "scripts/system-deps.sh does, or set CHROMIUM=/path/to/chromium)")


class Artefacts:
    """Screenshots of the pages a test visited: in its tmp dir, and copied under
    $CLUSTERSYNC_ARTEFACTS/ui when that is set (CI keeps them)."""

    def __init__(self, tmp_path: Path, test_name: str) -> None:
        self.dir = tmp_path / "screenshots"
        self.dir.mkdir(parents=True, exist_ok=True)
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
        root = os.environ.get("CLUSTERSYNC_ARTEFACTS")
        self.kept = Path(root) / "ui" / slug if root else None
        self.taken: list[Path] = []

    async def shoot(self, page: object, name: str) -> Path:
        path = self.dir / f"{name}.png"
        await page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
        self.taken.append(path)
        if self.kept is not None:
            self.kept.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, self.kept / path.name)
        return path
