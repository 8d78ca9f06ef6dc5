"""The NATS JetStream bus: one file-backed stream, one durable pull consumer per durable name.

Ordering design
---------------
The contract promises per-subject publish order within a durable, also when several subscribers
(processes) share the durable, and also across redeliveries (a failing message holds back the
ones after it). JetStream spreads a pull consumer's messages over whichever subscribers have a
pull request waiting, and it has no notion of "one message per subject in flight": with
``max_ack_pending`` > 1, subscriber A could be handling message n of subject S while B already
handles n+1 of S, and a nak'd message is redelivered after later ones.

So every consumer is created with ``max_ack_pending = 1``: the server hands out the next message
only after the previous one was acknowledged, whichever subscriber held it. A nak'd message stays
pending (it still counts against the limit) until it is redelivered and acknowledged, so nothing
overtakes it. Each subscriber therefore fetches one message at a time, runs the handler, acks it
and only then asks for the next. While a handler runs, the subscriber sends "in progress" acks
so the server does not hand the same message to another subscriber after ``ack_wait`` (that
would run two handlers for one subject concurrently).

The price is throughput: one durable processes one message at a time, a few round trips each
(about the cost of the handler plus a loopback RTT). Extra subscribers on a durable give
failover, not parallelism. Parallelism is meant to come from partitioning subjects over several
durables (each with its own ``filter_subject``), which keeps order per subject.

Overlapping handlers
--------------------
A subscriber that passes ``in_flight`` > 1 (the ingester, for agent traffic, backend writes and
reports) lifts that limit for its durable: the consumer allows ``in_flight`` unacknowledged
messages, one pull request asks for as many as there is room for, and their handlers run at
once, whatever their subjects, started in delivery order. The handler keeps whatever order it
needs (the ingester orders by object, see runtime/object_order.py). A handler that raises is
retried in place after ``redelivery_delay`` (``attempt`` + 1) instead of being nak'd, so
nothing that waits for it is overtaken by a redelivery; a message is acked only once its
handler returned. Between subscribers of one such durable the order is not kept: stores still
refuse stale writes, and an agent's patch built on an older copy is answered with a
``GetObject``. Such a durable's ``ack_wait`` is at most ``OVERLAP_ACK_WAIT``: a subscriber that
dies holding many messages delays them by that much, not by the bus's longer ack_wait.

Versions and a recreated stream
-------------------------------
A stream's sequence starts again at 1 when the stream is deleted and created again (by an
operator, or because the server lost its store). Versions are therefore
``make_version(epoch, stream sequence)`` with the epoch taken from the stream's creation time
(``StreamInfo.created``), so the messages of a recreated stream outrank those of the old one.
The bus learns the epoch when it opens, and again whenever the stream may have been replaced: a
publish or fetch that finds no stream or consumer (the bus then creates them again, with the
configuration it opened with), or a subscription whose stream or consumer sequence went
backwards. What it cannot see is a stream replaced by another process between two of its own
deliveries with both sequences still higher than the last ones it saw; such a message would get
an old-epoch version, and the store would refuse it as stale (logged and counted) until the next
resync repairs the object.

Bounds per cluster
------------------
The stream keeps messages by age and total size (a rolling log, discarding the oldest), since its
consumers do not remove what they acknowledge. On top of that, ``max_msgs_per_subject`` caps
each subject, discarding that subject's oldest: a flooding cluster rolls over its own subjects
(at most ``max_msgs_per_subject`` times ``UP_PARTITIONS`` + 2 of them) and never pushes another
cluster's messages out, as long as ``max_bytes`` leaves room for every cluster's cap. (JetStream
can refuse instead of discard per subject only together with refusing everything once the stream
is full, which would stop every tenant when the rolling log fills up.)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import uuid
from collections.abc import Awaitable
from typing import Any

import nats
import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamInfo,
)

from clustersync.adapters.bus.base import (
    BusError,
    BusMessageTooLargeError,
    Delivery,
    Handler,
    epoch_at,
    make_version,
    subject_matches,
    subject_token,
)
from clustersync.adapters.metrics import TASK_FAILURES

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 2  # seconds; nats-py wants ints for these two
RECONNECT_WAIT = 1
RETRY_WAIT = 0.25  # between publish retries while the server is away
API_TIMEOUT = 5.0
# How long one pull request waits on the server, while messages flow or just after the
# connection came back: short, so a request the server lost unannounced is replaced quickly.
FETCH_EXPIRES = 2.0
# A consumer that found nothing doubles its pull request's lifetime up to this, so 1,000 idle
# durables ask about 33 times a second instead of 500. A server restart costs no wait: the
# reconnect wakes every waiting fetch (see NatsSubscription.wake). What stays bounded by this is
# a pull request lost without the connection dropping (no such case is known on one server).
IDLE_FETCH_EXPIRES = 30.0
CHECKED_SUBJECTS = 100_000  # publish subjects remembered as valid (then forgotten, re-checked)
# Nats-Msg-Id dedup horizon: a publish retried after a lost ack within this window is stored
# once. Capped by max_age (the server requires duplicate_window <= max_age).
DUPLICATE_WINDOW = 120.0
# ack_wait of durables with overlapping handlers (at most; see subscribe()).
OVERLAP_ACK_WAIT = 10.0

_WILDCARDS = frozenset("*>")


def _bad_token(token: str) -> bool:
    return not token or any(c in _WILDCARDS or c.isspace() for c in token)


def _check_subject(subject: str) -> None:
    if any(_bad_token(t) for t in subject.split(".")):
        raise BusError(f"invalid subject {subject!r}")


def _check_filter(subject_filter: str) -> None:
    tokens = subject_filter.split(".")
    for i, token in enumerate(tokens):
        if token == "*" or (token == ">" and i == len(tokens) - 1):
            continue
        if _bad_token(token):
            raise BusError(f"invalid subject filter {subject_filter!r}")


def consumer_name(durable: str) -> str:
    """The NATS consumer name for a durable: consumer names may not hold dots, wildcards,
    whitespace or path separators, so those are escaped (reversibly, like subject tokens)."""
    return subject_token(durable)


def stream_subjects(subjects: str) -> list[str]:
    """``root.>`` does not match ``root`` itself, which is a valid subject on the bus, so the
    stream captures the bare root too."""
    if subjects.endswith(".>"):
        return [subjects, subjects[:-2]]
    return [subjects]


def _redact(url: str) -> str:
    """The URL without user credentials, for error messages and logs."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}***@{rest.rsplit('@', 1)[1]}" if sep and "@" in rest else url


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text and text[0] else type(exc).__name__


# Every connected cluster has a durable of its own (its down stream), beside the ingester's and
# each server replica's. nats-server 2.15 caps a stream at 1,000 consumers unless the stream sets
# a limit of its own (and reads 0 or -1 as "use that default"), so one server replica could not
# hold a thousand agents: the 1,001st consumer was refused with "maximum consumers limit reached".
MAX_CONSUMERS = 1_000_000


async def open_nats(
    url: str,
    *,
    stream: str = "CLUSTERSYNC",
    subjects: str = "cs.>",
    max_age: float = 7 * 24 * 3600,
    max_bytes: int = 1 << 30,
    max_msgs_per_subject: int = 1_000_000,
    ack_wait: float = 30.0,
    redelivery_delay: float = 1.0,
    publish_timeout: float = 10.0,
    max_consumers: int = MAX_CONSUMERS,
) -> NatsBus:
    """Connect and create or update the stream; raises BusError quickly if NATS is unreachable.

    ``redelivery_delay`` is how long a message whose handler raised waits before redelivery;
    ``publish_timeout`` bounds how long publish() waits (and retries) for the stream's ack."""
    _check_filter(subjects)
    scheme = url.partition("://")[0] if "://" in url else ""
    if scheme not in ("nats", "tls", "ws", "wss"):
        raise BusError(f"bad NATS URL {_redact(url)!r}: expected nats://host:port")

    failures: list[Exception] = []  # the client reports the real causes only to this callback

    async def on_error(exc: Exception) -> None:
        failures[:] = [exc]
        log.warning("NATS: %s", _reason(exc))

    async def on_disconnect() -> None:
        if not (nc.is_closed or nc.is_draining):  # also called by our own close()
            log.warning("NATS: disconnected from %s, reconnecting", _redact(url))

    opened: list[NatsBus] = []  # the bus, once built: the reconnect wakes its consumers

    async def on_reconnect() -> None:
        log.info("NATS: reconnected to %s", _redact(url))
        for bus in opened:
            bus.wake_consumers()

    nc = Client()
    try:
        # One retry for the first connection, so a wrong URL fails within seconds ...
        await nc.connect(
            url,
            name="clustersync",
            connect_timeout=CONNECT_TIMEOUT,
            reconnect_time_wait=RECONNECT_WAIT,
            max_reconnect_attempts=1,
            error_cb=on_error,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
        )
    except (OSError, TimeoutError, ValueError, nats.errors.Error) as exc:
        # "no servers available" hides why; say what the last attempt ran into.
        cause = failures[-1] if failures and isinstance(exc, nats.errors.NoServersError) else None
        try:
            await nc.close()
        except Exception as close_exc:  # the connect failure below is what matters
            log.debug("NATS: closing a failed connection: %s", close_exc)
        raise BusError(
            f"cannot connect to NATS at {_redact(url)}: {_reason(cause or exc)}"
        ) from None
    # ... but once connected, never give up: a restarting server must not kill the backend.
    # nats-py reads this option on every reconnect; it has no setter.
    nc.options["max_reconnect_attempts"] = -1

    js = nc.jetstream(timeout=API_TIMEOUT)
    config = StreamConfig(
        name=stream,
        subjects=stream_subjects(subjects),
        # Limits, not work-queue: several durables read the same subjects, and messages stay
        # until age or size pushes them out, whoever consumed them.
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=max_age,
        max_bytes=max_bytes,
        max_msgs_per_subject=max_msgs_per_subject,  # see "Bounds per cluster"
        max_consumers=max_consumers,
        discard=DiscardPolicy.OLD,
        duplicate_window=min(DUPLICATE_WINDOW, max_age),
    )
    try:
        info = await _ensure_stream(js, config, update=True)
    except (nats.errors.Error, TimeoutError, BusError) as exc:
        await nc.close()
        raise BusError(f"cannot create or update stream {stream}: {_reason(exc)}") from None
    bus = NatsBus(
        nc,
        js,
        # Recreating a lost stream later uses the replicas it had.
        dataclasses.replace(
            config, num_replicas=info.config.num_replicas, placement=info.config.placement
        ),
        _epoch_of(info),
        ack_wait=ack_wait,
        redelivery_delay=redelivery_delay,
        publish_timeout=publish_timeout,
    )
    opened.append(bus)
    return bus


async def _ensure_stream(js: JetStreamContext, config: StreamConfig, *, update: bool) -> StreamInfo:
    """Create the stream if it does not exist (or update it, if asked)."""
    assert config.name is not None
    try:
        info = await js.stream_info(config.name)
    except nats.js.errors.NotFoundError:
        info = await js.add_stream(config)
        log.info("NATS: created stream %s", config.name)
    else:
        if update:
            # Replicas (and placement) are the operator's: a stream pre-created with
            # num_replicas 3 must not be scaled down to our default of one.
            ours = dataclasses.replace(
                config, num_replicas=info.config.num_replicas, placement=info.config.placement
            )
            info = await js.update_stream(ours)
    _epoch_of(info)  # refuse a server that cannot tell it
    return info


def _epoch_of(info: StreamInfo) -> int:
    if info.created is None:  # servers older than 2.2 do not say
        raise BusError(f"stream {info.config.name} does not report its creation time")
    return epoch_at(info.created.timestamp())


class NatsBus:
    """A :class:`~clustersync.adapters.bus.base.Bus` on a JetStream stream."""

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        config: StreamConfig,
        epoch: int,
        *,
        ack_wait: float,
        redelivery_delay: float,
        publish_timeout: float,
    ) -> None:
        assert config.name is not None and config.subjects is not None
        self._nc = nc
        self._js = js
        self._config = config
        self._stream = config.name
        self._subjects = config.subjects
        self._epoch = epoch
        self._epoch_lock = asyncio.Lock()
        self._published_seq = 0  # highest stream sequence a publish of ours got
        self._msg_id_prefix = uuid.uuid4().hex[:16] + "-"
        self._msg_ids = itertools.count(1)
        # Subjects already checked: a server publishes on the same few per cluster all day.
        self._checked_subjects: set[str] = set()
        self._ack_wait = ack_wait
        self._redelivery_delay = redelivery_delay
        self._publish_timeout = publish_timeout
        self._subscriptions: set[NatsSubscription] = set()
        self._closed = False

    @property
    def stream(self) -> str:
        return self._stream

    def version(self, stream_seq: int) -> int:
        """The version of the current stream's message ``stream_seq`` (see the docstring)."""
        return make_version(self._epoch, stream_seq)

    async def recheck_stream(self, why: str) -> None:
        """The stream may have been replaced: create it if it is gone, and learn its epoch."""
        async with self._epoch_lock:
            epoch = _epoch_of(await _ensure_stream(self._js, self._config, update=False))
            if epoch != self._epoch:
                log.warning("NATS: stream %s is a new one (%s): new epoch", self._stream, why)
                self._epoch = epoch
                self._published_seq = 0

    async def publish(self, subject: str, data: bytes) -> int:
        self._check_open()
        if subject not in self._checked_subjects:
            _check_subject(subject)
            if not any(subject_matches(s, subject) for s in self._subjects):
                raise BusError(
                    f"subject {subject!r} is outside stream {self._stream} "
                    f"({', '.join(self._subjects)})"
                )
            if len(self._checked_subjects) >= CHECKED_SUBJECTS:
                self._checked_subjects.clear()
            self._checked_subjects.add(subject)
        # One id for every try of this publish: if an ack is lost and we retry, the stream's
        # duplicate window stores the message once and acks the retry with the original seq.
        # The bus's random prefix keeps ids apart across processes and restarts; a counter is
        # all a publish needs on top (a uuid4 per message was 5% of a busy server's time).
        headers = {
            "Nats-Msg-Id": f"{self._msg_id_prefix}{next(self._msg_ids)}",
            "Nats-Expected-Stream": self._stream,
        }
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._publish_timeout
        while True:
            remaining = deadline - loop.time()
            try:
                seq, duplicate = await self._request_publish(
                    subject, bytes(data), headers, max(remaining, 0.05)
                )
            except nats.js.errors.NoStreamResponseError as exc:
                # The server is restarting, or the stream is gone (deleted, store lost): make
                # sure it exists again, then retry.
                await self._retry_or_raise(subject, exc, deadline, recheck=True)
            except (
                nats.errors.TimeoutError,
                nats.errors.NoRespondersError,
                nats.errors.ConnectionReconnectingError,
            ) as exc:
                # Transient while the server restarts or JetStream is still recovering.
                await self._retry_or_raise(subject, exc, deadline, recheck=False)
            except nats.errors.MaxPayloadError as exc:
                raise BusMessageTooLargeError(
                    f"publish to {subject} refused: {len(data)} bytes is over the server's "
                    f"max_payload ({_reason(exc)})"
                ) from None
            except nats.errors.Error as exc:
                raise BusError(f"publish to {subject} failed: {_reason(exc)}") from None
            else:
                if seq < self._published_seq and not duplicate:
                    await self._recheck_quietly("its sequence went back")
                self._published_seq = max(self._published_seq, seq)
                return self.version(seq)

    async def _request_publish(
        self, subject: str, data: bytes, headers: dict[str, str], timeout: float
    ) -> tuple[int, bool]:
        """One JetStream publish and its ack: (stream seq, whether it was a duplicate).

        What ``JetStreamContext.publish`` does, without building a ``PubAck`` through the
        standard library's JSON decoder and dataclass reflection on every message."""
        try:
            reply = await self._nc.request(subject, data, timeout=timeout, headers=headers)
        except nats.errors.NoRespondersError:
            raise nats.js.errors.NoStreamResponseError from None
        try:
            ack = orjson.loads(reply.data)
        except orjson.JSONDecodeError:
            raise BusError(f"publish to {subject}: unreadable ack {reply.data[:100]!r}") from None
        if "error" in ack:
            nats.js.errors.APIError.from_error(ack["error"])  # raises the matching error
        return int(ack["seq"]), bool(ack.get("duplicate"))

    async def _retry_or_raise(
        self, subject: str, exc: Exception, deadline: float, *, recheck: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() + RETRY_WAIT >= deadline:
            raise BusError(
                f"publish to {subject} not acknowledged within "
                f"{self._publish_timeout:g}s: {_reason(exc)}"
            ) from None
        if recheck:
            await self._recheck_quietly("a publish found no stream")
        await asyncio.sleep(RETRY_WAIT)

    async def _recheck_quietly(self, why: str) -> None:
        try:
            await self.recheck_stream(why)
        except (nats.errors.Error, TimeoutError, BusError) as exc:
            log.warning("NATS: cannot check stream %s: %s", self._stream, _reason(exc))

    async def subscribe(
        self,
        subject_filter: str,
        durable: str,
        handler: Handler,
        *,
        in_flight: int = 1,
        idle_expiry: float | None = None,
    ) -> NatsSubscription:
        self._check_open()
        if in_flight < 1:
            raise BusError(f"in_flight must be at least 1, not {in_flight}")
        _check_filter(subject_filter)
        if not durable:
            raise BusError("empty durable name")
        name = consumer_name(durable)
        # Many held messages make a crash costly: they all wait ack_wait before anyone gets
        # them again. Handlers still running are kept alive (in progress), so a short one is safe.
        ack_wait = self._ack_wait if in_flight == 1 else min(self._ack_wait, OVERLAP_ACK_WAIT)
        config = ConsumerConfig(
            name=name,
            durable_name=name,
            filter_subject=subject_filter,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=ack_wait,
            max_deliver=-1,  # redeliver forever; the caller decides when to park a message
            # 1: the ordering guarantee, see the module docstring; more only for a handler
            # that keeps its own order (see "Overlapping handlers").
            max_ack_pending=in_flight,
            # The server deletes the consumer once no pull request came for this long. A live
            # subscription always has one pending (at most IDLE_FETCH_EXPIRES apart), and one
            # whose consumer was deleted anyway creates it again (_rebind).
            inactive_threshold=idle_expiry,
        )
        try:
            try:
                info = await self._js.consumer_info(self._stream, name)
            except nats.js.errors.NotFoundError:
                pass
            else:
                existing = info.config.filter_subject
                if existing != subject_filter:
                    raise BusError(
                        f"durable {durable!r} already filters {existing!r}, not {subject_filter!r}"
                    )
            # Create, or update ack_wait and max_ack_pending on an existing durable (the
            # server treats an unchanged config as a no-op).
            await self._js.add_consumer(self._stream, config)
            psub = await self._js.pull_subscribe_bind(name, stream=self._stream)
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusError(
                f"cannot subscribe {durable!r} to {subject_filter}: {_reason(exc)}"
            ) from None
        sub = NatsSubscription(
            self,
            psub,
            config,
            durable,
            handler,
            ack_wait=ack_wait,
            redelivery_delay=self._redelivery_delay,
            in_flight=in_flight,
        )
        self._subscriptions.add(sub)
        return sub

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sub in list(self._subscriptions):
            await sub.stop()
        try:
            # Drain flushes the final acks/naks the stopped subscriptions just sent.
            await self._nc.drain()
        except (nats.errors.Error, TimeoutError) as exc:
            log.warning("NATS: drain failed (%s); closing", _reason(exc))
            await self._nc.close()

    def wake_consumers(self) -> None:
        """The connection came back (maybe to a restarted server that lost every pull request):
        have each subscription ask again now instead of when its long request would expire."""
        for sub in self._subscriptions:
            sub.wake()

    def _forget(self, sub: NatsSubscription) -> None:
        self._subscriptions.discard(sub)

    def _check_open(self) -> None:
        if self._closed:
            raise BusError("the bus is closed")


class NatsSubscription:
    """One subscriber of a durable: a task that fetches, handles and acks one message at a
    time (see the module docstring for why one)."""

    def __init__(
        self,
        bus: NatsBus,
        psub: JetStreamContext.PullSubscription,
        config: ConsumerConfig,
        durable: str,
        handler: Handler,
        *,
        ack_wait: float,
        redelivery_delay: float,
        in_flight: int = 1,
    ) -> None:
        self._bus = bus
        self._in_flight = in_flight
        self._ack_wait = ack_wait
        self._redelivery_delay = redelivery_delay
        self._psub = psub
        self._config = config
        self._durable = durable
        # Sequences of the last delivery: going back means the stream or consumer was replaced.
        self._last_stream_seq = 0
        self._last_consumer_seq = 0
        self._handler = handler
        self._current: Msg | None = None  # the message whose handler is running
        # With in_flight > 1: the messages whose handlers run, by our own count (consumer
        # sequences start again when the consumer is recreated).
        self._held: dict[int, tuple[Msg, asyncio.Task[None]]] = {}
        self._started = itertools.count()
        self._room = asyncio.Event()
        self._expires = FETCH_EXPIRES  # the next pull request's lifetime (see IDLE_FETCH_EXPIRES)
        self._fetch: asyncio.Future[list[Msg]] | None = None  # the pull request awaited now
        self._task = asyncio.create_task(self._run(), name=f"nats-{durable}")
        self._keepalive = asyncio.create_task(self._keep_alive(), name=f"nats-wpi-{durable}")

    async def _run(self) -> None:
        while True:
            room = self._in_flight - len(self._held)
            if room <= 0:  # as many handlers run as allowed: wait until one finishes
                self._room.clear()
                await self._room.wait()
                continue
            # Short again unless this request expires empty (messages, errors and wakes all
            # mean the next request had better be short-lived).
            expires, self._expires = self._expires, FETCH_EXPIRES
            # A future of its own, so that wake() can end this wait without stopping _run.
            self._fetch = fetch = asyncio.ensure_future(self._psub.fetch(room, timeout=expires))
            try:
                msgs = await fetch
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # stop()
                # wake(): the server may have forgotten the request. Ask again, short-lived in
                # case the new one is lost too while the server is still starting.
                continue
            except nats.errors.TimeoutError:
                # Nothing arrived in this pull request's lifetime: ask again, for longer.
                self._expires = min(expires * 2, IDLE_FETCH_EXPIRES)
                continue
            except nats.errors.ConnectionClosedError:
                return
            except (nats.js.errors.ServiceUnavailableError, nats.js.errors.NotFoundError) as exc:
                # The consumer is gone, usually with its stream (deleted, or the server lost
                # its store): create both again, or retry shortly while the server recovers.
                log.warning("NATS: fetch for %s failed: %s", self._durable, _reason(exc))
                await self._rebind()
                # While a stream elects a new leader the consumer exists but answers 503 at
                # once: pause, or every durable hammers the cluster it waits for.
                await asyncio.sleep(RETRY_WAIT)
                continue
            except (nats.errors.Error, TimeoutError) as exc:
                # E.g. a 409 while the server restarts or the consumer moves: retry shortly.
                log.warning("NATS: fetch for %s failed: %s", self._durable, _reason(exc))
                await asyncio.sleep(RETRY_WAIT)
                continue
            except Exception:
                # Anything else is a bug or a surprise from the client library; ending this task
                # would silently stop the durable, so log it loudly and keep consuming.
                log.exception("NATS: consumer %s hit an unexpected error; retrying", self._durable)
                TASK_FAILURES.labels("bus", "nats-consumer").inc()
                await asyncio.sleep(RETRY_WAIT)
                continue
            finally:
                self._fetch = None
            for msg in msgs:
                if self._in_flight == 1:
                    await self._deliver(msg)
                else:
                    await self._start(msg)

    def wake(self) -> None:
        """End the wait on the current pull request (if any), so _run sends a new one now."""
        if self._fetch is not None and not self._fetch.done():
            self._fetch.cancel()

    async def _rebind(self) -> None:
        bus = self._bus
        try:
            await bus.recheck_stream(f"the consumer of {self._durable} was missing")
            await bus._js.add_consumer(bus.stream, self._config)
            psub = await bus._js.pull_subscribe_bind(self._config.name, stream=bus.stream)
        except (nats.errors.Error, TimeoutError, BusError) as exc:
            log.warning("NATS: cannot recreate consumer %s: %s", self._durable, _reason(exc))
            await asyncio.sleep(RETRY_WAIT)
            return
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await self._psub.unsubscribe()
        self._psub = psub
        self._last_stream_seq = self._last_consumer_seq = 0
        log.info("NATS: consumer %s recreated", self._durable)

    async def _delivery_of(self, msg: Msg) -> Delivery:
        meta = msg.metadata
        stream_seq, consumer_seq = int(meta.sequence.stream), int(meta.sequence.consumer)
        if stream_seq < self._last_stream_seq or consumer_seq < self._last_consumer_seq:
            # One consumer hands out a stream's messages in order, so going back means a new
            # stream or consumer: its epoch decides the versions.
            await self._bus._recheck_quietly(f"{self._durable} saw its sequence go back")
        self._last_stream_seq, self._last_consumer_seq = stream_seq, consumer_seq
        return Delivery(
            msg.subject, bytes(msg.data), self._bus.version(stream_seq), int(meta.num_delivered)
        )

    async def _start(self, msg: Msg) -> None:
        """Run the handler of ``msg`` beside the ones already running (in_flight > 1). Tasks
        start in delivery order, so a handler that orders its work before its first ``await``
        sees the messages in order."""
        delivery = await self._delivery_of(msg)
        number = next(self._started)
        task = asyncio.create_task(self._handle_in_place(msg, delivery))
        self._held[number] = (msg, task)

        def done(_: asyncio.Task[None]) -> None:
            self._held.pop(number, None)
            self._room.set()

        task.add_done_callback(done)

    async def _handle_in_place(self, msg: Msg, delivery: Delivery) -> None:
        """Handle, and retry here until the handler returns, then ack. A nak would let the
        messages after this one, which may depend on it, overtake it."""
        try:
            while True:
                try:
                    await self._handler(delivery)
                except Exception:
                    log.warning(
                        "handler for %s failed on %s seq %d (attempt %d)",
                        self._durable, delivery.subject, delivery.seq, delivery.attempt,
                        exc_info=True,
                    )  # fmt: skip
                    await asyncio.sleep(self._redelivery_delay)
                    delivery = dataclasses.replace(delivery, attempt=delivery.attempt + 1)
                    continue
                await self._settle(msg.ack(), "ack")
                return
        except asyncio.CancelledError:
            # stop() while handling: give the message back now rather than after ack_wait.
            await self._settle(msg.nak(), "nak")
            raise

    async def _deliver(self, msg: Msg) -> None:
        delivery = await self._delivery_of(msg)
        self._current = msg
        try:
            await self._handler(delivery)
        except asyncio.CancelledError:
            # stop() while handling: give the message back now rather than after ack_wait.
            await self._settle(msg.nak(), "nak")
            raise
        except Exception:
            log.warning(
                "handler for %s failed on %s seq %d (attempt %d)",
                self._durable,
                delivery.subject,
                delivery.seq,
                delivery.attempt,
                exc_info=True,
            )
            await self._settle(msg.nak(delay=self._redelivery_delay), "nak")
        else:
            await self._settle(msg.ack(), "ack")
        finally:
            self._current = None

    async def _settle(self, action: Awaitable[Any], what: str) -> None:
        # An ack that cannot be sent is not fatal: the server redelivers after ack_wait and
        # stores ignore the repeat (seq guard).
        try:
            await action
        except nats.errors.Error as exc:
            log.warning("NATS: %s for %s failed: %s", what, self._durable, _reason(exc))

    async def _keep_alive(self) -> None:
        """Tell the server a slow handler is still working, so the message is not redelivered
        to another subscriber (and run twice, out of order) after ack_wait."""
        interval = max(self._ack_wait / 3, 0.05)
        while True:
            msg = self._current
            held = dict(self._held)
            await asyncio.sleep(interval)
            if msg is not None and msg is self._current:
                with contextlib.suppress(nats.errors.Error):
                    await msg.in_progress()
            for number, (still, _) in held.items():
                if number in self._held:
                    with contextlib.suppress(nats.errors.Error):
                        await still.in_progress()

    async def stop(self) -> None:
        """Stop fetching. A message being handled is cancelled and nak'd for immediate
        redelivery; the durable and its retained messages stay for the next subscriber."""
        tasks = [self._task, self._keepalive, *(task for _, task in self._held.values())]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # A message may have reached our inbox after the last fetch was cancelled: hand it
        # back too, then drop the inbox so the server stops sending to it.
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            for msg in await self._drain_pending():
                await msg.nak()
            await self._psub.unsubscribe()
        self._bus._forget(self)

    async def _drain_pending(self) -> list[Msg]:
        leftovers: list[Msg] = []
        # Read the inbox's buffer directly: PullSubscription.fetch() would send a new pull
        # request once the buffer is empty, and that could pull yet another message.
        inbox = self._psub._sub
        while self._psub.pending_msgs:
            try:
                msg = await inbox.next_msg(timeout=0.01)
            except nats.errors.TimeoutError:
                break
            if msg.reply:  # skip status messages (408 expired, 100 heartbeat, ...)
                leftovers.append(msg)
        return leftovers
