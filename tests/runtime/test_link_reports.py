"""A server replica's periodic link reports: every live connection once per interval, spread
evenly over it (a thousand at once queued at the ingester), closed connections never.

The reporter publishes on a real embedded bus; its timer is replaced by one that records the
pauses it asks for and lets the loop run on, so the test sees the pacing without waiting."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from clustersync.adapters.bus.base import Delivery
from clustersync.adapters.bus.memory import MemoryBus
from clustersync.protocol.envelope import decode_envelope
from clustersync.runtime.status_report import ALIVE, LinkReporter

INTERVAL = 60.0


@dataclass
class FakeSocket:
    closed: bool = False


@dataclass
class FakeConnection:
    """What a report reads of a server connection (runtime/status_report.LinkFacts)."""

    cluster: str
    account: str = "acme"
    ws: FakeSocket = field(default_factory=FakeSocket)
    last_read: float = 0.0

    protocol: str = "clustersync.v2"
    client: tuple[tuple[str, str], ...] = (("connectionId", "id"),)


async def test_each_round_reports_every_live_connection_at_evenly_spread_times() -> None:
    bus = MemoryBus()
    reported: list[str] = []
    pauses: list[float] = []
    two_rounds = asyncio.Event()

    async def on_report(delivery: Delivery) -> None:
        env = decode_envelope(delivery.data)
        assert dict(env.client)["event"] == ALIVE
        reported.append(env.cluster)

    async def timer(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) > 8:  # two rounds of four, and the ninth pause has begun
            two_rounds.set()
            await asyncio.Event().wait()  # stays here until cancelled
        await asyncio.sleep(0)

    subscription = await bus.subscribe("cs.report.>", "test", on_report)
    connections = [FakeConnection(f"c{i}") for i in range(5)]
    connections[2].ws.closed = True
    reporter = LinkReporter(bus, "r1", interval=INTERVAL)
    task = asyncio.create_task(reporter.report_periodically(connections, sleep=timer))
    try:
        async with asyncio.timeout(10):
            await two_rounds.wait()
            while len(reported) < 8:  # the embedded bus delivers on its own task
                await asyncio.sleep(0.01)  # a poll interval, not synchronisation
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await subscription.stop()
        await bus.close()

    live = ["c0", "c1", "c3", "c4"]
    assert reported == live + live
    # One pause before each report, the round's four due times a quarter interval apart (the
    # fake timer returns at once, so each pause is nearly the whole offset of its due time).
    first_round = pauses[:4]
    for i, pause in enumerate(first_round, 1):
        assert abs(pause - i * INTERVAL / 4) < INTERVAL / 20, first_round
