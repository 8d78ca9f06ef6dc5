"""The agent's side of the link as a state machine without I/O (in the manner of h11).

The driver (``runtime/agent.py``) owns the sockets, tasks and clock; it tells the session what
happened (connected, a frame sent, a delivery finished, time passed) and asks it what to do next
(which frame to send, whether producers may queue more, whether an addition is announced, when
to resync). Everything here can be tested without a socket or an event loop.

- **Outbox**: messages for the backend, in order, bounded: producers (the flusher turning cluster
  changes into messages, reconciliation) wait for :meth:`LinkSession.has_room`, so a sync of
  100k objects never builds all its frames before the first is sent. Replies to the backend
  skip the bound (the inbox bounds them), and acks go before everything else.
- **Acks** (negotiated servers only): delivery ids the agent has finished with, see
  ``protocol/delivery.py``.
- **Awaiting inventory**: after connecting to a clustersync server, additions of a kind are not
  announced until its inventory has been requested, since the reconciliation that follows covers
  every object of the kind.
- **Resync timing**: with a clustersync server, inventories are requested again every
  ``resync_interval`` seconds.
- **Replacement by a twin**: see ``protocol/supersede.py``.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

from clustersync.model import Kind
from clustersync.protocol.delivery import AckCollector
from clustersync.protocol.messages import Ack, Frame
from clustersync.protocol.supersede import SupersedePolicy
from clustersync.protocol.upbatch import next_run

OUTBOX_LIMIT = 1000
"""Messages queued for the backend before producers wait; about 5 MB of typical pods."""


class LinkSession:
    def __init__(
        self,
        kinds: Iterable[Kind],
        *,
        outbox_limit: int = OUTBOX_LIMIT,
        resync_interval: float = 600.0,
        ack_every: int = 64,
    ) -> None:
        self.kinds = frozenset(kinds)
        self.outbox_limit = outbox_limit
        self.resync_interval = resync_interval
        self.outbox: collections.deque[Frame] = collections.deque()
        self.acks: collections.deque[Ack] = collections.deque()
        self.finished = AckCollector(ack_every)
        self.awaiting_inventory: set[Kind] = set()
        self.negotiated = False  # the server speaks clustersync.v1 (acks, inventories)
        self.is_connected = False
        self.supersede = SupersedePolicy()
        self._resync_at: float | None = None
        # What the frame being sent stands for: 0 the first ack, n the first n outbox messages.
        self._taken: int | None = None

    # ------------------------------------------------------------ connection lifecycle

    def connected(self, negotiated: bool, now: float) -> None:
        self.is_connected = True
        self.negotiated = negotiated
        self.acks.clear()  # delivery ids belong to one connection
        self.finished.reset()
        self.awaiting_inventory = set(self.kinds) if negotiated else set()
        self._resync_at = now + self.resync_interval if negotiated else None

    def disconnected(self) -> None:
        """The outbox is kept for the next connection; acks are not."""
        self.is_connected = False
        self.acks.clear()
        self.finished.reset()
        self._resync_at = None

    # ------------------------------------------------------------ outbox

    def queue(self, messages: Iterable[Frame]) -> None:
        self.outbox.extend(messages)

    def has_room(self) -> bool:
        """May producers queue more? (Replies to the backend do not ask.)"""
        return len(self.outbox) < self.outbox_limit

    def next_frame(self) -> Frame | None:
        """The frame to send now (acks first), or None; call :meth:`frame_done` after it.
        A negotiated server gets waiting object messages batched (``protocol/upbatch.py``)."""
        self._taken = None
        if self.acks:
            self._taken = 0
            return self.acks[0]
        if not self.outbox:
            return None
        if not self.negotiated:
            self._taken = 1
            return self.outbox[0]
        run = next_run(self.outbox)
        assert run is not None  # the outbox is not empty
        self._taken = run.count
        return run.frame

    def frame_done(self) -> None:
        """The frame from :meth:`next_frame` was sent (or dropped for good). An ack queued while
        an outbox frame was being sent stays queued."""
        taken, self._taken = self._taken, None
        if taken == 0 or (taken is None and self.acks):
            self.acks.popleft()
            return
        for _ in range(min(taken or 1, len(self.outbox))):
            self.outbox.popleft()

    # ------------------------------------------------------------ acknowledgements

    def delivery_finished(self, delivery_id: int | None, *, idle: bool) -> bool:
        """Record a handled or rejected delivery; True when an Ack was queued to send."""
        self.finished.handled(delivery_id)
        if not self.finished.due(idle):
            return False
        self.acks.append(Ack(ids=self.finished.take()))
        return True

    # ------------------------------------------------------------ inventories

    def announces_addition(self, kind: Kind) -> bool:
        """False while the kind's coming reconciliation covers its additions anyway."""
        return kind not in self.awaiting_inventory

    def inventory_requested(self, kind: Kind) -> None:
        self.awaiting_inventory.discard(kind)

    def resync_delay(self, now: float) -> float | None:
        """Seconds until the next periodic inventory request (0: now), None if there is none."""
        if self._resync_at is None:
            return None
        return max(0.0, self._resync_at - now)

    def resynced(self, now: float) -> None:
        self._resync_at = now + self.resync_interval if self.negotiated else None
