"""How far an agent's sync after connecting has got, per kind: what the operator reads in the
agent's log and in the fleet status. Pure bookkeeping; the agent feeds it.

A kind is *listed* once its informer has listed it. Against a clustersync server the agent asks
for the backend's inventory of each kind and the backend answers once: that answer
*acknowledges* every listed object (the backend holds it as it is, or has asked for it, which
the agent then sends). A kubescape server answers nothing, so a kind is done there once every
listed object has been announced.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from clustersync.model import Kind
from clustersync.protocol.messages import Batch, Frame, KindProgress, SyncProgress


@dataclass(frozen=True, slots=True)
class Listing:
    """What an informer holds right now, and whether its first list is complete."""

    objects: int
    complete: bool


@dataclass
class InitialSync:
    kinds: tuple[Kind, ...]
    started: float  # monotonic seconds
    answers: bool  # the server answers inventory requests (clustersync.v1)
    sent: dict[Kind, int] = field(default_factory=dict)
    acknowledged: dict[Kind, int] = field(default_factory=dict)
    finished_at: float | None = None

    def on_sent(self, frame: Frame) -> None:
        """Count an object message written to the link (a batch counts its objects)."""
        if isinstance(frame, Batch):
            if frame.kind in self.kinds:
                self.sent[frame.kind] = self.sent.get(frame.kind, 0) + len(frame.unrolled())
            return
        ref = getattr(frame, "ref", None)
        if ref is not None and ref.kind in self.kinds:
            self.sent[ref.kind] = self.sent.get(ref.kind, 0) + 1

    def on_answer(self, kind: Kind, listed: int) -> None:
        """The backend's inventory answer for ``kind`` arrived and was handled."""
        self.acknowledged[kind] = listed

    def kind_done(self, kind: Kind, listing: Listing) -> bool:
        if not listing.complete:
            return False
        if self.answers:
            return kind in self.acknowledged
        return self.sent.get(kind, 0) >= listing.objects

    def done(self, listings: Mapping[Kind, Listing], queued: int) -> bool:
        """Every kind done and nothing left to send."""
        return queued == 0 and all(self.kind_done(k, listings[k]) for k in self.kinds)

    def report(self, listings: Mapping[Kind, Listing]) -> SyncProgress:
        return SyncProgress(
            kinds=tuple(
                KindProgress(
                    kind,
                    listings[kind].objects,
                    self.sent.get(kind, 0),
                    self.acknowledged.get(kind, 0),
                    self.kind_done(kind, listings[kind]),
                )
                for kind in self.kinds
            )
        )

    def lines(self, listings: Mapping[Kind, Listing]) -> Iterable[str]:
        """One log line per kind not done yet."""
        for kind in self.kinds:
            listing = listings[kind]
            if self.kind_done(kind, listing):
                continue
            more = "" if listing.complete else " (listing)"
            yield (
                f"initial sync: {kind} listed {listing.objects}{more} "
                f"sent {self.sent.get(kind, 0)} acknowledged {self.acknowledged.get(kind, 0)}"
            )

    def summary(self, listings: Mapping[Kind, Listing], now: float) -> str:
        total = sum(listings[k].objects for k in self.kinds)
        return f"initial sync done: {total} objects in {now - self.started:.1f} s"
