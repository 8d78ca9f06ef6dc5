"""The bus contract shared by the embedded, NATS and Pulsar buses.

Subjects are dot-separated tokens (``cs.up.<account>.<cluster>``) and filters use NATS wildcards:
``*`` matches one token, ``>`` the rest. Each durable consumer name is a work queue: every message
on a matching subject goes to exactly one subscriber holding that name, in publish order per
subject, and is redelivered (``attempt`` + 1) if the handler raises. Messages published while no
subscriber matches are retained (bounded by age and size) and delivered when one subscribes.

Bounds per cluster
------------------
What a bus retains is bounded per cluster (per ``<family>.<account>.<cluster>`` subject space),
never only globally, so that one tenant's flood can neither evict nor delay another cluster's
queued messages. A publish that finds its cluster's space full waits for room and then raises
:class:`BusFullError`; it never makes room by dropping queued messages of anyone.

Versions (``Delivery.seq``)
---------------------------
Stores keep a write only if its ``seq`` is higher than the row's, so ``seq`` is the message's
*version* and every bus must make it:

* an integer in ``[1, MAX_VERSION]`` (it lives in a signed 64-bit column);
* strictly increasing in publish order among all messages whose versions get compared: at least
  every subject of one cluster's ``cs.up``, ``cs.write`` and ``cs.down`` families;
* still increasing across a restart of the bus (embedded bus, process killed with ``kill -9``)
  and across the loss and re-creation of the underlying stream or topic: a message published
  after the restart must outrank every message published before it;
* the same on every redelivery of one message, and the value ``publish`` returned for it.

A bus whose native counter restarts (the embedded bus, a JetStream stream that is deleted and
recreated) therefore orders versions as ``(epoch, counter)`` packed into one integer by
:func:`make_version`: ``epoch << SEQ_BITS`` plus the counter, where the epoch is the time the
counter started (:func:`epoch_at`, microseconds since :data:`EPOCH_ORIGIN`). A counter that
restarts later starts from a later epoch; the packing stays ordered while the old counter
advanced fewer than ``2**SEQ_BITS`` messages per microsecond of its life (about 4 billion
messages a second) and the clock does not step back across the restart. A bus whose native
counter never restarts (Pulsar's cluster-wide ledger ids) may use it directly if it meets the
rules above.

Versions of different buses are not comparable. A store that moves to another bus keeps rows
whose versions the new bus may never exceed (Pulsar's ledger-based versions are far below the
packed ones): only the embedded bus starts above ``Store.highest_version()`` when told to.
Moving a store between buses therefore needs the rows re-versioned or the store rebuilt by a
resync.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from clustersync.protocol.envelope import subject_token

__all__ = [
    "EPOCH_ORIGIN",
    "MAX_VERSION",
    "SEQ_BITS",
    "Bus",
    "BusError",
    "BusFullError",
    "BusMessageTooLargeError",
    "Delivery",
    "Handler",
    "Subscription",
    "cluster_space",
    "epoch_at",
    "make_version",
    "subject_matches",
    "subject_token",
]

SEQ_BITS = 12
"""Low bits of a version given to the counter of one epoch. The counter may run past them (the
packing adds, it does not mask): they only set how fast it may run, see "Versions" above."""
EPOCH_ORIGIN = 1_577_836_800.0
"""2020-01-01T00:00:00Z in Unix seconds: epochs count microseconds from here, so versions fit
in 63 bits until about 2091."""
MAX_VERSION = (1 << 63) - 1


class BusError(RuntimeError):
    """The bus refused or could not complete an operation."""


class BusMessageTooLargeError(BusError):
    """The bus refused one message for its size (NATS ``max_payload``, Pulsar's message limit
    without chunking). Other messages still go: the caller skips this one, parks a note of it
    and carries on, rather than treating the bus as down."""


class BusFullError(BusError):
    """The sender's cluster has as many messages queued as its bound allows, and no room came
    free within the publish timeout. Nothing was published and nobody's messages were evicted:
    the caller should push back on that sender (HTTP 429, websocket close 1013 "try again
    later") and retry later."""

    def __init__(self, subject: str, bound: int, waited: float) -> None:
        super().__init__(
            f"{subject}: {bound} messages already queued for this cluster; "
            f"no room within {waited:g}s"
        )
        self.subject = subject
        self.bound = bound


@dataclass(frozen=True, slots=True)
class Delivery:
    subject: str
    data: bytes
    seq: int  # the message's version (see "Versions" above): stores reject lower ones as stale
    attempt: int  # 1 on first delivery


Handler = Callable[[Delivery], Awaitable[None]]
"""Returns to acknowledge; raises to ask for redelivery."""


class Subscription(Protocol):
    async def stop(self) -> None:
        """Stop receiving; unacknowledged messages are redelivered to other subscribers."""
        ...


class Bus(Protocol):
    async def publish(self, subject: str, data: bytes) -> int:
        """Publish and wait until the bus has durably accepted the message; returns its version
        (the ``seq`` its deliveries carry)."""
        ...

    async def subscribe(
        self,
        subject_filter: str,
        durable: str,
        handler: Handler,
        *,
        in_flight: int = 1,
        idle_expiry: float | None = None,
    ) -> Subscription:
        """Deliver the durable's messages to ``handler``. With ``in_flight`` > 1, up to that
        many of its handlers may run at once, whatever their subjects, started in delivery
        order: the handler then keeps the order it needs itself. A bus may run fewer at once
        (the embedded and Pulsar buses keep one at a time per subject).

        ``idle_expiry``: seconds after which the bus may forget a durable nobody reads, for a
        durable named after one process (a server replica's), which a process killed or
        renamed leaves behind. NATS does (the consumer's inactive threshold); the embedded
        bus's durables end with its process; Pulsar keeps them (its namespace policy
        ``subscription_expiration_time_minutes`` is the operator's lever)."""
        ...

    async def close(self) -> None: ...


def subject_matches(subject_filter: str, subject: str) -> bool:
    """NATS-style matching of ``subject`` against a filter with ``*`` and ``>`` wildcards."""
    want = subject_filter.split(".")
    have = subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


def cluster_space(subject: str) -> str:
    """The space a subject's messages are bounded in: its first four tokens, which for the
    backend's subjects are ``cs.<family>.<account>.<cluster>`` (all partitions of one cluster's
    ``cs.up`` share a space; ``cs.up``, ``cs.write`` and ``cs.down`` of a cluster do not, so a
    cluster whose agent floods ``cs.up`` still gets its replies on ``cs.down``)."""
    return ".".join(subject.split(".", 4)[:4])


def epoch_at(unix_seconds: float) -> int:
    """The epoch of a counter that started at ``unix_seconds``: whole microseconds since
    :data:`EPOCH_ORIGIN` (never negative)."""
    return max(0, int((unix_seconds - EPOCH_ORIGIN) * 1_000_000))


def make_version(epoch: int, seq: int) -> int:
    """The version of the ``seq``-th message (from 1) of the counter that began at ``epoch``."""
    if epoch < 0 or seq < 1:
        raise BusError(f"no version for epoch {epoch}, seq {seq}")
    version = (epoch << SEQ_BITS) + seq
    if version > MAX_VERSION:
        raise BusError(f"version of epoch {epoch}, seq {seq} exceeds 63 bits")
    return version
