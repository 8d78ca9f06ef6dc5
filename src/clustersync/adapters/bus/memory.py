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
* Retention: a message lives until every durable it was queued for acknowledged it. The bus holds
  at most ``max_messages`` of them, none older than ``max_age`` seconds (checked on publish and
  subscribe); beyond that the oldest is dropped with a warning and counted in ``dropped``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from clustersync.adapters.bus.base import BusError, Delivery, Handler, subject_matches

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
    seq: int
    subject: str
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
        max_messages: int = 100_000,
        max_age: float = 24 * 3600.0,
        redelivery_delay: float = 0.1,
        max_in_flight: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_messages < 1 or max_age <= 0 or redelivery_delay < 0 or max_in_flight < 1:
            raise ValueError("MemoryBus limits must be positive")
        self.max_messages = max_messages
        self.max_age = max_age
        self.redelivery_delay = redelivery_delay
        self.max_in_flight = max_in_flight
        self.dropped = 0  # messages discarded by the retention bounds
        self._clock = clock
        self._seq = 0
        self._log: OrderedDict[int, _Message] = OrderedDict()  # live messages, oldest first
        self._durables: dict[str, _Durable] = {}
        self._closed = False

    @property
    def retained(self) -> int:
        """Messages not yet acknowledged by every durable they were queued for."""
        return len(self._log)

    async def publish(self, subject: str, data: bytes) -> int:
        self._check_open()
        check_subject(subject)
        self._seq += 1
        # A right-sized private copy: orjson's output keeps its whole growth buffer (about 6x
        # the size), and messages for a disconnected cluster may be retained for hours.
        msg = _Message(self._seq, subject, bytes(memoryview(data)), self._clock())
        self._log[msg.seq] = msg
        for durable in self._durables.values():
            if subject_matches(durable.filter, subject):
                durable.enqueue(msg)
        msg.unclaimed = not msg.holders
        self._enforce_retention()
        return msg.seq

    async def subscribe(
        self, subject_filter: str, durable: str, handler: Handler
    ) -> MemorySubscription:
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

    async def close(self) -> None:
        self._closed = True
        for durable in self._durables.values():
            for sub in list(durable.subscriptions):
                await sub.stop()

    def acked(self, durable: _Durable, msg: _Message) -> None:
        durable.remove(msg)
        if not msg.holders:
            self._log.pop(msg.seq, None)

    def _claim(self, durable: _Durable) -> None:
        for msg in self._log.values():  # seq order
            if msg.unclaimed and subject_matches(durable.filter, msg.subject):
                msg.unclaimed = False
                durable.enqueue(msg)

    def _enforce_retention(self) -> None:
        horizon = self._clock() - self.max_age
        while self._log:
            oldest = next(iter(self._log.values()))
            if len(self._log) <= self.max_messages and oldest.born >= horizon:
                return
            self._drop(oldest)

    def _drop(self, msg: _Message) -> None:
        del self._log[msg.seq]
        for durable in list(msg.holders):
            durable.remove(msg)
        msg.unclaimed = False
        self.dropped += 1
        log.warning("bus retention exceeded: dropped message seq %d on %s", msg.seq, msg.subject)

    def _check_open(self) -> None:
        if self._closed:
            raise BusError("the bus is closed")
