"""Acknowledgement of backend messages by delivery id (our ``clustersync.v1`` extension).

With the subprotocol negotiated, every frame the server delivers to an agent carries
``DeliveryId``: a number unique within the connection. The agent acknowledges the ids it has
finished with, *including* frames it rejected or could not decode (their id is read leniently from
any JSON object), so one unknown frame never leaves the server waiting. The server keys its ledger
by id, fails a delivery whose ack does not arrive in time (the bus then redelivers it), and after
``max_attempts`` parks the message as a dead letter instead of delivering it again.

Nothing here does I/O; the server and the agent drive these with their own clocks and sockets.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

DELIVERY_ID_KEY = "DeliveryId"
MAX_ACK_IDS = 4096
"""Most ids in one Ack frame; the agent acknowledges far more often than that."""

T = TypeVar("T")


def read_delivery_id(doc: Any) -> int | None:
    """The delivery id of a parsed frame, from any JSON object, in any key case; else None."""
    if not isinstance(doc, dict):
        return None
    for key, value in doc.items():
        if isinstance(key, str) and key.lower() == "deliveryid":
            number = int(value) if isinstance(value, float) and value.is_integer() else value
            if isinstance(number, int) and not isinstance(number, bool) and number > 0:
                return number
            return None
    return None


class DeliveryLedger(Generic[T]):
    """The server's deliveries awaiting the agent's ack, by id (one ledger per connection)."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._pending: dict[int, T] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def issue(self, waiter: T) -> int:
        delivery_id = next(self._ids)
        self._pending[delivery_id] = waiter
        return delivery_id

    def settle(self, ids: Iterable[int]) -> list[T]:
        """The waiters of the acknowledged ids; unknown or repeated ids are ignored."""
        return [w for w in (self._pending.pop(i, None) for i in ids) if w is not None]

    def forget(self, delivery_id: int) -> None:
        """Given up on (timed out): a late ack for it will be ignored."""
        self._pending.pop(delivery_id, None)

    def drain(self) -> list[T]:
        """Every waiter still pending (the connection is gone)."""
        waiters = list(self._pending.values())
        self._pending.clear()
        return waiters


@dataclass(slots=True)
class DeliveryPolicy:
    """How long the server waits for an ack, and how many unacknowledged deliveries of one
    message it makes before parking it.

    Only deliveries that timed out count: a message redelivered because its connection died
    (a flaky link, an agent restart) is not poison, and must not be parked for it.
    """

    ack_timeout: float = 30.0
    max_attempts: int = 5
    remembered: int = 10_000  # messages whose timeouts are counted; the oldest are forgotten
    _timeouts: dict[tuple[str, int], int] = field(default_factory=dict)

    def timed_out(self, subject: str, seq: int) -> int:
        """Count a delivery of the message that was not acknowledged in time; returns the count."""
        key = (subject, seq)
        count = self._timeouts.pop(key, 0) + 1
        self._timeouts[key] = count  # most recent last
        while len(self._timeouts) > self.remembered:
            del self._timeouts[next(iter(self._timeouts))]
        return count

    def exhausted(self, subject: str, seq: int) -> bool:
        """True when the message should be parked instead of delivered again."""
        return self._timeouts.get((subject, seq), 0) >= self.max_attempts

    def settled(self, subject: str, seq: int) -> None:
        self._timeouts.pop((subject, seq), None)


@dataclass(slots=True)
class AckCollector:
    """The agent's handled delivery ids, sent as one Ack when its inbox runs dry or every
    ``every`` ids during a burst."""

    every: int = 64
    _handled: list[int] = field(default_factory=list)

    def handled(self, delivery_id: int | None) -> None:
        if delivery_id is not None:
            self._handled.append(delivery_id)

    def due(self, idle: bool) -> bool:
        return bool(self._handled) and (idle or len(self._handled) >= self.every)

    def take(self) -> tuple[int, ...]:
        ids, self._handled = tuple(self._handled[:MAX_ACK_IDS]), self._handled[MAX_ACK_IDS:]
        return ids

    def reset(self) -> None:
        """A new connection: ids of the old one mean nothing to the server any more."""
        self._handled.clear()
