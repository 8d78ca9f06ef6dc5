"""The bus contract shared by the embedded, NATS and Pulsar buses.

Subjects are dot-separated tokens (``cs.up.<account>.<cluster>``) and filters use NATS wildcards:
``*`` matches one token, ``>`` the rest. Each durable consumer name is a work queue: every message
on a matching subject goes to exactly one subscriber holding that name, in publish order per
subject, and is redelivered (``attempt`` + 1) if the handler raises. Messages published while no
subscriber matches are retained (bounded by age and size) and delivered when one subscribes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from clustersync.protocol.envelope import subject_token

__all__ = [
    "Bus",
    "BusError",
    "Delivery",
    "Handler",
    "Subscription",
    "subject_matches",
    "subject_token",
]


class BusError(RuntimeError):
    """The bus refused or could not complete an operation."""


@dataclass(frozen=True, slots=True)
class Delivery:
    subject: str
    data: bytes
    seq: int  # monotonic per stream: the version stores use to reject stale writes
    attempt: int  # 1 on first delivery


Handler = Callable[[Delivery], Awaitable[None]]
"""Returns to acknowledge; raises to ask for redelivery."""


class Subscription(Protocol):
    async def stop(self) -> None:
        """Stop receiving; unacknowledged messages are redelivered to other subscribers."""
        ...


class Bus(Protocol):
    async def publish(self, subject: str, data: bytes) -> int:
        """Publish and wait until the bus has durably accepted the message; returns its seq."""
        ...

    async def subscribe(
        self, subject_filter: str, durable: str, handler: Handler
    ) -> Subscription: ...

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
