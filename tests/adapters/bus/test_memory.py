from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from clustersync.adapters.bus.base import BusError, BusFullError, Delivery
from clustersync.adapters.bus.memory import MemoryBus

try:
    from tests.contracts import load_contract
except ImportError:  # plain `pytest`: tests/ itself is on sys.path
    from contracts import load_contract  # type: ignore[no-redef]

_contract = load_contract("bus_contract", Path(__file__).with_name("contract.py"))
BusContract = _contract.BusContract
Recorder, wait_for = _contract.Recorder, _contract.wait_for


class TestMemoryBus(BusContract):  # type: ignore[misc,valid-type]  # loaded by path
    @pytest.fixture
    async def bus(self) -> AsyncIterator[MemoryBus]:
        bus = MemoryBus(redelivery_delay=0)
        yield bus
        await bus.close()

    async def restarted(self, bus: MemoryBus) -> MemoryBus:
        # What a restarted process gets: a new bus that knows nothing of the old one.
        await bus.close()
        return MemoryBus(redelivery_delay=0)


@pytest.fixture
async def bus() -> AsyncIterator[MemoryBus]:
    bus = MemoryBus(redelivery_delay=0)
    yield bus
    await bus.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_retention_by_age_is_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    bus = MemoryBus(max_age=60, redelivery_delay=0, clock=clock)
    evicted = REGISTRY.get_sample_value(
        "clustersync_bus_evicted_total", {"bus": "memory", "reason": "max_age"}
    ) or 0.0
    try:
        await bus.publish("cs.down.a.c1", b"old")
        await bus.publish("cs.write.a.c1", b"old write")
        clock.now += 61
        fresh = await bus.publish("cs.down.a.c1", b"fresh")
        assert bus.dropped == 2
        assert REGISTRY.get_sample_value(
            "clustersync_bus_evicted_total", {"bus": "memory", "reason": "max_age"}
        ) == evicted + 2
        lines = [r.getMessage() for r in caplog.records if "retention" in r.getMessage()]
        assert len(lines) == 1  # one line per sweep, naming the subjects
        assert "dropped 2 messages" in lines[0]
        assert "cs.down.a.c1" in lines[0] and "cs.write.a.c1" in lines[0]
        clock.now += 30
        rec = Recorder()
        await bus.subscribe("cs.down.a.c1", "down-a-c1", rec)
        await wait_for(lambda: len(rec.acked()) == 1)
        assert [d.seq for d in rec.acked()] == [fresh]
    finally:
        await bus.close()


async def test_age_is_also_checked_when_a_durable_appears() -> None:
    clock = FakeClock()
    bus = MemoryBus(max_age=60, redelivery_delay=0, clock=clock)
    try:
        await bus.publish("cs.down.a.c1", b"old")
        clock.now += 61
        rec = Recorder()
        await bus.subscribe("cs.down.a.c1", "down-a-c1", rec)
        assert bus.dropped == 1 and bus.retained == 0
    finally:
        await bus.close()


async def test_durable_keeps_messages_while_it_has_no_subscriber(bus: MemoryBus) -> None:
    first = Recorder()
    sub = await bus.subscribe("cs.down.a.c1", "down-a-c1", first)
    await bus.publish("cs.down.a.c1", b"1")
    await wait_for(lambda: len(first.acked()) == 1)
    await sub.stop()
    await bus.publish("cs.down.a.c1", b"2")  # the agent is away: this waits for it
    await bus.publish("cs.down.a.c1", b"3")
    assert bus.retained == 2
    again = Recorder()
    await bus.subscribe("cs.down.a.c1", "down-a-c1", again)
    await wait_for(lambda: len(again.acked()) == 2)
    assert again.data() == [b"2", b"3"]
    assert first.data() == [b"1"]


async def test_unclaimed_message_goes_to_the_first_matching_durable_only(bus: MemoryBus) -> None:
    seq = await bus.publish("cs.up.a.c1", b"x")
    early, late = Recorder(), Recorder()
    await bus.subscribe("cs.up.>", "ingest", early)
    await wait_for(lambda: len(early.acked()) == 1)
    await bus.subscribe("cs.up.a.c1", "audit", late)
    marker = await bus.publish("cs.up.a.c1", b"after")
    await wait_for(lambda: len(late.acked()) == 1)
    assert [d.seq for d in early.acked()] == [seq, marker]
    assert [d.seq for d in late.acked()] == [marker]


async def test_subject_blocks_but_other_subjects_proceed(bus: MemoryBus) -> None:
    gate = asyncio.Event()
    seen: list[bytes] = []

    async def handler(delivery: Delivery) -> None:
        seen.append(delivery.data)
        if delivery.data == b"s1":
            await gate.wait()

    await bus.subscribe("cs.up.>", "ingest", handler)
    await bus.publish("cs.up.a.s", b"s1")
    await bus.publish("cs.up.a.s", b"s2")
    await bus.publish("cs.up.a.t", b"t1")
    await wait_for(lambda: b"t1" in seen and b"s1" in seen)
    assert b"s2" not in seen  # s1 is not acked yet
    gate.set()
    await wait_for(lambda: b"s2" in seen)
    assert seen.index(b"s2") > seen.index(b"s1")


async def test_stop_redelivers_with_next_attempt(bus: MemoryBus) -> None:
    never = asyncio.Event()
    stuck: list[Delivery] = []

    async def hang(delivery: Delivery) -> None:
        stuck.append(delivery)
        await never.wait()

    sub = await bus.subscribe("cs.down.a.c1", "down-a-c1", hang)
    await bus.publish("cs.down.a.c1", b"p")
    await wait_for(lambda: len(stuck) == 1)
    await sub.stop()
    rec = Recorder()
    await bus.subscribe("cs.down.a.c1", "down-a-c1", rec)  # retained while nobody listened
    await wait_for(lambda: len(rec.acked()) == 1)
    assert [d.attempt for d in stuck + rec.acked()] == [1, 2]


async def test_redelivery_delay_holds_the_subject() -> None:
    bus = MemoryBus(redelivery_delay=0.05)
    try:
        rec = Recorder(fail_attempts=1)
        await bus.subscribe("cs.up.>", "ingest", rec)
        await bus.publish("cs.up.a.c1", b"1")
        await bus.publish("cs.up.a.c1", b"2")
        await wait_for(lambda: len(rec.acked()) == 2)
        # Every first attempt fails; "2" waits until "1" was retried and acked.
        want = [(b"1", 1), (b"1", 2), (b"2", 1), (b"2", 2)]
        assert [(d.data, d.attempt) for d in rec.seen] == want
    finally:
        await bus.close()


@pytest.mark.parametrize("subject_filter", ["", "cs..x", "cs.>.x", "cs.a*", "cs. x"])
async def test_invalid_filter(bus: MemoryBus, subject_filter: str) -> None:
    with pytest.raises(BusError):
        await bus.subscribe(subject_filter, "d", Recorder())


@pytest.mark.parametrize("durable", ["", "a.b", "a b", "a*", "a>"])
async def test_invalid_durable(bus: MemoryBus, durable: str) -> None:
    with pytest.raises(BusError):
        await bus.subscribe("cs.>", durable, Recorder())


async def test_durable_filter_cannot_change(bus: MemoryBus) -> None:
    await bus.subscribe("cs.up.>", "ingest", Recorder())
    with pytest.raises(BusError):
        await bus.subscribe("cs.down.>", "ingest", Recorder())


async def test_close_cancels_everything() -> None:
    bus = MemoryBus(redelivery_delay=0)
    never = asyncio.Event()

    async def hang(delivery: Delivery) -> None:
        await never.wait()

    sub = await bus.subscribe("cs.>", "d", hang)
    await bus.publish("cs.x", b"")
    await bus.close()
    await bus.close()
    await sub.stop()  # after close: harmless
    assert asyncio.all_tasks() == {asyncio.current_task()}
    with pytest.raises(BusError):
        await bus.publish("cs.x", b"")
    with pytest.raises(BusError):
        await bus.subscribe("cs.>", "d", hang)


async def test_handler_leaking_cancelled_error_is_a_failure(bus: MemoryBus) -> None:
    seen: list[Delivery] = []

    async def handler(delivery: Delivery) -> None:
        seen.append(delivery)
        if delivery.attempt == 1:
            raise asyncio.CancelledError  # e.g. from awaiting a future someone else cancelled

    await bus.subscribe("cs.up.>", "ingest", handler)
    await bus.publish("cs.up.a.c1", b"x")
    await wait_for(lambda: len(seen) == 2)
    assert [d.attempt for d in seen] == [1, 2]
    await wait_for(lambda: bus.retained == 0)


async def test_handler_may_stop_its_own_subscription(bus: MemoryBus) -> None:
    subs: list[object] = []
    seen: list[Delivery] = []

    async def quitter(delivery: Delivery) -> None:
        seen.append(delivery)
        await subs[0].stop()  # type: ignore[attr-defined]
        await asyncio.sleep(0)  # cancelled here: the message is not acked

    subs.append(await bus.subscribe("cs.down.a.c1", "down-a-c1", quitter))
    await bus.publish("cs.down.a.c1", b"x")
    await wait_for(lambda: len(seen) == 1)
    rec = Recorder()
    await bus.subscribe("cs.down.a.c1", "down-a-c1", rec)
    await wait_for(lambda: len(rec.acked()) == 1)
    assert rec.acked()[0].attempt == 2


async def test_a_restarted_bus_stays_above_the_floor_when_the_clock_steps_back() -> None:
    first = MemoryBus(redelivery_delay=0)
    last = await first.publish("cs.up.a.c1", b"before")
    await first.close()
    # The clock now reads earlier than when `first` started: only the floor keeps order.
    stepped_back = MemoryBus(redelivery_delay=0, wall_clock=lambda: 0.0, version_floor=last)
    try:
        assert await stepped_back.publish("cs.up.a.c1", b"after") == last + 1
    finally:
        await stepped_back.close()


async def test_a_flooding_cluster_neither_evicts_nor_delays_another() -> None:
    bus = MemoryBus(max_per_cluster=50, publish_timeout=30, redelivery_delay=0)
    try:
        pushes = [await bus.publish("cs.down.acct.a", b"push-%d" % i) for i in range(3)]
        flood = 0
        while bus.queued("cs.up.acct.b.0") < 50:  # b's partitions share one bound
            await bus.publish(f"cs.up.acct.b.{flood % 16}", b"frame")
            flood += 1
        assert flood == 50
        blocked = asyncio.create_task(bus.publish("cs.up.acct.b.3", b"one too many"))
        await wait_for(lambda: "cs.up.acct.b" in bus._room)  # it waits for room
        # Another cluster publishes at once and keeps everything it had queued.
        late = await bus.publish("cs.down.acct.a", b"push-3")
        assert not blocked.done()
        assert bus.queued("cs.down.acct.a") == 4
        assert bus.dropped == 0
        rec = Recorder()
        await bus.subscribe("cs.down.acct.a", "down-acct-a", rec)
        await wait_for(lambda: len(rec.acked()) == 4)
        assert [d.seq for d in rec.acked()] == [*pushes, late]
        assert not blocked.done()  # a's traffic did not make room for b either
        # Room in b's own space lets its sender go on.
        ingest = Recorder()
        await bus.subscribe("cs.up.>", "ingest", ingest)
        seq = await blocked
        await wait_for(lambda: seq in [d.seq for d in ingest.acked()])
        assert len(ingest.acked()) == 51
    finally:
        await bus.close()


async def test_a_full_cluster_space_refuses_after_the_timeout() -> None:
    bus = MemoryBus(max_per_cluster=2, publish_timeout=0.01, redelivery_delay=0)
    try:
        await bus.publish("cs.up.acct.b.0", b"1")
        await bus.publish("cs.up.acct.b.1", b"2")
        with pytest.raises(BusFullError) as refused:
            await bus.publish("cs.up.acct.b.2", b"3")
        assert refused.value.subject == "cs.up.acct.b.2" and refused.value.bound == 2
        assert bus.refused == 1
        assert bus.queued("cs.up.acct.b") == 2  # nothing evicted, nothing added
        await bus.publish("cs.write.acct.b", b"a write of the same cluster still goes")
    finally:
        await bus.close()


async def test_closing_the_bus_fails_a_publisher_waiting_for_room() -> None:
    bus = MemoryBus(max_per_cluster=1, publish_timeout=30, redelivery_delay=0)
    await bus.publish("cs.up.acct.b.0", b"1")
    waiting = asyncio.create_task(bus.publish("cs.up.acct.b.0", b"2"))
    await wait_for(lambda: "cs.up.acct.b" in bus._room)
    await bus.close()
    with pytest.raises(BusError):
        await waiting
    assert isinstance(waiting.exception(), BusError)
    assert not isinstance(waiting.exception(), BusFullError)


async def test_the_runtime_opens_the_embedded_bus_above_the_stores_highest_version() -> None:
    from clustersync.runtime.engines import open_bus

    floor = (1 << 62) + 41  # far above what the clock gives
    bus = await open_bus("memory", version_floor=floor)
    try:
        assert await bus.publish("cs.up.a.c1.0", b"x") == floor + 1
    finally:
        await bus.close()
