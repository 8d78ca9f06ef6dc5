"""A large kind never stalls the agent's event loop, and the outbox stays bounded.

50k ConfigMaps are listed, hashed, requested by inventory and sent whole. The sandbox and the
backend run as ``clustersync`` processes, the agent in this test's event loop, so that what a
probe measures here is the agent's loop alone. The agent pings the backend every two seconds and
drops the link if a pong is a second late, so a loop held for a second would show as a
reconnect: the agent keeps its first connection, its loop is never held for half a heartbeat,
every object is stored, and the outbox never holds more than its bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from clustersync.adapters.kube.client import KubeClient
from clustersync.cli.common import tune_gc
from clustersync.protocol.link_session import OUTBOX_LIMIT
from clustersync.runtime.agent import Agent
from clustersync.runtime.config import load_agent_config

try:
    from tests.runtime.harness import eventually
    from tests.servers import free_port
except ImportError:
    from harness import eventually  # type: ignore[no-redef]

    from servers import free_port  # type: ignore[no-redef]

OBJECTS = int(os.environ.get("CS_LARGE_OBJECTS", "50000"))  # the case: 50k objects
HEARTBEAT = 2.0
ADMIN, AGENT = "large-kinds-admin-token", "large-kinds-agent-token"

log = logging.getLogger("tests.large_kinds")


def _prepare(tmp: Path, count: int, backend_port: int) -> None:
    seed: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bulk"}}
    ]
    seed += [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"cm-{n:05d}", "namespace": "bulk", "labels": {"n": str(n)}},
            "data": {"index": str(n), "payload": "x" * 400},
        }
        for n in range(count)
    ]
    (tmp / "seed.json").write_text(json.dumps(seed))
    (tmp / "tokens.yaml").write_text(yaml.safe_dump([
        {"token": ADMIN, "role": "admin"},
        {"token": AGENT, "account": "a", "cluster": "c"},
    ]))
    (tmp / "agent.yaml").write_text(yaml.safe_dump({
        "server": f"ws://127.0.0.1:{backend_port}/",
        "account": "a",
        "cluster": "c",
        "accessKey": AGENT,
        "kubeconfig": str(tmp / "kubeconfig"),
        "heartbeat": HEARTBEAT,
        "resources": [{"version": "v1", "resource": "configmaps", "strategy": "patch"}],
    }))


@contextlib.asynccontextmanager
async def sandbox_and_backend(tmp: Path) -> AsyncIterator[int]:
    backend_port, sandbox_port = free_port(), free_port()
    await asyncio.to_thread(_prepare, tmp, OBJECTS, backend_port)
    procs = []
    try:
        for args in (
            ["sandbox", "--port", str(sandbox_port), "--kubeconfig", str(tmp / "kubeconfig"),
             "--seed", str(tmp / "seed.json")],
            ["backend", "--listen", f"127.0.0.1:{backend_port}", "--db",
             f"sqlite:///{tmp}/large.db", "--tokens", str(tmp / "tokens.yaml")],
        ):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "clustersync", *args,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            )
            procs.append(proc)
            assert proc.stdout is not None
            async with asyncio.timeout(120):
                await proc.stdout.readline()  # each prints one line once it serves
        yield backend_port
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            await proc.wait()


def stored(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return int(conn.execute("SELECT count(*) FROM objects").fetchone()[0])


@pytest.mark.timeout(900)
async def test_fifty_thousand_objects_sync_without_stalling_the_agents_loop(
    tmp_path: Path,
) -> None:
    async with sandbox_and_backend(tmp_path):
        tune_gc()  # as `clustersync agent` does
        config = load_agent_config(str(tmp_path / "agent.yaml"))
        kube = await KubeClient.connect(config.kubeconfig)
        agent = Agent(config, kube)
        lag = 0.0
        peak_outbox = 0

        async def probe() -> None:
            nonlocal lag, peak_outbox
            while True:
                before = time.monotonic()
                await asyncio.sleep(0.01)
                lag = max(lag, time.monotonic() - before - 0.01)
                peak_outbox = max(peak_outbox, len(agent.link.outbox))

        if os.environ.get("CS_LOOP_DEBUG"):
            asyncio.get_running_loop().set_debug(True)
            asyncio.get_running_loop().slow_callback_duration = 0.2
        started = time.monotonic()
        tasks = [asyncio.create_task(agent.run()), asyncio.create_task(probe())]
        try:
            def all_stored() -> bool:
                assert not tasks[0].done(), tasks[0]
                count = stored(tmp_path / "large.db")
                log.info("%d stored; loop lag so far %.3fs", count, lag)
                return count == OBJECTS

            await eventually(all_stored, timeout=780, interval=2.0, what="every object stored")
            log.warning(
                "%d objects synced in %.1fs; agent loop lag at most %.3fs; outbox peak %d",
                OBJECTS, time.monotonic() - started, lag, peak_outbox,
            )
            assert agent.connections == 1, "the link dropped: a heartbeat was missed"
            assert lag < HEARTBEAT / 2
            # A producer waits for room, then queues one step (a reconciliation step holds up to
            # 100 messages); replies to the backend do not wait. Bounded, not 50k frames.
            assert peak_outbox <= OUTBOX_LIMIT + 200
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await kube.close()
