"""One active connection per cluster across server replicas: a newer connection on any replica
closes the older one with 4000, and never the other way round.

Two replicas over one embedded bus in this process, and two ``clustersync server`` processes
over a NATS JetStream server; the agents are raw kubescape-style websocket clients."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import nats as nats_client
import orjson
import pytest
import yaml

from clustersync.adapters.bus.memory import MemoryBus
from clustersync.adapters.bus.nats import consumer_name
from clustersync.model import Kind, ObjectRef
from clustersync.model.identity import Identity, TokenTable
from clustersync.protocol.codec import decode
from clustersync.protocol.envelope import Envelope, down_subject, durable_token, encode_envelope
from clustersync.protocol.messages import PutObject, new_msg_id
from clustersync.protocol.takeover import TAKEOVER_SUBJECT
from clustersync.runtime.http import Site
from clustersync.runtime.server import SyncServer
from clustersync.runtime.services import server_site
from clustersync.runtime.takeover import IDLE_EXPIRY

try:
    from tests.servers import free_port, start_nats
except ImportError:  # plain `pytest` from the tests directory
    from servers import free_port, start_nats  # type: ignore[no-redef]

ACCOUNT = "acme"
TOKENS = {"east": "takeover-token-east", "west": "takeover-token-west"}
SUPERSEDED = 4000  # kubescape's and our agents' "another connection took over" code


def headers(cluster: str) -> dict[str, str]:
    return {"X-API-KEY": TOKENS[cluster], "X-API-ACCOUNT": ACCOUNT, "X-API-CLUSTER": cluster}


async def until(check: Callable[[], Any], what: str, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            value = check()
            if isinstance(value, Awaitable):
                value = await value
            if value:
                return
            await asyncio.sleep(0.02)  # a poll interval, not a synchronisation delay
    raise AssertionError(what)


async def close_code(ws: aiohttp.ClientWebSocketResponse, timeout: float = 15.0) -> int | None:
    """Read until the server closes; the close code it sent."""
    async with asyncio.timeout(timeout):
        while (await ws.receive()).type not in (
            aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING
        ):
            pass
    return ws.close_code


class Replicas:
    """Two server replicas in this process, sharing one embedded bus."""

    def __init__(self) -> None:
        self.bus = MemoryBus(redelivery_delay=0.05)
        tokens = TokenTable({t: Identity(ACCOUNT, c) for c, t in TOKENS.items()})
        self.servers = [SyncServer(self.bus, tokens, replica=f"r{i}") for i in range(2)]
        self.sites: list[Site] = [server_site(server) for server in self.servers]
        self.urls: list[str] = []

    async def start(self) -> None:
        for site in self.sites:
            self.urls.append("ws" + (await site.start()).removeprefix("http"))

    async def stop(self) -> None:
        for site in self.sites:
            await site.stop()
        await self.bus.close()

    def claim(self, replica: int, cluster: str) -> int:
        conn = self.servers[replica].connections.get((ACCOUNT, cluster))
        return conn.claim if conn is not None else 0

    def settled(self, cluster: str, claim: int) -> bool:
        """Both replicas have seen the notice ``claim``."""
        return all(s.takeovers.newest.get((ACCOUNT, cluster)) == claim for s in self.servers)


@pytest.fixture
async def replicas() -> AsyncIterator[Replicas]:
    pair = Replicas()
    await pair.start()
    try:
        yield pair
    finally:
        await pair.stop()


async def test_a_newer_connection_on_another_replica_closes_the_older(
    replicas: Replicas,
) -> None:
    async with aiohttp.ClientSession() as http:
        bystander = await http.ws_connect(replicas.urls[0] + "/s", headers=headers("west"))
        first = await http.ws_connect(replicas.urls[0] + "/s", headers=headers("east"))
        await until(lambda: replicas.claim(0, "east"), "east connected to replica 0")

        second = await http.ws_connect(replicas.urls[1] + "/s", headers=headers("east"))
        assert await close_code(first) == SUPERSEDED
        await until(lambda: replicas.claim(1, "east"), "east connected to replica 1")
        claim = replicas.claim(1, "east")
        await until(lambda: replicas.settled("east", claim), "both replicas saw the takeover")
        await until(lambda: ("acme", "east") not in replicas.servers[0].connections,
                    "replica 0 to drop east")
        assert not second.closed, "the newer connection must survive its own notice"

        # Messages for the cluster now reach the connection that won.
        ref = ObjectRef(Kind("", "v1", "configmaps"), "shop", "after-takeover")
        put = PutObject(ref=ref, checksum="", object=orjson.dumps({"metadata": {}}), depth=1,
                        msg_id=new_msg_id())
        await replicas.bus.publish(
            down_subject(ACCOUNT, "east"), encode_envelope(Envelope(ACCOUNT, "east", put))
        )
        async with asyncio.timeout(10):
            frame = await second.receive()
        assert decode(frame.data).ref == ref

        # And back: a newer connection on replica 0 closes the one on replica 1.
        third = await http.ws_connect(replicas.urls[0] + "/s", headers=headers("east"))
        assert await close_code(second) == SUPERSEDED
        await until(lambda: replicas.claim(0, "east"), "east back on replica 0")
        claim = replicas.claim(0, "east")
        await until(lambda: replicas.settled("east", claim), "both replicas saw it")
        assert not third.closed
        assert not bystander.closed, "another cluster is never touched"
        for ws in (bystander, third):
            await ws.close()


async def test_an_old_notice_replayed_from_the_bus_closes_nothing(replicas: Replicas) -> None:
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(replicas.urls[0] + "/s", headers=headers("east"))
        await until(lambda: replicas.claim(0, "east"), "east connected")
        claim = replicas.claim(0, "east")
        await until(lambda: replicas.settled("east", claim), "both replicas saw the claim")
        # Replayed history: a notice older than the connection's own claim.
        replicas.servers[0].takeovers._note((ACCOUNT, "east"), claim - 1)
        # Garbage on the control subject is counted and skipped.
        await replicas.bus.publish(TAKEOVER_SUBJECT, b"not a notice")
        marker = await replicas.bus.publish(TAKEOVER_SUBJECT, orjson.dumps(
            {"account": ACCOUNT, "cluster": "elsewhere", "replica": "r9"}))
        await until(
            lambda: replicas.servers[0].takeovers.newest.get((ACCOUNT, "elsewhere")) == marker,
            "replica 0 to read past the garbage",
        )
        assert not ws.closed
        assert replicas.claim(0, "east") == claim
        await ws.close()


# ---------------------------------------------------------------- two processes, NATS


async def _spawn_server(tmp: Path, name: str, nats_url: str, tokens: Path) -> tuple[Any, int]:
    port = free_port()
    log = (tmp / f"{name}.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "clustersync", "server", "--listen", f"127.0.0.1:{port}",
        "--bus", nats_url, "--tokens", str(tokens), "--replica", name,
        stdout=log, stderr=asyncio.subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )

    async def healthy() -> bool:
        if proc.returncode is not None:
            raise AssertionError(f"{name} exited: {(tmp / f'{name}.log').read_text()[-2000:]}")
        try:
            async with aiohttp.ClientSession() as http, http.get(
                f"http://127.0.0.1:{port}/healthz"
            ) as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    await until(healthy, f"{name} to serve", timeout=30)
    return proc, port


async def test_two_server_processes_over_nats_keep_one_connection(tmp_path: Path) -> None:
    nats = start_nats(tmp_path / "nats")
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump(
        [{"token": t, "account": ACCOUNT, "cluster": c} for c, t in TOKENS.items()]
    ))
    procs: list[Any] = []
    try:
        ports = []
        for name in ("replica-a", "replica-b"):
            proc, port = await _spawn_server(tmp_path, name, nats.url, tokens)
            procs.append(proc)
            ports.append(port)
        async with aiohttp.ClientSession() as http:
            older = await http.ws_connect(
                f"ws://127.0.0.1:{ports[0]}/s", headers=headers("east"))
            # Let replica A publish its claim before the newer connection is made: poll A's
            # metrics until the agent counts as connected.
            await until(lambda: _connected(http, ports[0], 1), "east on replica A")
            newer = await http.ws_connect(
                f"ws://127.0.0.1:{ports[1]}/s", headers=headers("east"))
            assert await close_code(older, timeout=20) == SUPERSEDED
            await until(lambda: _connected(http, ports[0], 0), "replica A dropped east")
            await until(lambda: _connected(http, ports[1], 1), "east on replica B")
            assert not newer.closed
            await newer.close()
        # Each replica's durable is named after it: one a killed replica leaves behind is
        # forgotten by NATS after takeover.IDLE_EXPIRY without a reader.
        nc = await nats_client.connect(nats.url)
        try:
            js = nc.jetstream()
            for name in ("replica-a", "replica-b"):
                consumer = consumer_name(f"takeover-{durable_token(name)}")
                info = await js.consumer_info("CLUSTERSYNC", consumer)  # the default stream
                assert info.config.inactive_threshold == IDLE_EXPIRY
        finally:
            await nc.close()
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                async with asyncio.timeout(15):
                    await proc.wait()
        nats.stop()


async def _connected(http: aiohttp.ClientSession, port: int, count: int) -> bool:
    async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    line = next(ln for ln in text.splitlines() if ln.startswith("clustersync_connected_agents "))
    return float(line.split()[1]) == count
