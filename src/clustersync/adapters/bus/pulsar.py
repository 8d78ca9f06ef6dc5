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

Wire format
-----------
Messages are in kubescape's Pulsar encoding (:mod:`clustersync.protocol.pulsar_codec`) whenever
that can carry them, so a kubescape-style consumer can read our topics and a kubescape producer
can write to them. The rule, in :func:`wire_message`:

* ``data`` that is one of our envelopes (:func:`~clustersync.protocol.envelope.decode_envelope`)
  and makes exactly one kubescape message, which decodes back to the same envelope, is sent as
  that message: camelCase JSON payload, kubescape's properties (``event``, ``timestamp``,
  ``account``, ``cluster``, and for object messages ``group``, ``version``, ``resource``,
  ``name``, ``namespace``, ``resourceVersion``), plus ``subject`` and
  ``clustersyncEncoding=kubescape``. That covers object messages, both controls and the
  backend's reconciliation batches.
* Anything else is sent as the raw bytes with ``clustersyncEncoding=raw``: bytes that are not an
  envelope, and envelopes kubescape would need several messages for (a non-reconciliation batch:
  one bus message must stay one message with one seq) or cannot express exactly (pings; a
  reconciliation batch whose items carry their own depth or msgId).

On delivery (:func:`kubescape_envelopes`) a message marked ``kubescape``, or unmarked but with an
``event`` property (written by a kubescape component), is decoded and its envelope handed to the
handler as :func:`~clustersync.protocol.envelope.encode_envelope` bytes, so handlers only ever
see our envelope format and ``decode_envelope(delivered) == decode_envelope(published)``. A
ReconciliationRequest listing several kinds decodes into one reconciliation batch per kind: the
handler gets them one after another, all with the message's seq, and the message is acked after
the last one; a handler failure retries from the batch that failed (earlier ones are not
repeated unless the message goes back to the broker). A request that lists nothing decodes into
no envelope and is acked with a log line. A kubescape message that does not decode is delivered
raw, unchanged, so the ingester's dead-letter path parks it with the decoder's complaint instead
of it vanishing; so is a message with an unknown marker.

A message without a ``subject`` property (a kubescape producer's) gets one from its identity:
``cs.down.<account>.<cluster>`` on the down topic, otherwise
``cs.up.<account>.<cluster>.<partition>`` as our server would have published it (kubescape's
server-to-ingester traffic is our up direction). The identity comes from the decoded envelope,
or from the ``account``/``cluster`` properties when it does not decode (``_`` when absent).

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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from clustersync.adapters.bus.base import BusError, Delivery, Handler, subject_matches
from clustersync.adapters.bus.memory import check_durable, check_filter, check_subject
from clustersync.protocol.codec import DecodeError
from clustersync.protocol.envelope import (
    Envelope,
    decode_envelope,
    down_subject,
    encode_envelope,
    partition_of,
    up_subject,
)
from clustersync.protocol.pulsar_codec import (
    PROP_ACCOUNT,
    PROP_CLUSTER,
    PROP_EVENT,
    decode_pulsar_all,
    encode_pulsar_all,
)
from clustersync.protocol.pulsar_codec import PulsarMessage as KubescapeMessage

log = logging.getLogger(__name__)

SUBJECT_PROPERTY = "subject"
ENCODING_PROPERTY = "clustersyncEncoding"
ENCODING_KUBESCAPE = "kubescape"
ENCODING_RAW = "raw"
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


# ---------------------------------------------------------------- the wire format


def wire_message(subject: str, data: bytes) -> tuple[bytes, dict[str, str]]:
    """The payload and properties that carry ``data`` on ``subject`` (see "Wire format")."""
    messages: list[KubescapeMessage] = []
    try:
        env = decode_envelope(data)
    except Exception:  # not an envelope, whatever the decoder makes of it: any bytes publish
        pass
    else:
        with contextlib.suppress(ValueError):  # no kubescape form
            messages = encode_pulsar_all(env)
    if len(messages) == 1:
        (message,) = messages
        # Only what comes back as it went: the encoding drops nothing silently then.
        try:
            same = decode_pulsar_all(message.payload, message.properties) == [env]
        except DecodeError:
            same = False
        if same:
            properties = dict(message.properties)
            properties[SUBJECT_PROPERTY] = subject
            properties[ENCODING_PROPERTY] = ENCODING_KUBESCAPE
            return message.payload, properties
        log.debug("envelope on %s does not survive kubescape's encoding: sent raw", subject)
    return bytes(data), {SUBJECT_PROPERTY: subject, ENCODING_PROPERTY: ENCODING_RAW}


def is_kubescape(properties: Mapping[str, str]) -> bool:
    """Whether a message is in kubescape's encoding: marked so by us, or unmarked and carrying
    kubescape's ``event`` property (a kubescape component wrote it)."""
    encoding = properties.get(ENCODING_PROPERTY)
    if encoding is None:
        return PROP_EVENT in properties
    return encoding == ENCODING_KUBESCAPE


def kubescape_envelopes(data: bytes, properties: Mapping[str, str]) -> list[Envelope] | None:
    """The envelopes in a kubescape-encoded message; None for one to deliver raw: not in that
    encoding (marked raw, or foreign without an ``event``), or not decodable."""
    encoding = properties.get(ENCODING_PROPERTY)
    if not is_kubescape(properties):
        if encoding not in (None, ENCODING_RAW):
            log.warning("Pulsar message in unknown encoding %r: delivered raw", encoding)
        return None
    try:
        return decode_pulsar_all(data, properties)
    except DecodeError as exc:
        log.warning(
            "undecodable kubescape message (%s) on %s: delivered raw: %s",
            properties.get(PROP_EVENT, ""),
            properties.get(SUBJECT_PROPERTY, "?"),
            exc,
        )
        return None


def delivered_payloads(data: bytes, envelopes: list[Envelope] | None) -> list[bytes]:
    """What the handler gets, in order, for a message's ``data`` and decoded ``envelopes``."""
    if envelopes is None:
        return [data]
    return [encode_envelope(env) for env in envelopes]


def foreign_subject(
    properties: Mapping[str, str], envelopes: list[Envelope] | None, topic: str
) -> str:
    """The subject of a message that came without one (see "Wire format")."""
    if envelopes:
        account, cluster = envelopes[0].account, envelopes[0].cluster
    else:
        account = properties.get(PROP_ACCOUNT, "")
        cluster = properties.get(PROP_CLUSTER, "")
    if topic.endswith(f"-{FAMILY_DOWN}"):
        return down_subject(account, cluster)
    partition = partition_of(envelopes[0].message) if envelopes and len(envelopes) == 1 else 0
    return up_subject(account, cluster, partition)


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
        payload, properties = wire_message(subject, data)
        try:
            msg_id = await producer.send(payload, properties=properties, partition_key=subject)
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


@dataclass(slots=True)
class _Received:
    msg: PulsarMessage
    payloads: list[bytes] | None = None  # decoded already (to find its subject), else None


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
            received = _Received(msg)
            properties = msg.properties()
            subject = properties.get(SUBJECT_PROPERTY)
            if subject is None:
                # A kubescape producer's: decoded here, since its subject comes from the content.
                envelopes = kubescape_envelopes(msg.data(), properties)
                subject = foreign_subject(properties, envelopes, msg.topic_name())
                received.payloads = delivered_payloads(msg.data(), envelopes)
            if not subject_matches(self._filter, subject):
                # Another durable's traffic on a shared topic: ack on our own cursor only.
                await self._ack(msg)
                self._buffered.release()
                continue
            queue = self._pending.get(subject)
            if queue is not None:
                queue.append(received)  # its worker picks it up after the messages before it
                continue
            self._pending[subject] = deque([received])
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

    async def _deliver(self, subject: str, received: _Received) -> None:
        msg = received.msg
        msg_id = msg.message_id()
        seq = message_seq(msg_id.ledger_id(), msg_id.entry_id())
        payloads = received.payloads
        if payloads is None:
            data, properties = msg.data(), msg.properties()
            payloads = delivered_payloads(data, kubescape_envelopes(data, properties))
        if not payloads:
            log.info(
                "%s seq %d holds nothing to deliver (an empty %s)",
                subject,
                seq,
                msg.properties().get(PROP_EVENT, "message"),
            )
        first = msg.redelivery_count() + 1  # delivered by the broker before, to a stopped one
        # Several payloads (a multi-kind ReconciliationRequest) go one after another; a failure
        # retries from the one that failed, the message is acked after the last.
        for data in payloads:
            await self._deliver_one(subject, data, seq, first)
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
