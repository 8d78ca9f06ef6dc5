"""The agent's memory per synced object.

Sandbox and backend run as ``clustersync`` processes; the agent runs here, so that tracemalloc
sees its memory alone. What counts is what the agent *holds* once every pod is synced (after a
collection), not the peak while a list response is parsed; both are shown, the peak as RSS of
a separate agent process.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import socket
import sys
import tempfile
import tracemalloc
from asyncio.subprocess import Process
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import yaml

from benchmarks.pods import pod
from clustersync.adapters.kube.client import KubeClient
from clustersync.runtime.agent import Agent
from clustersync.runtime.agent_core import RELEASE_CHECK_INTERVAL
from clustersync.runtime.config import load_agent_config

ADMIN, AGENT = "memory-admin-token", "memory-agent-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _rss_kib(pid: int) -> int:
    return _rss_and_peak_kib(pid)[0]


def _rss_and_peak_kib(pid: int) -> tuple[int, int]:
    """(current, peak) resident set size of a process, in KiB."""
    with open(f"/proc/{pid}/status") as status:
        lines = status.read().splitlines()
    fields = {line.split(":")[0]: int(line.split()[1]) for line in lines if line.startswith("Vm")}
    return fields["VmRSS"], fields["VmHWM"]


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


@contextlib.asynccontextmanager
async def _cluster_and_backend(pods: int) -> AsyncIterator[tuple[Path, int, list[Process]]]:
    """A sandbox seeded with ``pods`` pods and a backend, as processes; yields the work dir,
    the backend's port, and the process list (append to it to have a process cleaned up)."""
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        backend_port, sandbox_port = _free_port(), _free_port()
        await asyncio.to_thread(_prepare, tmp, pods, backend_port)
        kubeconfig, seed, tokens = tmp / "kubeconfig", tmp / "seed.json", tmp / "tokens.yaml"
        procs = [
            await _spawn(
                "sandbox",
                "--port",
                str(sandbox_port),
                "--kubeconfig",
                str(kubeconfig),
                "--seed",
                str(seed),
            ),
            await _spawn(
                "backend",
                "--listen",
                f"127.0.0.1:{backend_port}",
                "--db",
                f"sqlite:///{tmp}/m.db",
                "--tokens",
                str(tokens),
            ),
        ]
        try:
            for proc in procs:
                assert proc.stdout is not None
                await proc.stdout.readline()  # each prints one line once it serves
            yield tmp, backend_port, procs
        finally:
            for proc in procs:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
                await proc.wait()


async def _wait_stored(backend_port: int, pods: int, idle: Callable[[], bool]) -> None:
    url = f"http://127.0.0.1:{backend_port}/api/v1/objects"
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(url, headers={"Authorization": f"Bearer {ADMIN}"}) as r:
                if len((await r.json())["items"]) >= pods and idle():
                    return
            await asyncio.sleep(0.5)


async def agent_rss(pods: int) -> tuple[int, int]:
    """(steady, peak) RSS in KiB of an agent process once ``pods`` pods are synced."""
    async with _cluster_and_backend(pods) as (tmp, backend_port, procs):
        agent = await _spawn("agent", "--config", str(tmp / "agent.yaml"))
        procs.append(agent)
        await _wait_stored(backend_port, pods, lambda: True)
        # Steady: the agent hands freed memory back once idle (checked every few seconds).
        await asyncio.sleep(2 * RELEASE_CHECK_INTERVAL + 1)
        return _rss_and_peak_kib(agent.pid)


async def agent_held(pods: int) -> int:
    """Bytes the in-process agent holds (traced, after a collection) once ``pods`` are synced."""
    async with _cluster_and_backend(pods) as (tmp, backend_port, _):
        config = load_agent_config(tmp / "agent.yaml")
        kube = await KubeClient.connect(str(tmp / "kubeconfig"))
        gc.collect()
        tracemalloc.start()
        baseline = tracemalloc.get_traced_memory()[0]
        agent = Agent(config, kube)
        task = asyncio.create_task(agent.run())
        await _wait_stored(backend_port, pods, lambda: not agent.outbox)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - baseline
        if os.environ.get("CLUSTERSYNC_MEMORY_TOP"):  # where it is held, for profiling
            for stat in tracemalloc.take_snapshot().statistics("lineno")[:12]:
                print("   ", stat)
        tracemalloc.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await kube.close()
        return held


async def run(small: int = 500, large: int = 5000) -> None:
    print(f"\nagent memory per synced pod ({small:,} vs {large:,} pods; patch strategy)")
    low, high = await agent_held(small), await agent_held(large)
    held = (high - low) / (large - small)
    print(f"  {'held by the agent, per pod':<44} {held / 1024:>11,.1f} KiB   | target < 2 KiB")
    (low, _), (high, peak) = await agent_rss(small), await agent_rss(large)
    slope = (high - low) * 1024 / (large - small)
    print(f"  {'RSS growth of an agent process, per pod':<44} {slope / 1024:>11,.1f} KiB")
    print(
        f"  {'agent RSS / pods, baseline included':<44} {high / large:>11,.1f} KiB   |"
        f" target <= 6 KiB; steady {high / 1024:,.0f} MiB, peak {peak / 1024:,.0f} MiB"
        f" ({peak / large:,.1f} KiB/pod) at {large:,}"
    )
