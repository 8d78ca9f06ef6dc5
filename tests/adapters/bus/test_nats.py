"""NatsBus: the shared Bus contract plus JetStream-specific behaviour (stream and consumer
configuration, retention for absent subscribers, slow handlers, server restarts)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.js.api import AckPolicy, RetentionPolicy, StorageType

from clustersync.adapters.bus.base import BusError, Delivery
from clustersync.adapters.bus.nats import NatsBus, consumer_name, open_nats

try:
    from tests.servers import free_port, start_nats
except ImportError:  # plain `pytest`: tests/ itself is on sys.path (see tests/conftest.py)
    from servers import free_port, start_nats  # type: ignore[no-redef]




try:
    from tests.contracts import load_contract
except ImportError:  # plain `pytest`: tests/ itself is on sys.path
    from contracts import load_contract  # type: ignore[no-redef]

_contract = load_contract("bus_contract", Path(__file__).with_name("contract.py"))
BusContract = _contract.BusContract
Recorder, wait_for, unique = _contract.Recorder, _contract.wait_for, _contract.unique


@pytest.fixture
async def bus(nats_url: str, nats_stream: str) -> AsyncIterator[NatsBus]:
    # Short ack_wait and no nak delay: the contract expects fast redelivery.
    bus = await open_nats(nats_url, stream=nats_stream, ack_wait=2.0, redelivery_delay=0)
    yield bus
    await bus.close()


class TestNatsBus(BusContract):  # type: ignore[misc,valid-type]  # loaded by path
    """The contract, with the module-level ``bus`` fixture."""

    async def restarted(self, bus: NatsBus) -> NatsBus:
        # The stream is lost (deleted, or the server lost its store) under a running process.
        await _delete_stream(bus)
        return bus


async def _delete_stream(bus: NatsBus, recreate: bool = False) -> None:
    nc = await nats.connect(bus._nc.connected_url.geturl())  # type: ignore[union-attr]
    try:
        js = nc.jetstream()
        config = (await js.stream_info(bus.stream)).config
        await js.delete_stream(bus.stream)
        if recreate:  # as an operator would, from the same definition
            await js.add_stream(config)
    finally:
        await nc.close()


async def _info(url: str, stream: str, consumer: str | None = None) -> object:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        if consumer is None:
            return await js.stream_info(stream)
        return await js.consumer_info(stream, consumer)
    finally:
        await nc.close()


async def test_stream_is_file_backed_limits_retention(nats_url: str, nats_stream: str) -> None:
    bus = await open_nats(nats_url, stream=nats_stream, max_age=3600, max_bytes=1 << 20)
    await bus.close()
    info = await _info(nats_url, nats_stream)
    config = info.config  # type: ignore[attr-defined]
    assert config.retention == RetentionPolicy.LIMITS
    assert config.storage == StorageType.FILE
    assert config.subjects == ["cs.>", "cs"]
    assert (config.max_age, config.max_bytes) == (3600, 1 << 20)
    assert 0 < config.duplicate_window <= 3600
    # Opening again with other limits updates the stream in place.
    bus = await open_nats(nats_url, stream=nats_stream, max_age=7200)
    await bus.close()
    info = await _info(nats_url, nats_stream)
    assert info.config.max_age == 7200  # type: ignore[attr-defined]


async def test_consumer_is_durable_pull_one_in_flight(bus: NatsBus, nats_url: str) -> None:
    u = unique()
    durable = f"ingest.{u} x*"  # dots, spaces and wildcards are not allowed in NATS names
    sub = await bus.subscribe(f"cs.up.{u}.>", durable, Recorder())
    await sub.stop()
    info = await _info(nats_url, bus.stream, consumer_name(durable))
    config = info.config  # type: ignore[attr-defined]
    assert config.durable_name == consumer_name(durable)
    assert "." not in config.durable_name and " " not in config.durable_name
    assert config.filter_subject == f"cs.up.{u}.>"
    assert config.ack_policy == AckPolicy.EXPLICIT
    assert config.max_ack_pending == 1
    assert config.ack_wait == 2.0


async def test_durable_keeps_messages_while_nobody_subscribes(bus: NatsBus) -> None:
    u = unique()
    subject, durable = f"cs.down.{u}.c1", f"down-{u}"
    first = Recorder()
    sub = await bus.subscribe(subject, durable, first)
    await bus.publish(subject, b"1")
    await wait_for(lambda: len(first.acked()) == 1)
    await sub.stop()
    # Published while the durable has no subscriber: kept by the stream and the consumer.
    seqs = [await bus.publish(subject, b"%d" % i) for i in range(2, 6)]
    second = Recorder()
    # ack_wait is 2 s: arriving well within it shows stop() stranded no message in flight.
    started = time.monotonic()
    await bus.subscribe(subject, durable, second)
    await wait_for(lambda: len(second.acked()) == 4)
    assert time.monotonic() - started < 1.5
    assert [d.seq for d in second.acked()] == seqs
    assert [d.attempt for d in second.acked()] == [1, 1, 1, 1]
    assert first.data() == [b"1"]


async def test_a_durable_left_unread_is_forgotten_after_its_idle_expiry(
    bus: NatsBus, nats_url: str
) -> None:
    # Two replicas' takeover durables with a short expiry: one replica is gone (stopped, as a
    # killed one stops reading), the other keeps reading.
    u = unique()
    gone = await bus.subscribe(f"cs.takeover.{u}", f"takeover-gone-{u}", Recorder(),
                               idle_expiry=1.0)  # fmt: skip
    live = Recorder()
    await bus.subscribe(f"cs.takeover.{u}", f"takeover-live-{u}", live, idle_expiry=1.0)
    await gone.stop()
    config = (await _info(nats_url, bus.stream, consumer_name(f"takeover-gone-{u}"))).config
    assert config.inactive_threshold == 1.0  # type: ignore[attr-defined]

    async def forgotten() -> bool:
        try:
            await _info(nats_url, bus.stream, consumer_name(f"takeover-gone-{u}"))
        except nats.js.errors.NotFoundError:
            return True
        return False

    async with asyncio.timeout(20):
        while not await forgotten():
            await asyncio.sleep(0.1)
    # The one still read is kept and still delivers.
    await _info(nats_url, bus.stream, consumer_name(f"takeover-live-{u}"))
    await bus.publish(f"cs.takeover.{u}", b"notice")
    await wait_for(lambda: live.data() == [b"notice"])


async def test_durables_are_kept_without_an_idle_expiry(bus: NatsBus, nats_url: str) -> None:
    u = unique()
    sub = await bus.subscribe(f"cs.down.{u}.c1", f"down-{u}", Recorder())
    await sub.stop()
    config = (await _info(nats_url, bus.stream, consumer_name(f"down-{u}"))).config
    assert not config.inactive_threshold  # type: ignore[attr-defined]


async def test_durable_with_another_filter_is_refused(bus: NatsBus) -> None:
    u = unique()
    await bus.subscribe(f"cs.up.{u}.a", f"d-{u}", Recorder())
    with pytest.raises(BusError, match="already filters"):
        await bus.subscribe(f"cs.up.{u}.b", f"d-{u}", Recorder())


async def test_publish_outside_the_stream_is_refused_fast(bus: NatsBus) -> None:
    started = time.monotonic()
    with pytest.raises(BusError, match="outside stream"):
        await bus.publish("other.subject", b"x")
    assert time.monotonic() - started < 1


async def ack_pending(url: str, stream: str, durable: str) -> int:
    """Messages of a durable delivered and not yet acked, as the server counts them."""
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().consumer_info(stream, consumer_name(durable))
        assert info.num_ack_pending is not None
        return info.num_ack_pending
    finally:
        await nc.close()


async def test_slow_handler_is_not_redelivered_after_ack_wait(
    nats_url: str, nats_stream: str
) -> None:
    bus = await open_nats(nats_url, stream=nats_stream, ack_wait=1.0, redelivery_delay=0)
    try:
        u = unique()
        seen: list[Delivery] = []
        finished = asyncio.Event()

        async def slow(delivery: Delivery) -> None:
            seen.append(delivery)
            await asyncio.sleep(2.5)  # the slow work: longer than ack_wait
            finished.set()

        await bus.subscribe(f"cs.up.{u}.>", f"slow-{u}", slow)
        await bus.subscribe(f"cs.up.{u}.>", f"slow-{u}", slow)
        await bus.publish(f"cs.up.{u}.c1", b"x")
        async with asyncio.timeout(20):
            await finished.wait()
            # Until the server has the ack (sent without waiting for it), a redelivery could
            # still come; a redelivered copy would still be in a handler, awaiting its ack.
            while await ack_pending(nats_url, nats_stream, f"slow-{u}"):
                await asyncio.sleep(0.05)  # a poll interval
        assert [(d.data, d.attempt) for d in seen] == [(b"x", 1)]
    finally:
        await bus.close()


async def test_unreachable_server_fails_fast() -> None:
    started = time.monotonic()
    with pytest.raises(BusError, match="cannot connect"):
        await open_nats(f"nats://127.0.0.1:{free_port()}")
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("url", ["not a url", "http://127.0.0.1:4222", "nats://127.0.0.1:99999"])
async def test_bad_url(url: str) -> None:
    with pytest.raises(BusError) as info:
        await open_nats(url)
    assert "\n" not in str(info.value)


async def test_closed_bus_refuses(bus: NatsBus) -> None:
    await bus.close()
    with pytest.raises(BusError):
        await bus.publish("cs.up.a.b", b"x")
    await bus.close()  # idempotent


async def test_redelivery_and_retention_across_server_restart(tmp_path: Path) -> None:
    server = await asyncio.to_thread(start_nats, tmp_path)
    try:
        bus = await open_nats(server.url, ack_wait=2.0, redelivery_delay=0)
        try:
            u = unique()
            subject = f"cs.up.{u}.c1"
            release = asyncio.Event()
            seen: list[Delivery] = []

            async def handler(delivery: Delivery) -> None:
                seen.append(delivery)
                if delivery.attempt == 1 and delivery.data == b"a":
                    await release.wait()
                    raise RuntimeError("fail the delivery that spans the restart")

            first = await bus.publish(subject, b"a")
            await bus.subscribe(subject, f"r-{u}", handler)
            await wait_for(lambda: len(seen) == 1)
            await asyncio.to_thread(server.restart)
            release.set()
            # publish() retries until the client has reconnected.
            second = await bus.publish(subject, b"b")
            assert second > first  # the stream survived with its sequence
            await wait_for(lambda: [d.data for d in seen][-1:] == [b"b"], timeout=20)
            assert [(d.data, d.seq) for d in seen if d.attempt > 1][:1] == [(b"a", first)]
            assert [d.data for d in seen if d.attempt == 1] == [b"a", b"b"]
        finally:
            await bus.close()
    finally:
        await asyncio.to_thread(server.stop)


async def test_stream_recreated_under_a_running_subscriber(bus: NatsBus, nats_url: str) -> None:
    u = unique()
    subject = f"cs.up.{u}.c1"
    rec = Recorder()
    await bus.subscribe(subject, f"ingest-{u}", rec)
    old = [await bus.publish(subject, b"old-%d" % i) for i in range(3)]
    await wait_for(lambda: len(rec.acked()) == 3)
    await _delete_stream(bus, recreate=True)
    # Another process publishes into the new stream: its sequence starts at 1 again.
    nc = await nats.connect(nats_url)
    try:
        for i in range(2):
            await nc.jetstream().publish(subject, b"new-%d" % i, stream=bus.stream)
    finally:
        await nc.close()
    await wait_for(lambda: len(rec.acked()) == 5, timeout=20)
    new = [d for d in rec.acked() if d.data.startswith(b"new-")]
    assert [d.data for d in new] == [b"new-0", b"new-1"]
    assert min(d.seq for d in new) > max(old)  # not refused as stale by the store
    assert new[0].seq < new[1].seq


async def test_a_flooding_cluster_cannot_push_out_another_clusters_messages(
    nats_url: str, nats_stream: str
) -> None:
    bus = await open_nats(nats_url, stream=nats_stream, max_msgs_per_subject=20)
    try:
        u = unique()
        pushes = [await bus.publish(f"cs.down.{u}.a", b"push-%d" % i) for i in range(3)]
        for i in range(200):  # cluster b floods its own subjects
            await bus.publish(f"cs.up.{u}.b.{i % 2}", b"frame")
        info = await _info(nats_url, nats_stream)
        assert info.config.max_msgs_per_subject == 20  # type: ignore[attr-defined]
        assert info.state.messages == 3 + 2 * 20  # type: ignore[attr-defined]
        rec = Recorder()
        await bus.subscribe(f"cs.down.{u}.a", f"down-{u}-a", rec)
        await wait_for(lambda: len(rec.acked()) == 3)
        assert [d.seq for d in rec.acked()] == pushes
    finally:
        await bus.close()


async def test_stream_and_consumer_replaced_by_another_process(
    bus: NatsBus, nats_url: str
) -> None:
    """Another replica recreated both stream and consumer, so this subscriber's next fetch
    just works: the sequences going back is what tells it the epoch changed."""
    u = unique()
    subject, durable = f"cs.up.{u}.c1", f"ingest-{u}"
    rec = Recorder()
    await bus.subscribe(subject, durable, rec)
    old = [await bus.publish(subject, b"old-%d" % i) for i in range(5)]
    await wait_for(lambda: len(rec.acked()) == 5)
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        stream = (await js.stream_info(bus.stream)).config
        consumer = (await js.consumer_info(bus.stream, consumer_name(durable))).config
        await js.delete_stream(bus.stream)
        await js.add_stream(stream)
        await js.add_consumer(bus.stream, consumer)
        for i in range(2):
            await js.publish(subject, b"new-%d" % i, stream=bus.stream)
    finally:
        await nc.close()
    await wait_for(lambda: len(rec.acked()) == 7, timeout=20)
    new = [d for d in rec.acked() if d.data.startswith(b"new-")]
    assert min(d.seq for d in new) > max(old)


async def test_an_unexpected_error_in_the_consumer_loop_is_logged_and_survived(
    bus: NatsBus, caplog: pytest.LogCaptureFixture
) -> None:
    """A surprise from the client library must not silently end a durable's consumption."""
    from prometheus_client import REGISTRY

    def failures() -> float:
        labels = {"component": "bus", "task": "nats-consumer"}
        return REGISTRY.get_sample_value("clustersync_task_failures_total", labels) or 0.0

    u = unique()
    subject = f"cs.down.{u}.c1"
    recorder = Recorder()
    sub = await bus.subscribe(subject, f"down-{u}", recorder)
    psub = sub._psub  # type: ignore[attr-defined]
    real_fetch = psub.fetch
    calls = 0

    async def fetch_failing_once(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("surprise from the client library")
        return await real_fetch(*args, **kwargs)

    before = failures()
    psub.fetch = fetch_failing_once
    await wait_for(lambda: calls >= 1)
    await bus.publish(subject, b"after the surprise")
    await wait_for(lambda: recorder.data() == [b"after the surprise"])
    assert failures() == before + 1
    assert "unexpected error" in caplog.text
    await sub.stop()


async def test_stream_holds_more_durables_than_the_servers_default(
    nats_url: str, nats_stream: str
) -> None:
    """One durable per connected cluster: a server with a thousand agents needs more than the
    1,000 consumers nats-server (2.15) allows a stream that sets no limit of its own. A stream
    made before the limit was set (as an older clustersync made it) is raised when opened."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(name=nats_stream, subjects=[f"{nats_stream.lower()}.>"])
        bus = await open_nats(nats_url, stream=nats_stream, subjects=f"{nats_stream.lower()}.>")
        try:
            for i in range(1010):
                await js.add_consumer(nats_stream, durable_name=f"cluster-{i}",
                                      ack_policy=AckPolicy.EXPLICIT)
            info = await js.stream_info(nats_stream)
            assert info.state.consumer_count == 1010
        finally:
            await bus.close()
    finally:
        await nc.close()


async def test_publishes_of_two_processes_are_never_taken_for_duplicates(
    nats_url: str, nats_stream: str
) -> None:
    """Every publish carries a message id for the stream's duplicate window (a retried publish
    is stored once); ids of two bus instances, like two server replicas publishing the same
    bytes at the same moment, must never collide."""
    subject = f"{nats_stream.lower()}.x"
    first = await open_nats(nats_url, stream=nats_stream, subjects=f"{nats_stream.lower()}.>")
    second = await open_nats(nats_url, stream=nats_stream, subjects=f"{nats_stream.lower()}.>")
    try:
        versions = [await bus.publish(subject, b"same bytes")
                    for _ in range(3) for bus in (first, second)]
    finally:
        await first.close()
        await second.close()
    assert len(set(versions)) == 6
    info = await _info(nats_url, nats_stream)
    assert info.state.messages == 6  # type: ignore[attr-defined]
