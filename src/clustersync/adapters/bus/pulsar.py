"""The Apache Pulsar bus: a durable is a subscription on the layout's topics, and subjects are
filtered on the client side.

Which topics carry which subjects, what goes on the wire and how a received message finds its
subject again is the layout's business (:mod:`clustersync.adapters.bus.pulsar_layout`): by
default kubescape's own layout, one topic whose message key tells the direction, so Go servers
and backends can share the topic with us; or clustersync's three-topic ``split`` layout.

Durables
--------
A durable is a Pulsar subscription of that name on every topic its filter can match (the
layout's ``topics_for``): Failover in the kubescape layout, Key_Shared in the split one; a new
one starts at the earliest retained message, like a
JetStream consumer with DeliverPolicy.ALL. Pulsar cannot filter by property, so each subscriber
receives everything on the topic and acknowledges, unhandled, what its filter does not match:
that only moves *this* durable's cursor, other durables have their own. Give a name one filter
only: two filters sharing a name would ack away each other's messages (this bus refuses it within
one process, but cannot see other processes).

Ordering
--------
Key_Shared sends all messages of one key (subject) to one consumer of the subscription, in order,
and keeps that true while consumers come and go; Failover sends everything to one active consumer
and switches to a standby when it goes. Within a subscriber, one task per subject runs
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
from dataclasses import dataclass
from typing import Any, Protocol

from clustersync.adapters.bus.base import (
    BusError,
    BusMessageTooLargeError,
    Delivery,
    Handler,
    subject_matches,
)
from clustersync.adapters.bus.memory import check_durable, check_filter, check_subject
from clustersync.adapters.bus.pulsar_layout import (
    LAYOUT_KUBESCAPE,
    KubescapeLayout,
    Layout,
    SplitLayout,
    parse_pulsar_url,
)
from clustersync.adapters.bus.pulsar_wire import Outgoing, is_report, message_seq
from clustersync.protocol.pulsar_codec import PROP_EVENT

__all__ = [
    "KubescapeLayout",
    "PulsarBus",
    "PulsarSubscription",
    "SplitLayout",
    "message_seq",
    "open_pulsar",
]

log = logging.getLogger(__name__)

RETRY_WAIT = 0.5  # after a failed receive, before trying again
MAX_MESSAGE_BYTES = 5 * 1024 * 1024
"""The broker's default ``maxMessageSize``: larger messages need chunking."""


# ---------------------------------------------------------------- the slice of pulsar we use
# Structural types for pulsar.asyncio's objects, so tests can substitute an in-memory broker.


class PulsarMessageId(Protocol):
    def ledger_id(self) -> int: ...

    def entry_id(self) -> int: ...


class PulsarMessage(Protocol):
    def data(self) -> bytes: ...

    def partition_key(self) -> str: ...

    def properties(self) -> dict[str, str]: ...

    def message_id(self) -> PulsarMessageId: ...

    def redelivery_count(self) -> int: ...

    def topic_name(self) -> str: ...


class PulsarProducer(Protocol):
    async def send(
        self,
        content: bytes,
        properties: dict[str, str] | None = None,
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
    operation_timeout: float = 10,
    redelivery_delay: float = 1.0,
    max_in_flight: int = 64,
) -> PulsarBus:
    """Connect to ``url`` (``pulsar://host:6650``, with the layout options of
    :func:`~clustersync.adapters.bus.pulsar_layout.parse_pulsar_url`) and open a producer per
    topic; raises BusError within about ``operation_timeout`` seconds if the broker cannot be
    reached.

    ``operation_timeout`` also bounds each publish (the producer's send timeout)."""
    import pulsar
    import pulsar.asyncio

    settings = parse_pulsar_url(url)
    try:
        client = pulsar.asyncio.Client(
            settings.service_url,
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
        layout=settings.layout,
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


def producer_options(layout: Layout, publish_timeout: float) -> dict[str, Any]:
    """How every producer is configured, as kubescape's Go server configures its own."""
    import pulsar

    return {
        # One message per entry: message_seq relies on it, and chunking requires it.
        "batching_enabled": False,
        # Messages over the broker's 5 MB limit (SBOMs, profiles) go in chunks. Pulsar supports
        # chunked messages on Exclusive and Failover subscriptions only, which is what the
        # kubescape layout uses; the split layout's Key_Shared durables cannot take them.
        "chunking_enabled": layout.name == LAYOUT_KUBESCAPE,
        "compression_type": pulsar.CompressionType.ZSTD,
        "send_timeout_millis": max(1, int(publish_timeout * 1000)),
        "block_if_queue_full": False,  # it would block the event loop
    }


class PulsarBus:
    """A :class:`~clustersync.adapters.bus.base.Bus` on Pulsar topics (see the module doc)."""

    def __init__(
        self,
        client: PulsarClient,
        *,
        layout: Layout | None = None,
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
        self.layout: Layout = layout if layout is not None else KubescapeLayout()
        self._publish_timeout = publish_timeout
        self.redelivery_delay = redelivery_delay
        self.max_in_flight = max_in_flight
        self.receiver_queue_size = receiver_queue_size
        self._producers: dict[str, PulsarProducer] = {}
        self._filters: dict[str, str] = {}  # durable -> its filter, within this process
        self._subscriptions: set[PulsarSubscription] = set()
        self._closed = False

    async def start(self) -> None:
        """Open the producers (which creates the topics): the first contact with the broker."""
        options = producer_options(self.layout, self._publish_timeout)
        for topic in self.layout.topics():
            try:
                self._producers[topic] = await self._client.create_producer(topic, **options)
            except _pulsar_errors() as exc:
                raise BusError(f"cannot open a producer on {topic}: {_reason(exc)}") from None

    async def publish(self, subject: str, data: bytes) -> int:
        self._check_open()
        check_subject(subject)
        seqs: list[int] = []
        for out in self.layout.outgoing(subject, data):
            if not out.report:
                seqs.append(await self._send(subject, out))
                continue
            # Reports that accompany the message (ConnectedClients with a ServerConnected)
            # inform; losing one must not fail the message itself, which is already out.
            try:
                await self._send(subject, out)
            except BusError as exc:
                log.warning("Pulsar: %s", exc)
        # One message, or a batch unrolled into one per object: the first carries the seq.
        return seqs[0]

    async def _send(self, subject: str, out: Outgoing) -> int:
        producer = self._producers.get(out.topic)
        if producer is None:
            raise BusError(f"no producer for {out.topic}: the bus was not started")
        try:
            msg_id = await producer.send(
                out.payload, properties=out.properties, partition_key=out.key
            )
        except _pulsar_errors() as exc:
            size = len(out.payload)
            if size > MAX_MESSAGE_BYTES:
                raise BusMessageTooLargeError(
                    f"publish to {subject} failed ({size} bytes): {_reason(exc)}"
                ) from None
            raise BusError(f"publish to {subject} failed: {_reason(exc)}") from None
        return message_seq(msg_id.ledger_id(), msg_id.entry_id())

    async def subscribe(
        self,
        subject_filter: str,
        durable: str,
        handler: Handler,
        *,
        in_flight: int = 1,  # one message at a time per subject, stricter
        idle_expiry: float | None = None,  # kept: see Bus.subscribe
    ) -> PulsarSubscription:
        import pulsar

        self._check_open()
        check_filter(subject_filter)
        check_durable(durable)
        known = self._filters.get(durable)
        if known is not None and known != subject_filter:
            raise BusError(f"durable {durable!r} already filters {known!r}, not {subject_filter!r}")
        topics = self.layout.topics_for(subject_filter)
        consumer_type = (
            pulsar.ConsumerType.Failover
            if self.layout.name == LAYOUT_KUBESCAPE
            else pulsar.ConsumerType.KeyShared
        )
        try:
            consumer = await self._client.subscribe(
                topics[0] if len(topics) == 1 else topics,
                durable,
                consumer_type=consumer_type,
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


@dataclass(slots=True)
class _Received:
    msg: PulsarMessage
    items: list[tuple[str, bytes]]  # (subject, data) to hand to the handler, in order
    subject: str  # the subject it is ordered under


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
        self._pending: dict[str, deque[_Received]] = {}  # subject -> received, not acked
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
            received = self._route(msg)
            if received is None:
                # Another durable's traffic on a shared topic: ack on our own cursor only.
                await self._ack(msg)
                self._buffered.release()
                continue
            subject = received.items[0][0] if received.items else received.subject
            queue = self._pending.get(subject)
            if queue is not None:
                queue.append(received)  # its worker picks it up after the messages before it
                continue
            self._pending[subject] = deque([received])
            worker = asyncio.create_task(self._work(subject), name=f"pulsar-{self._durable}")
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)

    def _route(self, msg: PulsarMessage) -> _Received | None:
        """What of ``msg`` this durable handles, or None when nothing."""
        layout = self._bus.layout
        data, properties = msg.data(), msg.properties()
        key, topic = msg.partition_key(), msg.topic_name()
        if not layout.may_match(self._filter, properties, key, topic):
            return None  # known without decoding the payload
        incoming = layout.incoming(data, properties, key, topic)
        items = [item for item in incoming.items if subject_matches(self._filter, item[0])]
        if items:
            return _Received(msg, items, items[0][0])
        if not incoming.items and subject_matches(self._filter, incoming.fallback_subject):
            return _Received(msg, [], incoming.fallback_subject)  # acked with a log line
        return None

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

    async def _deliver(self, subject: str, received: _Received) -> None:
        msg = received.msg
        msg_id = msg.message_id()
        seq = message_seq(msg_id.ledger_id(), msg_id.entry_id())
        if not received.items:
            properties = msg.properties()
            log.log(
                logging.DEBUG if is_report(properties) else logging.INFO,
                "%s seq %d holds nothing to deliver (an empty %s)",
                subject,
                seq,
                properties.get(PROP_EVENT, "message"),
            )
        first = msg.redelivery_count() + 1  # delivered by the broker before, to a stopped one
        # Several payloads (a multi-kind ReconciliationRequest, a request batch) go one after
        # another; a failure retries from the one that failed, the message is acked after the last.
        for item_subject, data in received.items:
            await self._deliver_one(item_subject, data, seq, first)
        await self._ack(msg)

    async def _deliver_one(self, subject: str, data: bytes, seq: int, first: int) -> None:
        failures = 0
        while True:
            delivery = Delivery(subject, data, seq, first + failures)
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
                    self._durable,
                    subject,
                    seq,
                    delivery.attempt,
                    exc_info=True,
                )
            else:
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
            log.warning(
                "Pulsar: closing the consumer of %s failed: %s", self._durable, _reason(exc)
            )
        self._bus._forget(self)
        if current is not None and current in tasks:
            current.cancel()
