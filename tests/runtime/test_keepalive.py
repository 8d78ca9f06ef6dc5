"""Keepalive a kubescape (Go) peer accepts: no websocket ping frames unless the agent negotiated
clustersync.v1; instead application Ping events, and a read deadline the peer's own pings meet.
Raw websocket clients see every frame (autoping off)."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import pytest
from aiohttp import web

from clustersync.protocol.codec import decode, encode
from clustersync.protocol.messages import ACK_PROTOCOL, Event, Ping
from clustersync.runtime.agent import Agent

try:
    from tests.runtime.harness import CLUSTER_A, CLUSTER_B, World, eventually
    from tests.runtime.test_bad_input import kubescape_headers
except ImportError:
    from harness import CLUSTER_A, CLUSTER_B, World, eventually  # type: ignore[no-redef]
    from test_bad_input import kubescape_headers  # type: ignore[no-redef]

READ_DEADLINE_CLOSE = 4001


def fast_keepalive(world: World) -> None:
    server = world.backend.server
    server.heartbeat = 0.1  # websocket pings, were they sent, would come every 0.1 s
    server.app_ping_interval = 0.2
    server.read_deadline = 1.0


async def test_a_kubescape_agent_gets_ping_events_and_no_ping_frames(world: World) -> None:
    fast_keepalive(world)
    async with aiohttp.ClientSession() as http, http.ws_connect(
        world.backend.ws_url + "/synchronizer", headers=kubescape_headers(CLUSTER_B),
        autoping=False,
    ) as ws:
        assert ws.protocol is None
        seen: list[aiohttp.WSMsgType] = []
        pings = 0
        async with asyncio.timeout(10):
            while pings < 4:  # 0.8 s: eight websocket heartbeats would have gone by
                frame = await ws.receive()
                seen.append(frame.type)
                if frame.type == aiohttp.WSMsgType.BINARY:
                    msg = decode(frame.data)
                    assert msg.event == Event.PING and msg.depth == 0 and msg.msg_id
                    pings += 1
                    await ws.send_bytes(encode(Ping(depth=0, msg_id="keep-me")))
        assert aiohttp.WSMsgType.PING not in seen, seen
        assert not ws.closed


async def test_a_silent_kubescape_agent_is_closed_at_the_read_deadline(world: World) -> None:
    fast_keepalive(world)
    async with aiohttp.ClientSession() as http, http.ws_connect(
        world.backend.ws_url + "/synchronizer", headers=kubescape_headers(CLUSTER_B),
        autoping=False,
    ) as ws:
        async with asyncio.timeout(10):
            while (frame := await ws.receive()).type == aiohttp.WSMsgType.BINARY:
                pass  # the server's pings; this client never answers anything
        assert frame.type == aiohttp.WSMsgType.CLOSE
        assert frame.data == READ_DEADLINE_CLOSE
    await eventually(lambda: not world.connected(CLUSTER_B), what="server to drop B")


async def test_a_kubescape_agent_that_pings_outlives_the_deadline(world: World) -> None:
    fast_keepalive(world)
    async with aiohttp.ClientSession() as http, http.ws_connect(
        world.backend.ws_url + "/synchronizer", headers=kubescape_headers(CLUSTER_B),
        autoping=False,
    ) as ws:
        pings = 0
        async with asyncio.timeout(15):
            while pings < 10:  # 2 s of server pings: twice the read deadline
                frame = await ws.receive()
                assert frame.type == aiohttp.WSMsgType.BINARY, frame
                pings += 1
                await ws.send_bytes(encode(Ping(depth=0, msg_id="alive")))
        assert not ws.closed
        assert world.connected(CLUSTER_B)


async def test_our_agents_keep_websocket_pings_and_get_no_ping_events(world: World) -> None:
    fast_keepalive(world)
    async with aiohttp.ClientSession() as http, http.ws_connect(
        world.backend.ws_url + "/synchronizer", headers=kubescape_headers(CLUSTER_B),
        protocols=(ACK_PROTOCOL,), autoping=False,
    ) as ws:
        assert ws.protocol == ACK_PROTOCOL
        async with asyncio.timeout(10):
            frame = await ws.receive()
        assert frame.type == aiohttp.WSMsgType.PING
        await ws.pong(frame.data)


# ---------------------------------------------------------------- the agent's side


class RecordingServer:
    """A websocket server that records the frame types an agent sends (autoping off). With
    ``ours`` it selects clustersync.v1, as our server does; without, it answers as kubescape's."""

    def __init__(self, ours: bool) -> None:
        self.ours = ours
        self.pings = 0  # websocket ping frames
        self.ping_events = 0  # application Ping messages
        self.site: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(
            autoping=False, protocols=(ACK_PROTOCOL,) if self.ours else ()
        )
        await ws.prepare(request)
        async for frame in ws:
            if frame.type == aiohttp.WSMsgType.PING:
                self.pings += 1
                await ws.pong(frame.data)
            elif frame.type == aiohttp.WSMsgType.BINARY:
                with contextlib.suppress(Exception):  # agent frames this test does not need
                    if decode(frame.data).event == Event.PING:
                        self.ping_events += 1
        return ws

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{path:.*}", self.handle)
        self.site = web.AppRunner(app)
        await self.site.setup()
        site = web.TCPSite(self.site, "127.0.0.1", 0)
        await site.start()
        port = self.site.addresses[0][1]
        self.url = f"ws://127.0.0.1:{port}/synchronizer"

    async def stop(self) -> None:
        if self.site is not None:
            await self.site.cleanup()


@pytest.mark.parametrize("ours", [False, True], ids=["kubescape-server", "clustersync-server"])
async def test_the_agent_pings_a_kubescape_server_with_events_only(
    world: World, ours: bool
) -> None:
    server = RecordingServer(ours)
    await server.start()
    try:
        cluster = await world.add_cluster(CLUSTER_A)
        config = world.agent_config(CLUSTER_A, server=server.url, heartbeat=0.1)
        agent = Agent(config, cluster.kube)
        agent.app_ping_interval = 0.2
        cluster.agent = agent
        cluster.task = asyncio.create_task(agent.run())  # the world stops it at teardown
        if ours:
            await eventually(lambda: server.pings >= 3, what="websocket pings to our server")
            assert server.ping_events == 0
        else:
            # 3 application pings take 0.6 s: six heartbeats' worth, had they been left on
            await eventually(lambda: server.ping_events >= 3, what="application pings")
            assert server.pings == 0
    finally:
        await world.stop_agent(CLUSTER_A)
        await server.stop()
