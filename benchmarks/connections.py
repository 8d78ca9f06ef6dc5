"""How many idle agent connections one server process holds, and what each costs it.

The backend runs as its own process (``clustersync backend``), so its resident memory is its
own; the clients are plain websockets offering the clustersync subprotocol, as agents do.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml

from clustersync.protocol.messages import ACK_PROTOCOL


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _write_tokens(path: Path, count: int) -> None:
    tokens = [
        {"token": f"agent-token-{i:05d}", "account": "a", "cluster": f"c{i}"} for i in range(count)
    ]
    path.write_text(yaml.safe_dump(tokens))


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        lines = status.read().splitlines()
    for line in lines:
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def run(count: int = 1000) -> None:
    print(f"\n{count:,} idle agent connections on one server process")
    with tempfile.TemporaryDirectory() as tmp:
        _write_tokens(Path(tmp, "tokens.yaml"), count)
        port = _free_port()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "clustersync",
            "backend",
            "--listen",
            f"127.0.0.1:{port}",
            "--db",
            f"sqlite:///{tmp}/c.db",
            "--tokens",
            f"{tmp}/tokens.yaml",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        await proc.stdout.readline()  # "serving on ..."
        connector = aiohttp.TCPConnector(limit=0)
        sockets: list[aiohttp.ClientWebSocketResponse] = []
        try:
            async with aiohttp.ClientSession(connector=connector) as http:
                baseline = _rss_kib(proc.pid)
                start = time.perf_counter()
                for i in range(count):
                    headers = {"X-API-KEY": f"agent-token-{i:05d}"}
                    sockets.append(
                        await http.ws_connect(
                            f"ws://127.0.0.1:{port}/",
                            headers=headers,
                            protocols=(ACK_PROTOCOL,),
                            heartbeat=20.0,
                            compress=15,  # as our agents dial
                        )
                    )
                elapsed = time.perf_counter() - start
                async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                    metrics = await response.text()
                held = next(
                    float(line.split()[1])
                    for line in metrics.splitlines()
                    if line.startswith("clustersync_connected_agents ")
                )
                grown = _rss_kib(proc.pid) - baseline
                print(f"  {'connections held':<44} {held:>14,.0f}   | target {count:>29,}")
                print(f"  {'connect rate':<44} {count / elapsed:>12,.0f}/s   |")
                print(
                    f"  {'server memory per connection':<44} {grown / count:>11,.1f} KiB   |"
                    f" server RSS {_rss_kib(proc.pid) / 1024:>17,.0f} MiB"
                )
                for ws in sockets:
                    await ws.close()
        finally:
            proc.terminate()
            with contextlib.suppress(ProcessLookupError):
                await proc.wait()
