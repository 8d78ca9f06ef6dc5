"""scripts/system-deps.sh: the Debian packages `make demo` and `make test` install on demand.

The install path is exercised with a stand-in apt-get on PATH (it records its arguments and, on
install, creates the files the package list probes for): a real apt-get would change this machine
and need the network. The real apt-get runs in `make test` itself, on every CI machine.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .project import ROOT

SCRIPT = ROOT / "scripts" / "system-deps.sh"
PACKAGE_LIST = ROOT / "scripts" / "system-packages.txt"
BASH = shutil.which("bash") or "/bin/bash"
IS_ROOT = os.geteuid() == 0

FAKE_APT_GET = """#!{bash}
# Records each call; 'install' provides the probe file named after each package.
printf '%s\\n' "$*" >> "{log}"
[[ -n "$FAIL_ON" && "$1" == "$FAIL_ON" ]] && exit 100
if [[ "$1" == install && -z "$PROVIDE_NOTHING" ]]; then
    for arg in "$@"; do
        [[ "$arg" == -* || "$arg" == install ]] && continue
        printf '#!/bin/true\\n' > "{probes}/$arg" && "{chmod}" 755 "{probes}/$arg"
    done
fi
exit 0
"""


@dataclass
class Sandbox:
    """A package list whose probes live in a private directory, and a PATH holding only a
    stand-in apt-get (the script itself needs nothing but bash builtins until apt-get runs)."""

    root: Path
    script: Path  # a copy: the work tree may sit where the user nobody cannot read
    probes: Path
    bin: Path
    log: Path
    packages: Path

    def write_list(self, text: str) -> None:
        self.packages.write_text(text.format(probes=self.probes))

    def provide(self, name: str) -> None:
        path = self.probes / name
        path.write_text("#!/bin/true\n")
        path.chmod(0o755)

    def apt_calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def run(self, *args: str, with_apt: bool = True, as_nobody: bool = False,
            **env: str) -> subprocess.CompletedProcess[str]:
        environ = {"PATH": str(self.bin) if with_apt else str(self.root / "empty"),
                   "CLUSTERSYNC_SYSTEM_PACKAGES": str(self.packages), **env}
        command = [BASH, str(self.script), *args]
        if as_nobody:
            setpriv = shutil.which("setpriv")
            assert setpriv, "setpriv (util-linux) is needed to run the script as a non-root user"
            command = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command]
        return subprocess.run(command, env=environ, capture_output=True, text=True, timeout=30,
                              check=False)


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    # Not tmp_path: pytest's temp root is private to root, and one test runs the script as nobody.
    root = Path(tempfile.mkdtemp(prefix="cs-sysdeps-"))
    root.chmod(0o755)
    for name in ("probes", "bin", "empty"):
        (root / name).mkdir()
        (root / name).chmod(0o777)
    script = root / "system-deps.sh"
    shutil.copy(SCRIPT, script)
    script.chmod(0o755)
    box = Sandbox(root, script, root / "probes", root / "bin", root / "apt.log",
                  root / "packages.txt")
    fake = box.bin / "apt-get"
    fake.write_text(FAKE_APT_GET.format(bash=BASH, log=box.log, probes=box.probes,
                                       chmod=shutil.which("chmod")))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    try:
        yield box
    finally:
        shutil.rmtree(root, ignore_errors=True)


TWO_TARGETS = """\
# a comment line, then a blank one

pkg-server   test        {probes}/pkg-server   # trailing comment
pkg-tool     demo test   {probes}/pkg-tool
pkg-demo     demo        {probes}/pkg-demo
"""


def test_nothing_missing_means_no_apt_get_and_no_output(sandbox: Sandbox) -> None:
    sandbox.write_list(TWO_TARGETS)
    for name in ("pkg-server", "pkg-tool"):
        sandbox.provide(name)
    result = sandbox.run("test")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert sandbox.apt_calls() == []


@pytest.mark.skipif(not IS_ROOT, reason="the install path runs only as root")
def test_root_installs_what_the_target_misses_with_one_update_and_one_install(
    sandbox: Sandbox,
) -> None:
    sandbox.write_list(TWO_TARGETS)  # pkg-demo is missing too, but `test` does not need it
    result = sandbox.run("test")
    assert result.returncode == 0, result.stderr
    assert sandbox.apt_calls() == [
        "update",
        "install -y --no-install-recommends pkg-server pkg-tool",
    ]
    printed = [line for line in result.stderr.splitlines() if line.startswith("+ ")]
    assert printed == [
        "+ apt-get update",
        "+ apt-get install -y --no-install-recommends pkg-server pkg-tool",
    ]
    assert "installed: pkg-server pkg-tool" in result.stderr
    assert not (sandbox.probes / "pkg-demo").exists()


@pytest.mark.skipif(not IS_ROOT, reason="the install path runs only as root")
def test_a_package_that_does_not_provide_its_probe_stops_with_exit_2(sandbox: Sandbox) -> None:
    sandbox.write_list(TWO_TARGETS)
    result = sandbox.run("demo", PROVIDE_NOTHING="1")
    assert result.returncode == 2
    assert "still missing after the install: pkg-tool pkg-demo" in result.stderr


@pytest.mark.skipif(not IS_ROOT, reason="the install path runs only as root")
def test_a_failing_apt_get_update_stops_before_installing(sandbox: Sandbox) -> None:
    sandbox.write_list(TWO_TARGETS)
    result = sandbox.run("demo", FAIL_ON="update")
    assert result.returncode == 2
    assert sandbox.apt_calls() == ["update"]
    assert "'apt-get update' failed" in result.stderr


@pytest.mark.skipif(not IS_ROOT, reason="the machine has no apt-get only as root here")
def test_without_apt_get_it_prints_the_command_and_exits_2(sandbox: Sandbox) -> None:
    sandbox.write_list(TWO_TARGETS)
    sandbox.provide("pkg-tool")
    result = sandbox.run("test", with_apt=False)
    assert result.returncode == 2
    assert "missing: pkg-server" in result.stderr
    assert "  apt-get update && apt-get install -y --no-install-recommends pkg-server\n" in (
        result.stderr
    )


def test_a_non_root_user_gets_the_sudo_command_and_exit_2(sandbox: Sandbox) -> None:
    sandbox.write_list(TWO_TARGETS)
    result = sandbox.run("demo", as_nobody=IS_ROOT)
    assert result.returncode == 2, result.stderr
    assert sandbox.apt_calls() == []
    assert ("  sudo apt-get update && sudo apt-get install -y --no-install-recommends "
            "pkg-tool pkg-demo\n") in result.stderr


def test_check_only_reports_and_never_installs(sandbox: Sandbox) -> None:
    sandbox.write_list(TWO_TARGETS)
    result = sandbox.run("--check", "demo")
    assert result.returncode == 2
    assert sandbox.apt_calls() == []
    assert "apt-get install -y --no-install-recommends pkg-tool pkg-demo" in result.stderr


def test_probes_may_be_commands_on_path(sandbox: Sandbox) -> None:
    sandbox.write_list("pkg-cmd  test  apt-get\npkg-gone  test  no-such-command-here\n")
    result = sandbox.run("--check", "test")  # apt-get is on the sandbox PATH; the other is not
    assert result.returncode == 2
    assert "missing: pkg-gone" in result.stderr


@pytest.mark.parametrize("args", [(), ("--check",), ("a", "b")])
def test_bad_usage_exits_64(sandbox: Sandbox, args: tuple[str, ...]) -> None:
    sandbox.write_list(TWO_TARGETS)
    result = sandbox.run(*args)
    assert result.returncode == 64
    assert "usage:" in result.stderr


def test_a_malformed_list_line_is_named_and_exits_64(sandbox: Sandbox) -> None:
    sandbox.write_list("pkg-ok test {probes}/x\npkg-broken\n")
    result = sandbox.run("test")
    assert result.returncode == 64
    assert ":2: expected 'package target... probe'" in result.stderr


def test_an_unreadable_list_exits_64(sandbox: Sandbox) -> None:
    result = sandbox.run("test", CLUSTERSYNC_SYSTEM_PACKAGES=str(sandbox.root / "nope.txt"))
    assert result.returncode == 64
    assert "cannot read the package list" in result.stderr


# ---------------------------------------------------------------- the real list and its users


def _listed_packages() -> set[str]:
    names = set()
    for raw in PACKAGE_LIST.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            names.add(line.split()[0])
    return names


def _readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"^### {re.escape(title)}\n(.*?)(?=^#)", text, re.S | re.M)
    assert match, f"README.md has no '### {title}' section"
    return match.group(1)


def test_the_readme_lists_exactly_the_packages_of_the_list() -> None:
    section = _readme_section("System packages")
    in_readme = set(re.findall(r"^\| `([a-z0-9.+-]+)` \|", section, re.M))
    assert in_readme == _listed_packages()


@pytest.mark.parametrize("target", ["demo", "test"])
def test_this_machine_has_every_package_its_targets_need(target: str) -> None:
    # `make test` ran the install step before pytest; this proves the list's probes are right.
    result = subprocess.run([BASH, str(SCRIPT), "--check", target], capture_output=True,
                            text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr


def test_the_scripts_pass_shellcheck() -> None:
    beside_python = str(Path(sys.executable).parent)
    shellcheck = shutil.which("shellcheck") or shutil.which("shellcheck", path=beside_python)
    assert shellcheck, "shellcheck is needed (the dev extras install it: pip install -e '.[dev]')"
    result = subprocess.run([shellcheck, "--shell=bash", str(SCRIPT), str(ROOT / ".ci" / "run")],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout


def _make_dry_run(target: str) -> list[str]:
    # Under `make test` the parent's MAKEFLAGS/MAKELEVEL would make this run print directories.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    result = subprocess.run(["make", "--no-print-directory", "-n", "-B", target], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=True, env=env)
    return result.stdout.splitlines()


@pytest.mark.parametrize("target", ["demo", "test"])
def test_make_installs_system_packages_before_anything_else(target: str) -> None:
    lines = _make_dry_run(target)
    assert lines[0] == f"bash scripts/system-deps.sh {target}"


def test_ci_runs_exactly_the_readme_test_command() -> None:
    commands = re.findall(r"^make \w+", _readme_section_two_commands(), re.M)
    assert "make test" in commands
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    steps = [line for line in ci_lines if line and not line.startswith("#")
             and not line.startswith(("set ", "cd "))]
    assert [shlex.split(step) for step in steps] == [["make", "test"]]


def _readme_section_two_commands() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"^## Two commands\n(.*?)(?=^## )", text, re.S | re.M)
    assert match, "README.md has no '## Two commands' section"
    return match.group(1)
