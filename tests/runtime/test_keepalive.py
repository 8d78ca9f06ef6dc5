"""Keepalive a kubescape (Go) peer accepts: no websocket ping frames unless the agent negotiated
clustersync.v1; instead application Ping events, and a read deadline the peer's own pings meet.
Raw websocket clients see every frame (autoping off)."""

from __future__ import annotations

import asyncio

import aiohttp

from clustersync.protocol.codec import decode, encode
from clustersync.protocol.messages import ACK_PROTOCOL, Event, Ping

try:
    from tests.runtime.harness import CLUSTER_B, World, eventually
    from tests.runtime.test_bad_input import kubescape_headers
except ImportError:
    from harness import CLUSTER_B, World, eventually  # type: ignore[no-redef]
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
