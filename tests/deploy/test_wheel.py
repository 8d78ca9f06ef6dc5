"""`python -m build` makes an sdist and a wheel that install and run clean, with their data files.

The build runs on a copy of the project's sources (so nothing in the work tree changes and no
editable install can leak in), in pip's isolated build environment, as a user's build would; the
wheel is then installed into a brand-new virtualenv and its console script is run from there.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import venv
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .project import BUILD_TIMEOUT, PACKAGE_DIR, copy_project, source_version


@dataclass(frozen=True)
class Built:
    sdist: Path
    wheel: Path

    def wheel_names(self) -> set[str]:
        with zipfile.ZipFile(self.wheel) as whl:
            return set(whl.namelist())

    def sdist_names(self) -> set[str]:
        with tarfile.open(self.sdist) as tar:
            return {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}


def build(project: Path) -> Built:
    out = project / "dist"
    result = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(project)],
                            capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    sdists, wheels = sorted(out.glob("*.tar.gz")), sorted(out.glob("*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, f"expected one sdist and one wheel: {out}"
    return Built(sdists[0], wheels[0])


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return build(copy_project(tmp_path_factory.mktemp("build") / "clustersync"))


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_build_names_both_artifacts_with_the_source_version(built: Built) -> None:
    version = source_version()
    assert built.sdist.name == f"clustersync-{version}.tar.gz"
    assert built.wheel.name == f"clustersync-{version}-py3-none-any.whl"
    with zipfile.ZipFile(built.wheel) as whl:
        metadata = whl.read(f"clustersync-{version}.dist-info/METADATA").decode()
    assert f"\nVersion: {version}\n" in metadata


def test_every_file_of_the_package_ships_in_the_wheel_and_the_sdist(built: Built) -> None:
    files = [path.relative_to(PACKAGE_DIR.parent).as_posix() for path in PACKAGE_DIR.rglob("*")
             if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"]
    assert "clustersync/py.typed" in files  # PEP 561: the package's types are part of its API
    assert set(files) <= built.wheel_names()
    assert {f"src/{name}" for name in files} <= built.sdist_names()


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_the_package_data_rule_ships_templates_static_files_and_vendored_licences(
    tmp_path: Path,
) -> None:
    # What a dashboard package will hold; the rule must ship it without being edited.
    project = copy_project(tmp_path / "clustersync")
    data = {
        "clustersync/ui/templates/index.html": "<!doctype html><title>x</title>\n",
        "clustersync/ui/static/app.css": "body{}\n",
        "clustersync/ui/static/vendor/chartlib/chartlib.min.js": "/* vendored */\n",
        "clustersync/ui/static/vendor/chartlib/LICENSE": "MIT License\n",
        "clustersync/sandbox/data/seed.yaml": "[]\n",
    }
    (project / "src/clustersync/ui").mkdir()
    (project / "src/clustersync/ui/__init__.py").write_text('"""ui"""\n')
    for name, text in data.items():
        path = project / "src" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    artifacts = build(project)
    with zipfile.ZipFile(artifacts.wheel) as whl:
        for name, text in data.items():
            assert whl.read(name).decode() == text, name


@pytest.fixture(scope="module")
def installed(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The wheel alone in a new virtualenv (dependencies from the index or pip's cache)."""
    env_dir = tmp_path_factory.mktemp("wheel-venv")
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    python = env_dir / "bin" / "python"
    result = subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(built.wheel)],
                            capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    yield env_dir / "bin"


def _run(bin_dir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    # From an empty directory with nothing of the work tree on sys.path.
    return subprocess.run([str(bin_dir / args[0]), *args[1:]], cwd=bin_dir.parent,
                          capture_output=True, text=True, timeout=timeout, check=False,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(bin_dir.parent)})


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_the_installed_wheel_is_the_one_imported(installed: Path) -> None:
    result = _run(installed, "python", "-c", "import clustersync; print(clustersync.__file__)")
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).is_relative_to(installed.parent / "lib")


def test_installed_clustersync_version(installed: Path) -> None:
    result = _run(installed, "clustersync", "--version")
    assert (result.returncode, result.stdout) == (0, f"clustersync {source_version()}\n")


def test_installed_clustersync_sandbox_help(installed: Path) -> None:
    result = _run(installed, "clustersync", "sandbox", "--help")
    assert result.returncode == 0, result.stderr
    for option in ("--port", "--kubeconfig", "--seed"):
        assert option in result.stdout


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_installed_clustersync_demo_converges(installed: Path) -> None:
    result = _run(installed, "clustersync", "demo", timeout=180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "backend matches cluster" in result.stdout
