"""Running ``clustersync`` as real processes: start, wait for readiness, stop, one-shot runs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

WAIT = 20.0  # upper bound for a process to become ready or to finish a one-shot command


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test's environment without the CLI's own variables (unless given in ``extra``)."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("CLUSTERSYNC_")}
    out["PYTHONUNBUFFERED"] = "1"
    out.update(extra or {})
    return out


async def wait_until(
    condition: Callable[[], Awaitable[bool]], what: str, timeout: float = WAIT
) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def error_line(self) -> str:
        """The single ``clustersync: error:`` line, checking there is exactly one and no trace."""
        assert "Traceback" not in self.stderr, self.stderr
        lines = [line for line in self.stderr.splitlines() if "error:" in line]
        assert len(lines) == 1, self.stderr
        assert lines[0].startswith("clustersync: error: "), self.stderr
        return lines[0]


async def run_cli(
    *args: str,
    timeout: float = WAIT,
    stdin: bytes | None = None,
    env_vars: dict[str, str] | None = None,
) -> Result:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "clustersync",
        *args,
        stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env(env_vars),
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate(stdin)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


class Process:
    """A long-running ``clustersync`` sub-command with its output in files."""

    def __init__(self, name: str, args: list[str], workdir: Path) -> None:
        self.name = name
        self.args = args
        self.stdout_path = workdir / f"{name}.stdout"
        self.stderr_path = workdir / f"{name}.stderr"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> Process:
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "clustersync",
                *self.args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env(),
            )
        return self

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    @property
    def returncode(self) -> int | None:
        assert self.proc is not None
        return self.proc.returncode

    def describe(self) -> str:
        return f"{self.name} {self.args}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"

    async def wait_for_output(self, text: str, timeout: float = WAIT) -> None:
        async def printed() -> bool:
            if self.returncode is not None:
                raise AssertionError(f"exited with {self.returncode}: {self.describe()}")
            return text in self.stdout

        await wait_until(printed, f"{self.name} to print {text!r}", timeout)

    async def wait(self, timeout: float = WAIT) -> int:
        assert self.proc is not None
        async with asyncio.timeout(timeout):
            return await self.proc.wait()

    async def signal(self, signum: int, timeout: float = 10.0) -> int:
        """Send ``signum`` and return the exit status (the process must exit within timeout)."""
        assert self.proc is not None
        self.proc.send_signal(signum)
        return await self.wait(timeout)

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers; safe to call on an exited process."""
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(5.0):
                await self.proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


async def http_ok(url: str) -> bool:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http,
            http.get(url) as response,
        ):
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False
