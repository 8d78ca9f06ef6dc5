"""NatsBus with idle durables: pull requests live longer while nothing arrives, a message still
goes out at once, and a NATS restart does not leave an idle durable waiting out its long request.

The pull requests are watched by an independent observer: a plain subscriber on the JetStream
API subject the client sends them to, on the same server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import nats
import orjson
from nats.aio.msg import Msg

from clustersync.adapters.bus.base import Delivery
from clustersync.adapters.bus.nats import NatsBus, consumer_name, open_nats

try:
    from tests.contracts import load_contract
    from tests.servers import start_nats
except ImportError:  # plain `pytest`: tests/ itself is on sys.path
    from contracts import load_contract  # type: ignore[no-redef]
    from servers import start_nats  # type: ignore[no-redef]

_contract = load_contract("bus_contract", Path(__file__).with_name("contract.py"))
wait_for, unique = _contract.wait_for, _contract.unique


@dataclass(frozen=True)
class PullRequest:
    at: float  # time.monotonic() when the observer saw it
    expires: float  # seconds the server keeps it waiting (0: none given)


@asynccontextmanager
async def pull_requests(url: str, stream: str, durable: str) -> AsyncIterator[list[PullRequest]]:
    """Every pull request sent for ``durable``, as the server receives them."""
    seen: list[PullRequest] = []

    async def record(msg: Msg) -> None:
        body = orjson.loads(msg.data) if msg.data else {}
        seen.append(PullRequest(time.monotonic(), body.get("expires", 0) / 1e9))

    # The observer rides out a server restart like any client.
    nc = await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.5)
    try:
        subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer_name(durable)}"
        await nc.subscribe(subject, cb=record)
        await nc.flush()
        yield seen
    finally:
        await nc.close()


@dataclass(frozen=True)
class IdleDurable:
    subject: str
    got: list[Delivery]  # what the durable's handler received
    seen: list[PullRequest]  # the pull requests its consumer sent


@asynccontextmanager
async def idle_durable(bus: NatsBus, url: str, stream: str) -> AsyncIterator[IdleDurable]:
    """A new durable subscribed on a subject nobody publishes to yet, its pull requests
    watched from outside."""
    u = unique()
    subject, durable = f"cs.down.{u}", f"down-{u}"
    got: list[Delivery] = []

    async def handler(delivery: Delivery) -> None:
        got.append(delivery)

    async with pull_requests(url, stream, durable) as seen:
        await bus.subscribe(subject, durable, handler)
        yield IdleDurable(subject, got, seen)


def longest(seen: list[PullRequest]) -> float:
    return max((p.expires for p in seen), default=0.0)


async def test_an_idle_durable_asks_less_often_and_still_gets_a_message_at_once(
    nats_url: str, nats_stream: str
) -> None:
    bus = await open_nats(nats_url, stream=nats_stream)
    try:
        async with idle_durable(bus, nats_url, nats_stream) as idle:
            subject, got, seen = idle.subject, idle.got, idle.seen
            # Nothing to read: each request outlives the one before (2 s when busy, today's
            # fixed lifetime, then longer), so the idle durable asks less and less often.
            await wait_for(lambda: longest(seen) >= 8, timeout=30)
            lifetimes = [p.expires for p in seen]
            assert lifetimes[0] <= 2.5
            assert lifetimes == sorted(lifetimes)
            assert len(seen) <= 4  # 2 s, 4 s, 8 s: not one request every 2 s
            # The long request is outstanding on the server: a message goes out at once, not
            # when the request expires (about 8 s from now).
            asked = len(seen)
            published = time.monotonic()
            await bus.publish(subject, b"after a quiet time")
            await wait_for(lambda: len(got) == 1, timeout=4)
            assert time.monotonic() - published < 4
            assert got[0].data == b"after a quiet time"
            # Messages flow again: the next request is short-lived.
            await wait_for(lambda: len(seen) > asked, timeout=10)
            assert seen[asked].expires <= 2.5
    finally:
        await bus.close()


async def test_an_idle_durable_asks_again_as_soon_as_a_restarted_server_is_back(
    tmp_path: Path,
) -> None:
    server = await asyncio.to_thread(start_nats, tmp_path)
    try:
        bus = await open_nats(server.url)
        try:
            async with idle_durable(bus, server.url, bus.stream) as idle:
                subject, got, seen = idle.subject, idle.got, idle.seen
                await wait_for(lambda: longest(seen) >= 16, timeout=40)
                # The restart drops the 16 s request; the consumer must not wait it out.
                await asyncio.to_thread(server.restart)
                await bus.publish(subject, b"after the restart")  # retries until reconnected
                published = time.monotonic()
                await wait_for(lambda: len(got) == 1, timeout=8)
                assert time.monotonic() - published < 8
                assert got[0].data == b"after the restart"
        finally:
            await bus.close()
    finally:
        await asyncio.to_thread(server.stop)
