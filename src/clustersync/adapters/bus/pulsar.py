"""The Apache Pulsar bus: subjects grouped into a few topics, one Key_Shared subscription per
durable, client-side subject filtering.

Topics
------
A subject family is one persistent, non-partitioned topic: ``cs.up.*`` and ``cs.write.*`` share
``<prefix>-in``, ``cs.down.*`` goes to ``<prefix>-down`` and any other subject to
``<prefix>-other``. Up and write share a topic because the ingester stores ``Delivery.seq`` from
both as one object's version (``WHERE excluded.seq > objects.seq``): seqs are only comparable
within one topic (see :func:`message_seq`). Each message carries its subject in the ``subject``
property and as its key.

Durables
--------
A durable is a Pulsar subscription of that name, of type Key_Shared, on every topic its filter
can match (:func:`topics_for_filter`); a new one starts at the earliest retained message, like a
JetStream consumer with DeliverPolicy.ALL. Pulsar cannot filter by property, so each subscriber
receives everything on the topic and acknowledges, unhandled, what its filter does not match:
that only moves *this* durable's cursor, other durables have their own. Give a name one filter
only: two filters sharing a name would ack away each other's messages (this bus refuses it within
one process, but cannot see other processes).

Ordering
--------
Key_Shared sends all messages of one key (subject) to one consumer of the subscription, in order,
and keeps that true while consumers come and go. Within a subscriber, one task per subject runs
the handler on one message at a time; other subjects proceed concurrently. A handler that raises
gets the *same* message again (``attempt`` + 1) after ``redelivery_delay``, in this process: a
negative ack would let the next message of that subject, already prefetched in the receiver
queue, overtake the failed one. A message goes back to the broker (and to another subscriber of
the durable) when its subscriber stops or dies: then ``attempt`` counts on from the message's
``redelivery_count``, as far as the broker raised it (whether it does on a consumer's close
depends on the broker version).

Retention
---------
A topic keeps messages until every subscription acknowledged them, but messages published while a
durable does not exist yet are only kept if the namespace has a retention policy (``pulsar-admin
namespaces set-retention``), and an idle topic without subscriptions may be deleted unless
``brokerDeleteInactiveTopicsEnabled`` is off. Deployments that rely on "delivered to the first
durable created later" must configure both; this client cannot (it has no admin API).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any, Protocol

from clustersync.adapters.bus.base import BusError, Delivery, Handler, subject_matches
from clustersync.adapters.bus.memory import check_durable, check_filter, check_subject

log = logging.getLogger(__name__)

SUBJECT_PROPERTY = "subject"
DEFAULT_TOPIC_PREFIX = "persistent://public/default/clustersync"

FAMILY_IN = "in"
FAMILY_DOWN = "down"
FAMILY_OTHER = "other"
FAMILIES = (FAMILY_IN, FAMILY_DOWN, FAMILY_OTHER)
# The second token of a ``cs.`` subject names its family.
_FAMILY_OF_TOKEN = {"up": FAMILY_IN, "write": FAMILY_IN, "down": FAMILY_DOWN}

ENTRY_BITS = 24
"""Bits of a seq that hold the entry id within a ledger. A broker rolls a ledger over after
``managedLedgerMaxEntriesPerLedger`` entries (50,000 by default), far below 2**24."""

RETRY_WAIT = 0.5  # after a failed receive, before trying again


def message_seq(ledger_id: int, entry_id: int) -> int:
    """The seq of a message from its id: ``((ledger_id << ENTRY_BITS) | entry_id) + 1``.

    Within one non-partitioned topic this grows with every message: entries count up within a
    ledger and a topic's next ledger always has a larger id (ledger ids come from one
    cluster-wide counter). Across topics it is not ordered, which is why subjects whose seqs are
    compared share a topic. The ``+ 1`` keeps seqs positive (ledger 0, entry 0 exists). Batching
    is off, so a message is a whole entry and its batch index needs no bits."""
    if ledger_id < 0 or entry_id < 0:
        raise BusError(f"message id ({ledger_id}, {entry_id}) has no seq")
    if entry_id >= 1 << ENTRY_BITS:
        # Only if the broker is configured for giant ledgers; seqs would then collide.
        log.error("entry id %d in ledger %d exceeds %d bits", entry_id, ledger_id, ENTRY_BITS)
    return ((ledger_id << ENTRY_BITS) | entry_id) + 1


def subject_family(subject: str) -> str:
    tokens = subject.split(".")
    if len(tokens) >= 2 and tokens[0] == "cs":
        return _FAMILY_OF_TOKEN.get(tokens[1], FAMILY_OTHER)
    return FAMILY_OTHER


def filter_families(subject_filter: str) -> list[str]:
    """The families holding at least one subject that ``subject_filter`` matches."""
    tokens = subject_filter.split(".")
    first = tokens[0]
    if first == ">":
        return list(FAMILIES)
    if first not in ("cs", "*"):
        return [FAMILY_OTHER]
    if len(tokens) == 1:
        return [FAMILY_OTHER]  # "cs" or "*": single-token subjects only
    second = tokens[1]
    if second in ("*", ">"):
        return list(FAMILIES)
    family = _FAMILY_OF_TOKEN.get(second, FAMILY_OTHER)
    if first == "*" and family != FAMILY_OTHER:
        return [family, FAMILY_OTHER]  # e.g. "x.up" matches too
    return [family]


def family_topic(prefix: str, family: str) -> str:
    return f"{prefix}-{family}"


def topic_for_subject(prefix: str, subject: str) -> str:
    return family_topic(prefix, subject_family(subject))


def topics_for_filter(prefix: str, subject_filter: str) -> list[str]:
    return [family_topic(prefix, family) for family in filter_families(subject_filter)]


# ---------------------------------------------------------------- the slice of pulsar we use
# Structural types for pulsar.asyncio's objects, so tests can substitute an in-memory broker.


class PulsarMessageId(Protocol):
    def ledger_id(self) -> int: ...

    def entry_id(self) -> int: ...


class PulsarMessage(Protocol):
    def data(self) -> bytes: ...

    def properties(self) -> dict[str, str]: ...

    def message_id(self) -> PulsarMessageId: ...

    def redelivery_count(self) -> int: ...


class PulsarProducer(Protocol):
    async def send(
        self, content: bytes, properties: dict[str, str] | None = None,
        partition_key: str | None = None,
    ) -> PulsarMessageId: ...

    async def close(self) -> None: ...


class PulsarConsumer(Protocol):
    async def receive(self) -> PulsarMessage: ...

    async def acknowledge(self, message: PulsarMessage) -> None: ...

    async def close(self) -> None: ...


class PulsarClient(Protocol):
    async def create_producer(self, topic: str, **options: Any) -> PulsarProducer: ...

    async def subscribe(
        self, topic: str | list[str], subscription_name: str, **options: Any
    ) -> PulsarConsumer: ...

    async def close(self) -> None: ...

    def shutdown(self) -> None: ...


def _pulsar_errors() -> tuple[type[BaseException], ...]:
    """What pulsar-client raises: the asyncio API's own exception for failed operations, the C++
    extension's (pulsar.exceptions) for what fails synchronously, e.g. a bad configuration."""
    import pulsar.asyncio
    import pulsar.exceptions

    return (pulsar.asyncio.PulsarException, pulsar.exceptions.PulsarException)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text and text[0] else type(exc).__name__


def _is_closed(exc: BaseException) -> bool:
    import pulsar

    error = getattr(exc, "error", None)
    return callable(error) and error() == pulsar.Result.AlreadyClosed


# ---------------------------------------------------------------- opening


async def open_pulsar(
    url: str,
    *,
    topic_prefix: str = DEFAULT_TOPIC_PREFIX,
    operation_timeout: float = 10,
    redelivery_delay: float = 1.0,
    max_in_flight: int = 64,
) -> PulsarBus:
    """Connect to ``url`` (``pulsar://host:6650``) and open a producer per topic; raises
    BusError within about ``operation_timeout`` seconds if the broker cannot be reached.

    ``operation_timeout`` also bounds each publish (the producer's send timeout)."""
    import pulsar
    import pulsar.asyncio

    try:
        client = pulsar.asyncio.Client(
            url,
            # The C++ client wants whole seconds here; never round a short timeout down to 0.
            operation_timeout_seconds=max(1, round(operation_timeout)),
            connection_timeout_ms=max(100, int(min(operation_timeout, 10) * 1000)),
            # Route the C++ client's log lines through logging instead of stdout.
            logger=logging.getLogger("pulsar"),
        )
    except ValueError as exc:  # pulsar-client's own check of the URL
        raise BusError(f"cannot use Pulsar URL {url!r}: {_reason(exc)}") from None
    except _pulsar_errors() as exc:
        raise BusError(f"cannot use Pulsar URL {url!r}: {_reason(exc)}") from None
    bus = PulsarBus(
        client,
        topic_prefix=topic_prefix,
        publish_timeout=operation_timeout,
        redelivery_delay=redelivery_delay,
        max_in_flight=max_in_flight,
    )
    try:
        await bus.start()
    except BusError:
        await bus.close()
        raise
    return bus


class PulsarBus:
    """A :class:`~clustersync.adapters.bus.base.Bus` on Pulsar topics (see the module doc)."""

    def __init__(
        self,
        client: PulsarClient,
        *,
        topic_prefix: str = DEFAULT_TOPIC_PREFIX,
        publish_timeout: float = 10.0,
        redelivery_delay: float = 1.0,
        max_in_flight: int = 64,
        receiver_queue_size: int = 256,
    ) -> None:
        if publish_timeout <= 0 or redelivery_delay < 0 or max_in_flight < 1:
            raise ValueError("PulsarBus limits must be positive")
        if receiver_queue_size < 1:
            raise ValueError("receiver_queue_size must be positive")
        self._client = client
        self._prefix = topic_prefix
        self._publish_timeout = publish_timeout
        self.redelivery_delay = redelivery_delay
        self.max_in_flight = max_in_flight
        self.receiver_queue_size = receiver_queue_size
        self._producers: dict[str, PulsarProducer] = {}
        self._filters: dict[str, str] = {}  # durable -> its filter, within this process
        self._subscriptions: set[PulsarSubscription] = set()
        self._closed = False

    @property
    def topic_prefix(self) -> str:
        return self._prefix

    async def start(self) -> None:
        """Open the producers (which creates the topics): the first contact with the broker."""
        for family in FAMILIES:
            topic = family_topic(self._prefix, family)
            try:
                self._producers[topic] = await self._client.create_producer(
                    topic,
                    # One message per entry: message_seq relies on it.
                    batching_enabled=False,
                    send_timeout_millis=max(1, int(self._publish_timeout * 1000)),
                    block_if_queue_full=False,  # it would block the event loop
                )
            except _pulsar_errors() as exc:
                raise BusError(f"cannot open a producer on {topic}: {_reason(exc)}") from None

    async def publish(self, subject: str, data: bytes) -> int:
        self._check_open()
        check_subject(subject)
        topic = topic_for_subject(self._prefix, subject)
        producer = self._producers.get(topic)
        if producer is None:
            raise BusError(f"no producer for {topic}: the bus was not started")
        try:
            msg_id = await producer.send(
                bytes(data), properties={SUBJECT_PROPERTY: subject}, partition_key=subject
            )
        except _pulsar_errors() as exc:
            raise BusError(f"publish to {subject} failed: {_reason(exc)}") from None
        return message_seq(msg_id.ledger_id(), msg_id.entry_id())

    async def subscribe(
        self, subject_filter: str, durable: str, handler: Handler
    ) -> PulsarSubscription:
        import pulsar

        self._check_open()
        check_filter(subject_filter)
        check_durable(durable)
        known = self._filters.get(durable)
        if known is not None and known != subject_filter:
            raise BusError(f"durable {durable!r} already filters {known!r}, not {subject_filter!r}")
        topics = topics_for_filter(self._prefix, subject_filter)
        try:
            consumer = await self._client.subscribe(
                topics[0] if len(topics) == 1 else topics,
                durable,
                consumer_type=pulsar.ConsumerType.KeyShared,
                initial_position=pulsar.InitialPosition.Earliest,
                receiver_queue_size=self.receiver_queue_size,
            )
        except _pulsar_errors() as exc:
            raise BusError(
                f"cannot subscribe {durable!r} to {subject_filter}: {_reason(exc)}"
            ) from None
        self._filters[durable] = subject_filter
        sub = PulsarSubscription(self, consumer, subject_filter, durable, handler)
        self._subscriptions.add(sub)
        return sub

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sub in list(self._subscriptions):
            await sub.stop()
        for producer in self._producers.values():
            with contextlib.suppress(*_pulsar_errors()):
                await producer.close()
        self._producers.clear()
        try:
            await self._client.close()
        except _pulsar_errors() as exc:
            log.warning("Pulsar: closing the client failed: %s", _reason(exc))
        # Without this the C++ client may abort the interpreter at exit when its logger (a Python
        # object) is torn down before it.
        self._client.shutdown()

    def _forget(self, sub: PulsarSubscription) -> None:
        self._subscriptions.discard(sub)

    def _check_open(self) -> None:
        if self._closed:
            raise BusError("the bus is closed")


class PulsarSubscription:
    """One subscriber of a durable: a task receiving from the consumer, and one task per subject
    with messages waiting, handling them one at a time."""

    def __init__(
        self,
        bus: PulsarBus,
        consumer: PulsarConsumer,
        subject_filter: str,
        durable: str,
        handler: Handler,
    ) -> None:
        self._bus = bus
        self._consumer = consumer
        self._filter = subject_filter
        self._durable = durable
        self._handler = handler
        self._pending: dict[str, deque[PulsarMessage]] = {}  # subject -> received, not acked
        self._workers: set[asyncio.Task[None]] = set()
        # Bounds what we pull from the consumer ahead of the handlers (memory), and how many
        # handlers run at once.
        self._buffered = asyncio.Semaphore(bus.receiver_queue_size)
        self._running = asyncio.Semaphore(bus.max_in_flight)
        self._stopped = False
        self._receiver = asyncio.create_task(self._receive(), name=f"pulsar-{durable}")

    async def _receive(self) -> None:
        while True:
            await self._buffered.acquire()
            try:
                msg = await self._consumer.receive()
            except _pulsar_errors() as exc:
                self._buffered.release()
                if self._stopped or _is_closed(exc):
                    return
                log.warning("Pulsar: receive for %s failed: %s", self._durable, _reason(exc))
                await asyncio.sleep(RETRY_WAIT)
                continue
            subject = msg.properties().get(SUBJECT_PROPERTY, "")
            if not subject_matches(self._filter, subject):
                # Another durable's traffic on a shared topic: ack on our own cursor only.
                await self._ack(msg)
                self._buffered.release()
                continue
            queue = self._pending.get(subject)
            if queue is not None:
                queue.append(msg)  # its worker picks it up after the messages before it
                continue
            self._pending[subject] = deque([msg])
            worker = asyncio.create_task(self._work(subject), name=f"pulsar-{self._durable}")
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)

    async def _work(self, subject: str) -> None:
        queue = self._pending[subject]
        try:
            while queue:
                await self._deliver(subject, queue[0])
                queue.popleft()
                self._buffered.release()
        finally:
            # Empty when done; on stop the unacked rest returns to the broker with the consumer.
            if not queue:
                del self._pending[subject]

    async def _deliver(self, subject: str, msg: PulsarMessage) -> None:
        msg_id = msg.message_id()
        seq = message_seq(msg_id.ledger_id(), msg_id.entry_id())
        first = msg.redelivery_count() + 1  # delivered by the broker before, to a stopped one
        failures = 0
        while True:
            delivery = Delivery(subject, msg.data(), seq, first + failures)
            try:
                async with self._running:
                    await self._handler(delivery)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise  # stop(): the consumer's close returns the message to the broker
                # A CancelledError leaking out of the handler's own awaits is just a failure.
                log.debug("handler of %s was cancelled on seq %d", self._durable, seq)
            except Exception:
                log.warning(
                    "handler for %s failed on %s seq %d (attempt %d)",
                    self._durable, subject, seq, delivery.attempt, exc_info=True,
                )
            else:
                await self._ack(msg)
                return
            failures += 1
            if self._bus.redelivery_delay > 0:
                # The subject stays held while we wait, so nothing overtakes the failed message.
                await asyncio.sleep(self._bus.redelivery_delay)

    async def _ack(self, msg: PulsarMessage) -> None:
        # A lost ack is not fatal: the broker redelivers after a reconnect and stores ignore the
        # repeat (seq guard).
        try:
            await self._consumer.acknowledge(msg)
        except _pulsar_errors() as exc:
            log.warning("Pulsar: ack for %s failed: %s", self._durable, _reason(exc))

    async def stop(self) -> None:
        """Stop receiving. Messages received but not acknowledged (also one whose handler is
        running, which is cancelled) go back to the broker for the durable's other subscribers;
        the durable and its backlog stay for the next subscriber."""
        if self._stopped:
            return
        self._stopped = True
        tasks = [self._receiver, *self._workers]
        # A handler may stop its own subscription: its task is cancelled last, without waiting
        # for itself, so its message is not acked once it next yields.
        current = asyncio.current_task()
        others = [task for task in tasks if task is not current]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        try:
            await self._consumer.close()
        except _pulsar_errors() as exc:
            log.warning("Pulsar: closing the consumer of %s failed: %s", self._durable,
                        _reason(exc))
        self._bus._forget(self)
        if current is not None and current in tasks:
            current.cancel()
