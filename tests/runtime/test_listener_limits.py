"""Every listener protects itself: a header deadline, a connection limit, a message-rate limit,
and log lines that stay few however much bad input arrives. Real sockets throughout."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import aiohttp
import pytest

from clustersync.adapters.logthrottle import LogThrottle
from clustersync.protocol.codec import encode
from clustersync.protocol.messages import Ping
from clustersync.runtime.listener import ListenerLimits

try:
    from tests.runtime.harness import (
        CLUSTER_A,
        CLUSTER_B,
        CONFIGMAPS,
        Probe,
        World,
        configmap,
        eventually,
    )
    from tests.runtime.test_bad_input import kubescape_headers
except ImportError:
    from harness import (  # type: ignore[no-redef]
        CLUSTER_A,
        CLUSTER_B,
        CONFIGMAPS,
        Probe,
        World,
        configmap,
        eventually,
    )
    from test_bad_input import kubescape_headers  # type: ignore[no-redef]


class LineCounter(logging.Handler):
    """Counts the lines a real log handler would write, behind the CLI's throttle."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def log_lines() -> Iterator[LineCounter]:
    counter = LineCounter()
    counter.addFilter(LogThrottle(interval=60.0, burst=3))
    root = logging.getLogger()
    level = root.level
    root.addHandler(counter)
    root.setLevel(logging.INFO)
    try:
        yield counter
    finally:
        root.removeHandler(counter)
        root.setLevel(level)


def events(reason: str, listener: str = "backend") -> Probe:
    return Probe.sample("clustersync_listener_events_total", listener=listener, reason=reason)


async def _slow_client(port: int, stop: asyncio.Event) -> bool:
    """Trickles header lines without ever finishing them; True once the server closed on it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /synchronizer HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        await writer.drain()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    if await reader.read(1024) == b"":
                        return True
            writer.write(b"z")  # one more byte of a header line that never ends
            await writer.drain()
        return False
    except ConnectionError:
        return True
    finally:
        writer.close()


def _port(world: World) -> int:
    return int(world.backend.url.rsplit(":", 1)[1])


async def test_slow_headers_are_cut_off_while_a_good_agent_syncs(
    world: World, log_lines: LineCounter
) -> None:
    world.backend.gate.limits = ListenerLimits(header_timeout=0.5)
    world.backend.gate.max_connections = 40
    timed_out, evicted = events("header_timeout"), events("evicted")
    suppressed = Probe.sample("clustersync_log_suppressed_total", logger="clustersync.listener")
    stop = asyncio.Event()
    slow = [asyncio.create_task(_slow_client(_port(world), stop)) for _ in range(120)]
    try:
        # 120 slow clients against a table of 40: the good agent connects and syncs meanwhile.
        await world.add_cluster(CLUSTER_A)
        world.start_agent(CLUSTER_A)
        await world.wait_synced(CLUSTER_A)
        cluster = world.clusters[CLUSTER_A]
        cluster.create(configmap("during-slowloris"))
        await eventually(
            lambda: world.matches_live(CLUSTER_A, CONFIGMAPS, "shop", "during-slowloris"),
            what="a change during the flood to sync",
        )
        async with asyncio.timeout(30):  # not asyncio.wait_for: it can swallow cancellation
            cut = await asyncio.gather(*slow)
    finally:
        stop.set()
        await asyncio.gather(*slow, return_exceptions=True)
    assert all(cut), "every slow client must be disconnected by the server"
    assert timed_out.delta + evicted.delta >= 120
    assert timed_out.delta >= 1 and evicted.delta >= 1
    listener_lines = [line for line in log_lines.lines if "backend:" in line]
    # 3 lines per template per minute (header timeout, eviction), whatever the flood's size
    assert 1 <= len(listener_lines) <= 6, listener_lines
    assert suppressed.delta >= 100, "the rest were dropped, and counted"


async def _health(world: World) -> aiohttp.ClientResponse:
    async with aiohttp.ClientSession() as fresh, fresh.get(
        world.backend.url + "/healthz"
    ) as response:
        await response.read()
        return response


async def test_a_table_full_of_busy_connections_answers_503_with_retry_after(
    synced: World,
) -> None:
    world = synced
    gate = world.backend.gate
    busy = len(gate.open) - len(gate.evictable)  # cluster A's agent socket
    gate.max_connections = busy + 1
    refused = events("connection_limit")
    async with aiohttp.ClientSession() as http, http.ws_connect(
        world.backend.ws_url + "/synchronizer", headers=kubescape_headers(CLUSTER_B)
    ):
        await eventually(lambda: world.connected(CLUSTER_B), what="cluster B connected")

        async def refused_with_503() -> bool:
            # Idle keep-alive connections of other clients are closed to make room first.
            response = await _health(world)
            if response.status == 503:
                assert response.headers["Retry-After"] == "5"
                return True
            return False

        await eventually(refused_with_503, what="a 503 once only busy sockets are left")
        assert refused.delta >= 1
        assert world.connected(CLUSTER_A) and world.connected(CLUSTER_B)
    await eventually(lambda: not world.connected(CLUSTER_B), what="cluster B gone")

    async def healthy() -> bool:
        return (await _health(world)).status == 200

    await eventually(healthy, what="a freed slot to admit a new client")
    assert world.connected(CLUSTER_A)


async def test_an_idle_keep_alive_connection_makes_room(synced: World) -> None:
    world = synced
    gate = world.backend.gate
    evicted = events("evicted")
    async with aiohttp.ClientSession() as idle:
        async with idle.get(world.backend.url + "/healthz") as response:
            assert response.status == 200
            await response.read()
        # That connection now idles in the session's pool: the table is full with it.
        gate.max_connections = len(gate.open)
        assert (await _health(world)).status == 200
        assert evicted.delta >= 1


async def test_a_flooding_agent_is_closed_with_1008_and_others_carry_on(synced: World) -> None:
    world = synced
    world.backend.server.message_rate = 100
    world.backend.server.message_burst = 500
    limited = Probe.bad_input("server", "message_rate")
    async with aiohttp.ClientSession() as http, http.ws_connect(
        world.backend.ws_url + "/synchronizer", headers=kubescape_headers(CLUSTER_B)
    ) as flood:
        ping = encode(Ping(depth=0, msg_id="flood"))
        with contextlib.suppress(ConnectionError):
            for _ in range(5000):
                await flood.send_bytes(ping)
        async with asyncio.timeout(10):
            while (frame := await flood.receive()).type != aiohttp.WSMsgType.CLOSE:
                pass
        assert frame.data == 1008
        assert frame.extra == "message rate limit exceeded"
    assert limited.delta == 1
    cluster = world.clusters[CLUSTER_A]
    cluster.create(configmap("after-flood"))
    await eventually(
        lambda: world.matches_live(CLUSTER_A, CONFIGMAPS, "shop", "after-flood"),
        what="cluster A to keep syncing",
    )
    assert world.connected(CLUSTER_A)
