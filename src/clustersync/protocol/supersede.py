"""What the agent does when the server closes its link because another agent took its place.

The server keeps one connection per cluster and closes the older one with code 4000. Two agents
running with one identity would knock each other off about once a second forever; instead each
replaced agent waits longer every time (doubling from ``initial``), and after ``limit`` replacements
in a row, with no other kind of disconnect between them, it gives up so the operator sees why.
"""

from __future__ import annotations

from dataclasses import dataclass

SUPERSEDED_CLOSE = 4000
"""Websocket close code: a newer connection of the same account and cluster took over."""


@dataclass(slots=True)
class SupersedePolicy:
    initial: float = 5.0
    ceiling: float = 120.0
    limit: int = 5
    streak: int = 0

    def replaced(self) -> float | None:
        """Another replacement: the delay before redialing, or None to give up."""
        self.streak += 1
        if self.streak >= self.limit:
            return None
        return float(min(self.ceiling, self.initial * 2.0 ** (self.streak - 1)))

    def disconnected_otherwise(self) -> None:
        """The link ended for another reason: the streak is over."""
        self.streak = 0
