"""PulsarBus: the shared Bus contract on a real broker (when CLUSTERSYNC_TEST_PULSAR_URL is set)
and on an in-memory stand-in for the slice of pulsar.asyncio the bus uses, plus the pure parts
(subject to topic mapping, seqs) and connection failures, which need no broker."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pulsar
import pytest
from pulsar.asyncio import PulsarException

from clustersync.adapters.bus.base import BusError, Delivery
from clustersync.adapters.bus.pulsar import (
    ENTRY_BITS,
    SUBJECT_PROPERTY,
    PulsarBus,
    PulsarMessage,
    filter_families,
    message_seq,
    open_pulsar,
    subject_family,
    topic_for_subject,
    topics_for_filter,
)


def load_contract(name: str, path: Path) -> ModuleType:
    """Import the sibling ``contract.py`` by path under a unique module name (the test dirs are
    not packages and the store tests have a ``contract.py`` too)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_contract = load_contract("bus_contract", Path(__file__).with_name("contract.py"))
BusContract = _contract.BusContract
Recorder, wait_for, unique = _contract.Recorder, _contract.wait_for, _contract.unique

PULSAR_URL = os.environ.get("CLUSTERSYNC_TEST_PULSAR_URL", "")
NO_BROKER = "CLUSTERSYNC_TEST_PULSAR_URL is not set: no Pulsar broker on this machine"
PREFIX = "persistent://public/default/cs"


# ---------------------------------------------------------------- a stand-in broker
# Models what the bus relies on: durable subscriptions starting at the earliest message, one
# cursor per subscription, Key_Shared dispatch (a key's messages go to one consumer at a time, in
# order, while later ones may already sit in that consumer's queue), and unacked messages going
# back, with their redelivery count raised, when their consumer closes.


def closed_error() -> PulsarException:
    return PulsarException(pulsar.Result.AlreadyClosed)


class FakeId:
    def __init__(self, ledger: int, entry: int) -> None:
        self._ledger, self._entry = ledger, entry

    def ledger_id(self) -> int:
        return self._ledger

    def entry_id(self) -> int:
        return self._entry


@dataclass
class Entry:
    index: int
    key: str
    data: bytes
    properties: dict[str, str]


class FakeMessage:
    def __init__(self, ledger: int, entry: Entry, redeliveries: int) -> None:
        self.entry = entry
        self._id = FakeId(ledger, entry.index)
        self._redeliveries = redeliveries

    def data(self) -> bytes:
        return self.entry.data

    def properties(self) -> dict[str, str]:
        return dict(self.entry.properties)

    def message_id(self) -> FakeId:
        return self._id

    def redelivery_count(self) -> int:
        return self._redeliveries


@dataclass(eq=False)
class Cursor:
    """A subscription on one topic."""

    topic: str
    acked: set[int] = field(default_factory=set)
    holders: dict[int, FakeConsumer] = field(default_factory=dict)  # dispatched, unacked
    redeliveries: dict[int, int] = field(default_factory=dict)


class FakeBroker:
    LEDGER = 7

    def __init__(self) -> None:
        self.topics: dict[str, list[Entry]] = {}
        self.cursors: dict[tuple[str, str], Cursor] = {}
        self.producer_options: dict[str, dict[str, Any]] = {}
        self.subscribe_calls: list[tuple[str | list[str], str, dict[str, Any]]] = []
        self.unreachable = False
        self.client_closed = self.client_shut_down = False
        self._changed = asyncio.Event()

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self) -> None:
        await self._changed.wait()

    def next_for(self, consumer: FakeConsumer, cursor: Cursor) -> Entry | None:
        entries = self.topics.get(cursor.topic, [])
        held = {entries[i].key: c for i, c in cursor.holders.items()}
        for entry in entries:
            if entry.index in cursor.acked or entry.index in cursor.holders:
                continue
            holder = held.get(entry.key)
            if holder is not None and holder is not consumer:
                continue  # Key_Shared: the key is with another consumer until it acks
            return entry
        return None


class FakeProducer:
    def __init__(self, broker: FakeBroker, topic: str) -> None:
        self.broker, self.topic = broker, topic
        self.closed = False

    async def send(
        self, content: bytes, properties: dict[str, str] | None = None,
        partition_key: str | None = None,
    ) -> FakeId:
        if self.closed:
            raise closed_error()
        entries = self.broker.topics.setdefault(self.topic, [])
        entries.append(Entry(len(entries), partition_key or "", content, dict(properties or {})))
        self.broker.notify()
        return FakeId(FakeBroker.LEDGER, len(entries) - 1)

    async def close(self) -> None:
        self.closed = True


class FakeConsumer:
    def __init__(self, broker: FakeBroker, cursors: list[Cursor]) -> None:
        self.broker, self.cursors = broker, cursors
        self.closed = False

    async def receive(self) -> FakeMessage:
        while True:
            if self.closed:
                raise closed_error()
            for cursor in self.cursors:
                entry = self.broker.next_for(self, cursor)
                if entry is not None:
                    cursor.holders[entry.index] = self
                    redeliveries = cursor.redeliveries.get(entry.index, 0)
                    return FakeMessage(FakeBroker.LEDGER, entry, redeliveries)
            await self.broker.changed()

    def _cursor_of(self, msg: FakeMessage) -> Cursor:
        return next(c for c in self.cursors if msg.entry in self.broker.topics[c.topic])

    async def acknowledge(self, message: PulsarMessage) -> None:
        if self.closed:
            raise closed_error()
        assert isinstance(message, FakeMessage)
        cursor = self._cursor_of(message)
        cursor.acked.add(message.entry.index)
        cursor.holders.pop(message.entry.index, None)
        self.broker.notify()

    async def close(self) -> None:
        self.closed = True
        for cursor in self.cursors:
            for index, holder in list(cursor.holders.items()):
                if holder is self:
                    del cursor.holders[index]
                    cursor.redeliveries[index] = cursor.redeliveries.get(index, 0) + 1
        self.broker.notify()


class FakeClient:
    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker

    async def create_producer(self, topic: str, **options: Any) -> FakeProducer:
        if self.broker.unreachable:
            raise PulsarException(pulsar.Result.Timeout)
        self.broker.producer_options[topic] = options
        self.broker.topics.setdefault(topic, [])
        return FakeProducer(self.broker, topic)

    async def subscribe(
        self, topic: str | list[str], subscription_name: str, **options: Any
    ) -> FakeConsumer:
        self.broker.subscribe_calls.append((topic, subscription_name, options))
        topics = [topic] if isinstance(topic, str) else topic
        cursors = [
            self.broker.cursors.setdefault((t, subscription_name), Cursor(t)) for t in topics
        ]
        return FakeConsumer(self.broker, cursors)

    async def close(self) -> None:
        self.broker.client_closed = True

    def shutdown(self) -> None:
        self.broker.client_shut_down = True


@pytest.fixture
def broker() -> FakeBroker:
    return FakeBroker()


@pytest.fixture
async def fake_bus(broker: FakeBroker) -> AsyncIterator[PulsarBus]:
    bus = PulsarBus(FakeClient(broker), topic_prefix=PREFIX, redelivery_delay=0)
    await bus.start()
    yield bus
    await bus.close()


class TestPulsarBusOnStandIn(BusContract):  # type: ignore[misc,valid-type]  # loaded by path
    """The contract against the stand-in broker: checks the bus's own logic (filtering, per
    subject order, retries, stop) on every run, broker or not."""

    @pytest.fixture
    async def bus(self, fake_bus: PulsarBus) -> PulsarBus:
        return fake_bus


@pytest.mark.skipif(not PULSAR_URL, reason=NO_BROKER)
class TestPulsarBus(BusContract):  # type: ignore[misc,valid-type]  # loaded by path
    """The contract on a real broker, topics unique to each test."""

    @pytest.fixture
    async def bus(self) -> AsyncIterator[PulsarBus]:
        prefix = f"persistent://public/default/cs-test-{uuid.uuid4().hex[:12]}"
        bus = await open_pulsar(PULSAR_URL, topic_prefix=prefix, redelivery_delay=0)
        yield bus
        await bus.close()


# ---------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    ("subject", "family"),
    [
        ("cs.up.a.c", "in"),
        ("cs.write.a.c", "in"),
        ("cs.down.a.c", "down"),
        ("cs.up", "in"),
        ("cs", "other"),
        ("cs.other.a", "other"),
        ("up.a.c", "other"),
        ("x.down", "other"),
    ],
)
def test_subject_family(subject: str, family: str) -> None:
    assert subject_family(subject) == family
    assert topic_for_subject(PREFIX, subject) == f"{PREFIX}-{family}"


@pytest.mark.parametrize(
    ("subject_filter", "families"),
    [
        ("cs.up.>", ["in"]),
        ("cs.write.>", ["in"]),
        ("cs.down.a.c", ["down"]),
        ("cs.up.*.c1", ["in"]),
        ("cs.up.*.*.3", ["in"]),  # an ingester partition
        ("cs.>", ["in", "down", "other"]),
        ("cs.*.a.c", ["in", "down", "other"]),
        (">", ["in", "down", "other"]),
        ("*.up.>", ["in", "other"]),
        ("*.down.a", ["down", "other"]),
        ("*", ["other"]),
        ("cs", ["other"]),
        ("cs.misc.>", ["other"]),
        ("other.>", ["other"]),
    ],
)
def test_filter_families(subject_filter: str, families: list[str]) -> None:
    assert filter_families(subject_filter) == families
    assert topics_for_filter(PREFIX, subject_filter) == [f"{PREFIX}-{f}" for f in families]


SUBJECTS = [
    "cs.up.a.c.3", "cs.up.a.c", "cs.write.a.c", "cs.down.a.c", "cs", "cs.x", "cs.up", "q.up.a", "z",
]
FILTERS = [
    "cs.up.*.*.3", "cs.up.>", "cs.>", "cs.*", "*", ">", "*.up.>", "cs.down.*.c", "cs.*.a.c", "q.>",
    "cs",
]


@pytest.mark.parametrize("subject_filter", FILTERS)
def test_a_filter_subscribes_to_every_topic_of_its_subjects(subject_filter: str) -> None:
    from clustersync.adapters.bus.base import subject_matches

    topics = topics_for_filter(PREFIX, subject_filter)
    for subject in SUBJECTS:
        if subject_matches(subject_filter, subject):
            assert topic_for_subject(PREFIX, subject) in topics, subject


def test_message_seq() -> None:
    assert message_seq(0, 0) == 1
    assert message_seq(0, 1) == 2
    assert message_seq(1, 0) == (1 << ENTRY_BITS) + 1
    # Monotonic along a topic: entries within a ledger, then the next (larger) ledger.
    ids = [(5, 0), (5, 1), (5, 49_999), (9, 0), (9, 1), (12, 0)]
    seqs = [message_seq(ledger, entry) for ledger, entry in ids]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # Fits a signed 64-bit column for any realistic ledger id.
    assert message_seq(2**38, 2**ENTRY_BITS - 1) < 2**63
    with pytest.raises(BusError):
        message_seq(-1, -1)  # MessageId.earliest and friends are not messages


# ---------------------------------------------------------------- connection failures


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_broker_fails_fast() -> None:
    start = time.monotonic()
    with pytest.raises(BusError, match="cannot open a producer"):
        await open_pulsar(f"pulsar://127.0.0.1:{closed_port()}", operation_timeout=2)
    assert time.monotonic() - start < 6


async def test_bad_url() -> None:
    with pytest.raises(BusError, match="Pulsar URL"):
        await open_pulsar("localhost:6650", operation_timeout=1)


async def test_start_failure_is_a_bus_error(broker: FakeBroker) -> None:
    broker.unreachable = True
    with pytest.raises(BusError, match="Timeout"):
        await PulsarBus(FakeClient(broker), topic_prefix=PREFIX).start()


# ---------------------------------------------------------------- Pulsar-specific behaviour


async def test_producers_and_consumers_are_configured(
    fake_bus: PulsarBus, broker: FakeBroker
) -> None:
    assert sorted(broker.producer_options) == [f"{PREFIX}-down", f"{PREFIX}-in", f"{PREFIX}-other"]
    for options in broker.producer_options.values():
        assert options["batching_enabled"] is False  # one message per entry, for message_seq
        assert options["block_if_queue_full"] is False
    await fake_bus.subscribe("cs.up.>", "ingester", Recorder())
    await fake_bus.subscribe("cs.>", "audit", Recorder())
    (topic, name, options), (topics, _, _) = broker.subscribe_calls
    assert (topic, name) == (f"{PREFIX}-in", "ingester")
    assert topics == [f"{PREFIX}-in", f"{PREFIX}-down", f"{PREFIX}-other"]
    assert options["consumer_type"] == pulsar.ConsumerType.KeyShared
    assert options["initial_position"] == pulsar.InitialPosition.Earliest


async def test_subject_travels_as_property_and_key(fake_bus: PulsarBus, broker: FakeBroker) -> None:
    seq = await fake_bus.publish("cs.write.a.c1", b"payload")
    (entry,) = broker.topics[f"{PREFIX}-in"]
    assert entry.properties == {SUBJECT_PROPERTY: "cs.write.a.c1"}
    assert entry.key == "cs.write.a.c1"
    assert entry.data == b"payload"
    assert seq == message_seq(FakeBroker.LEDGER, 0)


async def test_up_and_write_share_one_seq_order(fake_bus: PulsarBus) -> None:
    # The ingester compares seqs of both families on one object: they must share an order.
    seqs = [
        await fake_bus.publish("cs.up.a.c", b"1"),
        await fake_bus.publish("cs.write.a.c", b"2"),
        await fake_bus.publish("cs.up.a.c", b"3"),
    ]
    assert seqs == sorted(seqs)


async def test_filtered_out_messages_are_acked_on_the_own_cursor_only(
    fake_bus: PulsarBus, broker: FakeBroker
) -> None:
    a, b = Recorder(), Recorder()
    await fake_bus.subscribe("cs.down.a.c1", "down-a-c1", a)
    await fake_bus.publish("cs.down.a.c2", b"for c2")
    await fake_bus.publish("cs.down.a.c1", b"for c1")
    await wait_for(lambda: len(a.acked()) == 1)
    cursor = broker.cursors[(f"{PREFIX}-down", "down-a-c1")]
    await wait_for(lambda: cursor.acked == {0, 1})  # c2's message acked on down-a-c1 only
    # c2's agent connects later: its durable still finds its message.
    await fake_bus.subscribe("cs.down.a.c2", "down-a-c2", b)
    await wait_for(lambda: len(b.acked()) == 1)
    assert (a.data(), b.data()) == ([b"for c1"], [b"for c2"])


async def test_durable_filter_cannot_change(fake_bus: PulsarBus) -> None:
    await fake_bus.subscribe("cs.up.>", "ingest", Recorder())
    with pytest.raises(BusError):
        await fake_bus.subscribe("cs.down.>", "ingest", Recorder())
    await fake_bus.subscribe("cs.up.>", "ingest", Recorder())  # same filter: a second subscriber


@pytest.mark.parametrize("subject_filter", ["", "cs..x", "cs.>.x", "cs.a*"])
async def test_invalid_filter(fake_bus: PulsarBus, subject_filter: str) -> None:
    with pytest.raises(BusError):
        await fake_bus.subscribe(subject_filter, "d", Recorder())


@pytest.mark.parametrize("durable", ["", "a.b", "a b", "a*"])
async def test_invalid_durable(fake_bus: PulsarBus, durable: str) -> None:
    with pytest.raises(BusError):
        await fake_bus.subscribe("cs.>", durable, Recorder())


async def test_attempt_counts_on_from_the_broker_redelivery_count(fake_bus: PulsarBus) -> None:
    never = asyncio.Event()
    stuck: list[Delivery] = []

    async def hang(delivery: Delivery) -> None:
        stuck.append(delivery)
        await never.wait()

    sub = await fake_bus.subscribe("cs.down.a.c1", "down-a-c1", hang)
    await fake_bus.publish("cs.down.a.c1", b"p")
    await wait_for(lambda: len(stuck) == 1)
    await sub.stop()
    rec = Recorder(fail_attempts=2)
    await fake_bus.subscribe("cs.down.a.c1", "down-a-c1", rec)
    await wait_for(lambda: len(rec.acked()) == 1)
    assert [d.attempt for d in stuck + rec.seen] == [1, 2, 3]


async def test_prefetched_messages_wait_for_a_failing_one(fake_bus: PulsarBus) -> None:
    # Everything is in the consumer's queue before the first handler fails twice.
    for i in range(5):
        await fake_bus.publish("cs.up.a.c1", b"%d" % i)
    rec = Recorder(fail_attempts=2)
    await fake_bus.subscribe("cs.up.>", "ingest", rec)
    await wait_for(lambda: len(rec.acked()) == 5)
    assert [(d.data, d.attempt) for d in rec.seen[:3]] == [(b"0", 1), (b"0", 2), (b"0", 3)]
    assert rec.data() == [b"%d" % i for i in range(5)]


async def test_subject_blocks_but_other_subjects_proceed(fake_bus: PulsarBus) -> None:
    gate = asyncio.Event()
    seen: list[bytes] = []

    async def handler(delivery: Delivery) -> None:
        seen.append(delivery.data)
        if delivery.data == b"s1":
            await gate.wait()

    await fake_bus.subscribe("cs.up.>", "ingest", handler)
    await fake_bus.publish("cs.up.a.s", b"s1")
    await fake_bus.publish("cs.up.a.s", b"s2")
    await fake_bus.publish("cs.up.a.t", b"t1")
    await wait_for(lambda: b"t1" in seen and b"s1" in seen)
    assert b"s2" not in seen
    gate.set()
    await wait_for(lambda: b"s2" in seen)


async def test_handler_leaking_cancelled_error_is_a_failure(fake_bus: PulsarBus) -> None:
    seen: list[Delivery] = []

    async def handler(delivery: Delivery) -> None:
        seen.append(delivery)
        if delivery.attempt == 1:
            raise asyncio.CancelledError

    await fake_bus.subscribe("cs.up.>", "ingest", handler)
    await fake_bus.publish("cs.up.a.c1", b"x")
    await wait_for(lambda: len(seen) == 2)
    assert [d.attempt for d in seen] == [1, 2]


async def test_handler_may_stop_its_own_subscription(fake_bus: PulsarBus) -> None:
    subs: list[Any] = []
    seen: list[Delivery] = []

    async def quitter(delivery: Delivery) -> None:
        seen.append(delivery)
        await subs[0].stop()
        await asyncio.sleep(0)  # cancelled here: the message is not acked

    subs.append(await fake_bus.subscribe("cs.down.a.c1", "down-a-c1", quitter))
    await fake_bus.publish("cs.down.a.c1", b"x")
    await wait_for(lambda: len(seen) == 1)
    rec = Recorder()
    await fake_bus.subscribe("cs.down.a.c1", "down-a-c1", rec)
    await wait_for(lambda: len(rec.acked()) == 1)
    assert rec.acked()[0].attempt == 2


async def test_close_stops_everything(broker: FakeBroker) -> None:
    bus = PulsarBus(FakeClient(broker), topic_prefix=PREFIX, redelivery_delay=0)
    await bus.start()
    never = asyncio.Event()

    async def hang(delivery: Delivery) -> None:
        await never.wait()

    sub = await bus.subscribe("cs.>", "d", hang)
    await bus.publish("cs.x", b"")
    await bus.close()
    await bus.close()
    await sub.stop()  # after close: harmless
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert broker.client_closed and broker.client_shut_down
    with pytest.raises(BusError):
        await bus.publish("cs.x", b"")
    with pytest.raises(BusError):
        await bus.subscribe("cs.>", "d", hang)


async def test_publish_failure_is_a_bus_error(fake_bus: PulsarBus, broker: FakeBroker) -> None:
    for producer in fake_bus._producers.values():
        await producer.close()
    with pytest.raises(BusError, match=r"publish to cs\.up\.a\.c failed"):
        await fake_bus.publish("cs.up.a.c", b"x")
