"""A slowloris flood against ``clustersync backend`` limited to 1024 open files.

``python -m benchmarks.slowloris [--clients 1100] [--seconds 30]`` starts the backend as its own
process with RLIMIT_NOFILE 1024, opens that many connections that trickle one header byte at a
time and never send a token, and, once a second meanwhile, connects an agent with a valid token.
It prints how many of those agent connections succeeded, the backend's log volume, and the
listener's counters from /metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

TOKEN = "slowloris-agent-token"
FILE_LIMIT = 1024


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _limit_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FILE_LIMIT, FILE_LIMIT))


async def _trickle(port: int, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(OSError):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(b"GET /synchronizer HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                while not stop.is_set() and not reader.at_eof():
                    writer.write(b"z")
                    await writer.drain()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            await reader.read(1024)
            finally:
                writer.close()


async def _agent_connects(url: str) -> bool:
    headers = {"X-API-KEY": TOKEN, "X-API-ACCOUNT": "acme", "X-API-CLUSTER": "probe"}
    try:
        async with (
            asyncio.timeout(5),
            aiohttp.ClientSession() as http,
            http.ws_connect(url + "/synchronizer", headers=headers),
        ):
            return True
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


async def run(clients: int, seconds: float) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the flood needs its own files
    with tempfile.TemporaryDirectory() as tmp:
        tokens = Path(tmp) / "tokens.yaml"
        tokens.write_text(f"- token: {TOKEN}\n  account: acme\n  cluster: probe\n")
        log = Path(tmp) / "backend.log"
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "clustersync", "backend", "--listen", f"127.0.0.1:{port}",
                "--tokens", str(tokens), "--db", f"sqlite:///{tmp}/db.sqlite",
                stdout=out, stderr=asyncio.subprocess.STDOUT, preexec_fn=_limit_files,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        try:
            while not await _agent_connects(url):
                await asyncio.sleep(0.2)  # waiting for the process to listen
            stop = asyncio.Event()
            flood = [asyncio.create_task(_trickle(port, stop)) for _ in range(clients)]
            ok = tried = 0
            waits: list[float] = []
            started = time.monotonic()
            while time.monotonic() - started < seconds:
                await asyncio.sleep(1.0)
                tried += 1
                began = time.monotonic()
                if await _agent_connects(url):
                    ok += 1
                    waits.append(time.monotonic() - began)
            stop.set()
            await asyncio.gather(*flood, return_exceptions=True)
            async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as response:
                metrics = await response.text()
        finally:
            proc.terminate()
            await proc.wait()
        size = log.stat().st_size
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    print(f"slowloris: {clients} trickling clients for {seconds:.0f} s, backend file limit "
          f"{FILE_LIMIT}")
    print(f"  agent connections during the flood: {ok}/{tried} succeeded"
          + (f", slowest in {max(waits):.2f} s" if waits else ""))
    print(f"  backend log: {size} bytes")
    for line in metrics.splitlines():
        if line.startswith(("clustersync_listener_events_total", "clustersync_log_suppressed")):
            print(f"  {line}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.slowloris")
    parser.add_argument("--clients", type=int, default=1100)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    asyncio.run(run(args.clients, args.seconds))


if __name__ == "__main__":
    main()
