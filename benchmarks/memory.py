"""The agent's resident memory per synced object, measured on real processes.

Sandbox, backend and agent each run as ``clustersync`` processes; the agent's RSS is read once
the backend holds every pod. Two cluster sizes are compared so that the interpreter and the
libraries cancel out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import tempfile
from pathlib import Path

import aiohttp
import yaml

from benchmarks.pods import pod

ADMIN, AGENT = "memory-admin-token", "memory-agent-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        lines = status.read().splitlines()
    return next(int(line.split()[1]) for line in lines if line.startswith("VmRSS:"))


def _prepare(tmp: Path, pods: int, backend_port: int) -> None:
    seed = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}]
    seed += [pod(i) for i in range(pods)]
    (tmp / "seed.json").write_text(json.dumps(seed))
    (tmp / "tokens.yaml").write_text(
        yaml.safe_dump(
            [{"token": ADMIN, "role": "admin"}, {"token": AGENT, "account": "a", "cluster": "c"}]
        )
    )
    (tmp / "agent.yaml").write_text(
        yaml.safe_dump(
            {
                "server": f"ws://127.0.0.1:{backend_port}/",
                "account": "a",
                "cluster": "c",
                "accessKey": AGENT,
                "kubeconfig": str(tmp / "kubeconfig"),
                "coalesce": {"quiet": 0.0, "maxWait": 0.0},
                "resources": [{"version": "v1", "resource": "pods", "strategy": "patch"}],
            }
        )
    )


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "clustersync",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def agent_rss(pods: int) -> int:
    """The agent's RSS in KiB once ``pods`` pods are synced."""
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        backend_port, sandbox_port = _free_port(), _free_port()
        await asyncio.to_thread(_prepare, tmp, pods, backend_port)
        procs = [
            await _spawn(
                "sandbox",
                "--port",
                str(sandbox_port),
                "--kubeconfig",
                str(tmp / "kubeconfig"),
                "--seed",
                str(tmp / "seed.json"),
            ),
            await _spawn(
                "backend",
                "--listen",
                f"127.0.0.1:{backend_port}",
                "--db",
                f"sqlite:///{tmp}/m.db",
                "--tokens",
                str(tmp / "tokens.yaml"),
            ),
        ]
        try:
            for proc in procs:
                assert proc.stdout is not None
                await proc.stdout.readline()  # each prints one line once it serves
            agent = await _spawn("agent", "--config", str(tmp / "agent.yaml"))
            procs.append(agent)
            url = f"http://127.0.0.1:{backend_port}/api/v1/objects"
            async with aiohttp.ClientSession() as http:
                while True:
                    async with http.get(url, headers={"Authorization": f"Bearer {ADMIN}"}) as r:
                        if len((await r.json())["items"]) >= pods:
                            break
                    await asyncio.sleep(0.5)
            return _rss_kib(agent.pid)
        finally:
            for proc in procs:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
                await proc.wait()


async def run(small: int = 500, large: int = 5000) -> None:
    print(f"\nagent memory per synced object ({small:,} vs {large:,} pods, separate processes)")
    low, high = await agent_rss(small), await agent_rss(large)
    per_object = (high - low) * 1024 / (large - small)
    print(
        f"  {'agent RSS growth per synced pod':<44} {per_object / 1024:>11,.1f} KiB   |"
        f" target < 2 KiB; agent RSS {high / 1024:,.0f} MiB at {large:,}"
    )
