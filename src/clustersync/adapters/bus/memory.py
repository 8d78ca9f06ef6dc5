"""The embedded bus: an in-process event log for single-node deployments (asyncio only).

Delivery rule (deterministic, independent of ack timing):

* A durable exists from its first ``subscribe`` until the bus closes, with or without active
  subscribers. A published message is queued for every existing durable whose filter matches
  (fan-out across durables); within a durable it goes to exactly one subscriber (work queue).
  While a durable has no subscriber its messages wait for the next one.
* A message that no existing durable matches is *unclaimed*: it is retained and handed, in seq
  order, to the first durable created later whose filter matches (to that one durable only).
* Per durable and subject, a message is only delivered once the previous one was acknowledged;
  different subjects run concurrently, up to ``max_in_flight`` per subscription. A handler that
  raises gets the message again (``attempt`` + 1) after ``redelivery_delay``, with no limit: the
  caller decides when to park it. ``Subscription.stop`` cancels its in-flight handlers; those
  messages go back to the durable (``attempt`` + 1) for its other subscribers, or wait.
* Retention: a message lives until every durable it was queued for acknowledged it, and at most
  ``max_age`` seconds (checked on publish and subscribe); an expired message is dropped with a
  warning and counted in ``dropped`` and the ``clustersync_bus_evicted_total`` metric.
* Bounds: each cluster's space (:func:`~clustersync.adapters.bus.base.cluster_space`) holds at
  most ``max_per_cluster`` live messages. A publish into a full space waits until one of them is
  acknowledged, and after ``publish_timeout`` raises ``BusFullError``: the flooding sender is
  slowed down, and no queued message, its own or another cluster's, is ever evicted for room.
* Versions: the bus lives in memory, so its counter starts again with every process. Versions
  are ``epoch << SEQ_BITS`` plus the counter, the epoch being the wall-clock microsecond the bus
  was created, so a restarted bus outranks every version the store kept from the previous one
  (see the contract in ``base``). ``version_floor``, when the caller knows the highest version
  the store holds, makes the bus start above it even if the clock stepped back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from clustersync.adapters.bus.base import (
    SEQ_BITS,
    BusError,
    BusFullError,
    Delivery,
    Handler,
    cluster_space,
    epoch_at,
    subject_matches,
)
from clustersync.adapters.metrics import BUS_EVICTED, BUS_FULL

log = logging.getLogger(__name__)

_BAD_CHARS = frozenset("*>") | frozenset(" \t\r\n\f\v")


def check_subject(subject: str) -> None:
    """Raise BusError unless ``subject`` is non-empty dot-separated tokens without wildcards."""
    tokens = subject.split(".")
    if not subject or any(not t or any(c in _BAD_CHARS or c.isspace() for c in t) for t in tokens):
        raise BusError(f"invalid subject {subject!r}")


def check_filter(subject_filter: str) -> None:
    """Like subjects, but ``*`` may stand for a whole token and ``>`` for the last one."""
    tokens = subject_filter.split(".")
    for i, token in enumerate(tokens):
        if token == "*" or (token == ">" and i == len(tokens) - 1):
            continue
        if not token or any(c in _BAD_CHARS or c.isspace() for c in token):
            raise BusError(f"invalid subject filter {subject_filter!r}")


def check_durable(durable: str) -> None:
    # Same rule as NATS consumer names, so code written against this bus also runs on NATS.
    if not durable or any(c in _BAD_CHARS or c.isspace() or c == "." for c in durable):
        raise BusError(f"invalid durable name {durable!r}")


@dataclass(eq=False, slots=True)
class _Message:
    seq: int  # the version handed out (see base)
    subject: str
    space: str  # cluster_space(subject), whose bound this message counts against
    data: bytes
    born: float  # bus clock at publish, for max_age
    holders: list[_Durable] = field(default_factory=list)  # durables that have not acked it
    unclaimed: bool = False


class _Durable:
    """One work queue: per-subject FIFOs plus a queue of subjects ready to be worked on."""

    def __init__(self, bus: MemoryBus, name: str, subject_filter: str) -> None:
        self.bus = bus
        self.name = name
        self.filter = subject_filter
        self.pending: dict[str, deque[_Message]] = {}
        self.attempts: dict[int, int] = {}  # seq -> deliveries so far
        # A subject is in `scheduled` while it sits in `ready` or a worker holds it: that is what
        # keeps one message per subject in flight.
        self.ready: asyncio.Queue[str] = asyncio.Queue()
        self.scheduled: set[str] = set()
        self.subscriptions: list[MemorySubscription] = []

    def enqueue(self, msg: _Message) -> None:
        msg.holders.append(self)
        self.pending.setdefault(msg.subject, deque()).append(msg)
        if msg.subject not in self.scheduled:
            self.scheduled.add(msg.subject)
            self.ready.put_nowait(msg.subject)

    def remove(self, msg: _Message) -> None:
        """Forget ``msg`` (acked or dropped); a worker holding it notices on completion."""
        queue = self.pending.get(msg.subject)
        if queue is not None:
            with contextlib.suppress(ValueError):
                queue.remove(msg)
            if not queue:
                del self.pending[msg.subject]
        self.attempts.pop(msg.seq, None)
        with contextlib.suppress(ValueError):
            msg.holders.remove(self)

    def release(self, subject: str) -> None:
        """A worker is done with ``subject``: reschedule it if more messages wait."""
        if subject in self.pending:
            self.ready.put_nowait(subject)
        else:
            self.scheduled.discard(subject)


class MemorySubscription:
    def __init__(self, durable: _Durable, handler: Handler, workers: int) -> None:
        self._durable = durable
        self._handler = handler
        self._tasks = [
            asyncio.create_task(self._work(), name=f"bus-{durable.name}-{i}")
            for i in range(workers)
        ]

    async def _work(self) -> None:
        durable = self._durable
        while True:
            subject = await durable.ready.get()
            try:
                queue = durable.pending.get(subject)
                if queue:  # else its messages were dropped while it waited
                    await self._deliver(queue[0])
            finally:
                # Also on cancellation (stop/close): the subject, and the unacked message at its
                # head, go back to the durable for the other subscribers.
                durable.release(subject)

    async def _deliver(self, msg: _Message) -> None:
        durable = self._durable
        attempt = durable.attempts.get(msg.seq, 0) + 1
        durable.attempts[msg.seq] = attempt
        try:
            await self._handler(Delivery(msg.subject, msg.data, msg.seq, attempt))
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise  # stop/close: the finally in _work hands the message back
            # A CancelledError leaking out of the handler's own awaits is just a failure; letting
            # it end the worker would silently shrink the subscription.
            log.debug("handler of %s was cancelled on seq %d", durable.name, msg.seq)
            return
        except Exception:
            log.debug(
                "handler of %s failed on seq %d (attempt %d)",
                durable.name,
                msg.seq,
                attempt,
                exc_info=True,
            )
            if durable.bus.redelivery_delay > 0:
                # The subject stays held while we wait, so nothing overtakes the failed message.
                await asyncio.sleep(durable.bus.redelivery_delay)
            return
        if durable in msg.holders:  # not dropped by retention meanwhile
            durable.bus.acked(durable, msg)

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        with contextlib.suppress(ValueError):
            self._durable.subscriptions.remove(self)
        # A handler may stop its own subscription: its worker is cancelled last, without awaiting
        # itself, so the message it holds goes back to the durable once it next yields.
        current = asyncio.current_task()
        others = [task for task in tasks if task is not current]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        if current is not None and current in tasks:
            current.cancel()


class MemoryBus:
    """A :class:`~clustersync.adapters.bus.base.Bus` held in this process's memory."""

    def __init__(
        self,
        *,
        max_per_cluster: int = 20_000,
        max_age: float = 24 * 3600.0,
        redelivery_delay: float = 0.1,
        max_in_flight: int = 64,
        publish_timeout: float = 10.0,
        version_floor: int = 0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if (
            max_per_cluster < 1
            or max_age <= 0
            or redelivery_delay < 0
            or max_in_flight < 1
            or publish_timeout < 0
            or version_floor < 0
        ):
            raise ValueError("MemoryBus limits must be positive")
        self.max_per_cluster = max_per_cluster
        self.max_age = max_age
        self.redelivery_delay = redelivery_delay
        self.max_in_flight = max_in_flight
        self.publish_timeout = publish_timeout
        self.dropped = 0  # messages discarded by max_age
        self.refused = 0  # publishes refused with BusFullError
        self._clock = clock
        # Every version is above both: see "Versions" in the module docstring.
        self._seq = max(epoch_at(wall_clock()) << SEQ_BITS, version_floor)
        self._log: OrderedDict[int, _Message] = OrderedDict()  # live messages, oldest first
        self._queued: dict[str, int] = {}  # live messages per cluster space
        self._room: dict[str, asyncio.Event] = {}  # set when a full space gets room
        self._durables: dict[str, _Durable] = {}
        self._closed = False

    @property
    def retained(self) -> int:
        """Messages not yet acknowledged by every durable they were queued for."""
        return len(self._log)

    def queued(self, subject: str) -> int:
        """Live messages in the cluster space of ``subject``."""
        return self._queued.get(cluster_space(subject), 0)

    async def publish(self, subject: str, data: bytes) -> int:
        self._check_open()
        check_subject(subject)
        space = cluster_space(subject)
        if self._queued.get(space, 0) >= self.max_per_cluster:
            await self._wait_for_room(space, subject)
        self._seq += 1
        # A right-sized private copy: orjson's output keeps its whole growth buffer (about 6x
        # the size), and messages for a disconnected cluster may be retained for hours.
        msg = _Message(self._seq, subject, space, bytes(memoryview(data)), self._clock())
        self._log[msg.seq] = msg
        self._queued[space] = self._queued.get(space, 0) + 1
        for durable in self._durables.values():
            if subject_matches(durable.filter, subject):
                durable.enqueue(msg)
        msg.unclaimed = not msg.holders
        self._enforce_retention()
        return msg.seq

    async def subscribe(
        self,
        subject_filter: str,
        durable: str,
        handler: Handler,
        *,
        in_flight: int = 1,
        idle_expiry: float | None = None,  # durables end with the process anyway
    ) -> MemorySubscription:
        # ``in_flight`` is not needed: subjects already run concurrently (max_in_flight) and
        # one subject's messages one at a time, which is stricter.
        self._check_open()
        check_filter(subject_filter)
        check_durable(durable)
        queue = self._durables.get(durable)
        if queue is None:
            queue = self._durables[durable] = _Durable(self, durable, subject_filter)
            self._enforce_retention()  # expire old messages before handing them out
            self._claim(queue)
        elif queue.filter != subject_filter:
            raise BusError(
                f"durable {durable!r} already filters {queue.filter!r}, not {subject_filter!r}"
            )
        sub = MemorySubscription(queue, handler, self.max_in_flight)
        queue.subscriptions.append(sub)
        return sub

    async def _wait_for_room(self, space: str, subject: str) -> None:
        self._enforce_retention()  # expired messages make room first
        try:
            async with asyncio.timeout(self.publish_timeout):
                while self._queued.get(space, 0) >= self.max_per_cluster:
                    room = self._room.setdefault(space, asyncio.Event())
                    await room.wait()
                    self._check_open()
        except TimeoutError:
            self.refused += 1
            BUS_FULL.labels("memory").inc()
            raise BusFullError(subject, self.max_per_cluster, self.publish_timeout) from None

    async def close(self) -> None:
        self._closed = True
        for room in self._room.values():  # publishers waiting for room fail now
            room.set()
        for durable in self._durables.values():
            for sub in list(durable.subscriptions):
                await sub.stop()

    def acked(self, durable: _Durable, msg: _Message) -> None:
        durable.remove(msg)
        if not msg.holders and self._log.pop(msg.seq, None) is not None:
            self._forget(msg)

    def _forget(self, msg: _Message) -> None:
        """``msg`` left the log: its space has room for one more."""
        left = self._queued[msg.space] - 1
        if left:
            self._queued[msg.space] = left
        else:
            del self._queued[msg.space]
        room = self._room.pop(msg.space, None)
        if room is not None:
            room.set()

    def _claim(self, durable: _Durable) -> None:
        for msg in self._log.values():  # seq order
            if msg.unclaimed and subject_matches(durable.filter, msg.subject):
                msg.unclaimed = False
                durable.enqueue(msg)

    def _enforce_retention(self) -> None:
        horizon = self._clock() - self.max_age
        expired: list[_Message] = []
        while self._log:
            oldest = next(iter(self._log.values()))
            if oldest.born >= horizon:
                break
            self._drop(oldest)
            expired.append(oldest)
        if expired:
            # One line per sweep, not per message: a long-offline cluster can expire thousands.
            self.dropped += len(expired)
            BUS_EVICTED.labels("memory", "max_age").inc(len(expired))
            subjects = sorted({msg.subject for msg in expired})
            log.warning(
                "bus retention: dropped %d messages older than %gs, unacknowledged, on %s%s",
                len(expired),
                self.max_age,
                ", ".join(subjects[:5]),
                f" and {len(subjects) - 5} more subjects" if len(subjects) > 5 else "",
            )

    def _drop(self, msg: _Message) -> None:
        del self._log[msg.seq]
        for durable in list(msg.holders):
            durable.remove(msg)
        msg.unclaimed = False
        self._forget(msg)

    def _check_open(self) -> None:
        if self._closed:
            raise BusError("the bus is closed")
