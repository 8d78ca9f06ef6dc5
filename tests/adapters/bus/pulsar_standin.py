"""An in-memory stand-in for the slice of pulsar.asyncio the Pulsar bus uses (no broker can run
here). Load it by path (``load_contract("pulsar_standin", ...)``): the test folders are not
packages.

It models what the bus relies on: durable subscriptions starting at the earliest message, one
cursor per subscription, Key_Shared dispatch (a key's messages go to one consumer at a time, in
order, while later ones may already sit in that consumer's queue), Failover dispatch (everything
to the oldest open consumer of the subscription), unacked messages going back, with their
redelivery count raised, when their consumer closes, and ledger ids from one broker-wide counter:
deleting a topic and creating it again continues on a new, larger ledger, as BookKeeper does.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pulsar
from pulsar.asyncio import PulsarException

FIRST_LEDGER = 7


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
    index: int  # position in the topic's log (across ledgers)
    ledger: int
    entry: int  # position within the ledger
    key: str
    data: bytes
    properties: dict[str, str]


class FakeMessage:
    def __init__(self, topic: str, entry: Entry, redeliveries: int) -> None:
        self.topic = topic
        self.entry = entry
        self._id = FakeId(entry.ledger, entry.entry)
        self._redeliveries = redeliveries

    def topic_name(self) -> str:
        return self.topic

    def data(self) -> bytes:
        return self.entry.data

    def partition_key(self) -> str:
        return self.entry.key

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
    name: str
    failover: bool = False
    acked: set[int] = field(default_factory=set)
    holders: dict[int, FakeConsumer] = field(default_factory=dict)  # dispatched, unacked
    redeliveries: dict[int, int] = field(default_factory=dict)
    consumers: list[FakeConsumer] = field(default_factory=list)  # open ones, oldest first


@dataclass
class Topic:
    ledger: int
    entries: list[Entry] = field(default_factory=list)


class FakeBroker:
    def __init__(self) -> None:
        self.topics: dict[str, Topic] = {}
        self.cursors: dict[tuple[str, str], Cursor] = {}
        self.producer_options: dict[str, dict[str, Any]] = {}
        self.subscribe_calls: list[tuple[str | list[str], str, dict[str, Any]]] = []
        self.unreachable = False
        self.client_closed = self.client_shut_down = False
        self._next_ledger = FIRST_LEDGER
        self._changed = asyncio.Event()

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self) -> None:
        await self._changed.wait()

    def topic(self, name: str) -> Topic:
        found = self.topics.get(name)
        if found is None:
            found = self.topics[name] = Topic(self._new_ledger())
        return found

    def entries(self, name: str) -> list[Entry]:
        return self.topic(name).entries

    def _new_ledger(self) -> int:
        ledger = self._next_ledger
        self._next_ledger += 1
        return ledger

    def roll_ledger(self, name: str) -> None:
        """The broker rolls the topic over to a new ledger (size, age, or a restart)."""
        self.topic(name).ledger = self._new_ledger()

    def delete_topic(self, name: str) -> None:
        """``pulsar-admin topics delete --force``: messages and subscriptions go; the next
        producer creates the topic again on a new ledger."""
        self.topics.pop(name, None)
        for key in [key for key in self.cursors if key[0] == name]:
            del self.cursors[key]
        self.notify()

    def append(self, name: str, key: str, data: bytes, properties: dict[str, str]) -> FakeId:
        topic = self.topic(name)
        index = len(topic.entries)
        in_ledger = sum(1 for e in topic.entries if e.ledger == topic.ledger)
        topic.entries.append(Entry(index, topic.ledger, in_ledger, key, data, dict(properties)))
        self.notify()
        return FakeId(topic.ledger, in_ledger)

    def next_for(self, consumer: FakeConsumer, cursor: Cursor) -> Entry | None:
        if cursor.failover and (not cursor.consumers or cursor.consumers[0] is not consumer):
            return None  # a standby: the active consumer gets everything
        entries = self.entries(cursor.topic)
        held = {entries[i].key: c for i, c in cursor.holders.items() if i < len(entries)}
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
        self.sent_sizes: list[int] = []

    async def send(
        self,
        content: bytes,
        properties: dict[str, str] | None = None,
        partition_key: str | None = None,
    ) -> FakeId:
        if self.closed:
            raise closed_error()
        options = self.broker.producer_options.get(self.topic, {})
        if len(content) > 5 * 1024 * 1024 and not options.get("chunking_enabled"):
            raise PulsarException(pulsar.Result.MessageTooBig)  # as a real producer refuses it
        self.sent_sizes.append(len(content))
        return self.broker.append(self.topic, partition_key or "", content, properties or {})

    async def close(self) -> None:
        self.closed = True


class FakeConsumer:
    def __init__(self, broker: FakeBroker, cursors: list[Cursor]) -> None:
        self.broker, self.cursors = broker, cursors
        self.closed = False
        for cursor in cursors:
            cursor.consumers.append(self)

    async def receive(self) -> FakeMessage:
        while True:
            if self.closed:
                raise closed_error()
            for cursor in self.cursors:
                if self.broker.cursors.get((cursor.topic, cursor.name)) is not cursor:
                    self._resubscribe(cursor)
                entry = self.broker.next_for(self, cursor)
                if entry is not None:
                    cursor.holders[entry.index] = self
                    redeliveries = cursor.redeliveries.get(entry.index, 0)
                    return FakeMessage(cursor.topic, entry, redeliveries)
            await self.broker.changed()

    def _resubscribe(self, cursor: Cursor) -> None:
        """The topic was deleted under us: like the client reconnecting, subscribe again from
        the earliest message of the new topic."""
        self.broker.topic(cursor.topic)
        cursor.acked.clear()
        cursor.holders.clear()
        cursor.redeliveries.clear()
        self.broker.cursors[(cursor.topic, cursor.name)] = cursor

    def _cursor_of(self, msg: FakeMessage) -> Cursor | None:
        for cursor in self.cursors:
            entries = self.broker.topics.get(cursor.topic)
            if entries is not None and msg.entry in entries.entries:
                return cursor
        return None

    async def acknowledge(self, message: Any) -> None:
        if self.closed:
            raise closed_error()
        assert isinstance(message, FakeMessage)
        cursor = self._cursor_of(message)
        if cursor is None:
            return  # its topic is gone: nothing to ack
        cursor.acked.add(message.entry.index)
        cursor.holders.pop(message.entry.index, None)
        self.broker.notify()

    async def close(self) -> None:
        self.closed = True
        for cursor in self.cursors:
            if self in cursor.consumers:
                cursor.consumers.remove(self)
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
        self.broker.topic(topic)
        return FakeProducer(self.broker, topic)

    async def subscribe(
        self, topic: str | list[str], subscription_name: str, **options: Any
    ) -> FakeConsumer:
        self.broker.subscribe_calls.append((topic, subscription_name, options))
        topics = [topic] if isinstance(topic, str) else topic
        failover = options.get("consumer_type") == pulsar.ConsumerType.Failover
        cursors = []
        for name in topics:
            self.broker.topic(name)
            cursor = self.broker.cursors.setdefault(
                (name, subscription_name), Cursor(name, subscription_name)
            )
            cursor.failover = failover
            cursors.append(cursor)
        return FakeConsumer(self.broker, cursors)

    async def close(self) -> None:
        self.broker.client_closed = True

    def shutdown(self) -> None:
        self.broker.client_shut_down = True


async def restarted_bus(broker: FakeBroker, bus: Any) -> Any:
    """The bus contract's restart on the stand-in: the process stops, its topics are deleted
    (the broker-side loss of a stream: retention gone, ``brokerDeleteInactiveTopicsEnabled``) and
    a new process opens the bus again, creating them afresh on new ledgers."""
    from clustersync.adapters.bus.pulsar import PulsarBus

    await bus.close()
    for topic in bus.layout.topics():
        broker.delete_topic(topic)
    fresh = PulsarBus(FakeClient(broker), layout=bus.layout, redelivery_delay=0)
    await fresh.start()
    return fresh
