"""Many agents connecting at once: the server sets their bus consumers up a few at a time.

A thousand agents dialing one server together made a thousand JetStream consumer creations wait
on each other until most timed out and their agents were closed. Here the bus's ``subscribe``
is held open (a real embedded bus, with a gate in front of it) so the test can see how many
connections are inside their setup at once, then let them all through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from clustersync.adapters.bus.base import Handler
from clustersync.adapters.bus.memory import MemoryBus, MemorySubscription
from clustersync.model.identity import Identity, TokenTable
from clustersync.protocol.envelope import down_subject
from clustersync.protocol.messages import ACK_PROTOCOL
from clustersync.runtime.server import SyncServer
from clustersync.runtime.services import server_site

AGENTS = 7
SLOTS = 2


class GatedBus(MemoryBus):
    """An embedded bus whose consumer creations wait for the test to open the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.inside = 0
        self.most_inside = 0
        self.created: list[str] = []

    async def subscribe(
        self, subject_filter: str, durable: str, handler: Handler, *,
        idle_expiry: float | None = None,
    ) -> MemorySubscription:
        if not subject_filter.startswith("cs.down."):  # the takeover notices: not gated
            return await super().subscribe(subject_filter, durable, handler,
                                           idle_expiry=idle_expiry)
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        try:
            await self.gate.wait()
            subscription = await super().subscribe(subject_filter, durable, handler)
        finally:
            self.inside -= 1
        self.created.append(subject_filter)
        return subscription


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


async def test_a_connect_storm_is_set_up_a_few_connections_at_a_time() -> None:
    bus = GatedBus()
    tokens = TokenTable({f"token-{i}": Identity("acme", f"c{i}") for i in range(AGENTS)})
    server = SyncServer(bus, tokens, setup_concurrency=SLOTS)
    site = server_site(server)
    url = "ws" + (await site.start()).removeprefix("http")
    try:
        async with aiohttp.ClientSession() as http:
            sockets = await asyncio.gather(*(
                http.ws_connect(url, headers={"X-API-KEY": f"token-{i}"},
                                protocols=(ACK_PROTOCOL,))
                for i in range(AGENTS)
            ))
            # Every connection has its takeover claim (the step before its consumer)...
            await until(lambda: len(server.connections) == AGENTS
                        and all(c.claim for c in server.connections.values()),
                        "every agent accepted and claimed")
            # ... but only SLOTS of them are creating their consumer; the others wait.
            assert bus.inside == SLOTS
            bus.gate.set()
            await until(lambda: len(bus.created) == AGENTS, "every consumer created")
            assert bus.most_inside == SLOTS
            assert sorted(bus.created) == sorted(down_subject("acme", f"c{i}")
                                                 for i in range(AGENTS))
            assert all(not ws.closed for ws in sockets)
            for ws in sockets:
                await ws.close()
    finally:
        bus.gate.set()  # also when an assertion failed: the handlers must not hang the stop
        await site.stop()
        await bus.close()
