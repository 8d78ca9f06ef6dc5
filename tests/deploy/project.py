"""The project's sources as the packaging and deployment tests see them."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = ROOT / "src" / "clustersync"
BUILD_TIMEOUT = 300  # a cold pip cache downloads setuptools and the dependencies first


def source_version() -> str:
    """The version as written in its one place, read as text (not imported)."""
    text = (PACKAGE_DIR / "__init__.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"$', text, re.M)
    assert match, "src/clustersync/__init__.py must set __version__"
    return match.group(1)


def copy_project(dest: Path) -> Path:
    """What a build needs (and the Dockerfile copies): pyproject.toml, README.md and src/."""
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "src", dest / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
    return dest
