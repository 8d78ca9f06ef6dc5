"""Object messages to a clustersync server travel in batches (one frame, one bus message).

Each message an agent sends becomes one bus message, and a bus that flushes every message to
disk (JetStream with ``sync_interval: always``, PostgreSQL behind it) caps how many it takes a
second, not how many bytes. So the agent sends what waits in its outbox as one :class:`Batch`
per run of same-kind object messages, and the backend handles a batch item by item (it already
does for kubescape agents, which may batch too). Batches form only from what is already waiting:
a lone change is sent at once (a batch of one), and the more the link lags, the larger the
batches. Every object message of a kind thus travels on the kind's bus partition, in order.

A run stops at a second message for an object already in it: a batch is handled in kubescape's
order by message type (get, verify, delete, patch, put), not in arrival order, so two messages
of one object must travel in separate batches. Only servers that negotiated clustersync.v1 get
batches; kubescape servers get every message on its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from clustersync.model import ObjectRef
from clustersync.protocol.messages import (
    Batch,
    Frame,
    GetObject,
    NewChecksum,
    ObjectDeleted,
    ObjectMessage,
    PatchObject,
    PutObject,
    new_msg_id,
)

BATCH_ITEMS = 500
"""At most this many objects per batch: keeps one bus message and one store transaction small."""
BATCH_BYTES = 768 * 1024
"""At most about this many payload bytes per batch. Escaped into the frame (every quote of an
object's JSON gains a backslash: about +10 % for pods) it stays below NATS's default 1 MiB
message limit; a batch of objects that escape to more is published in parts by the server (see
:func:`halves`). Larger batches than the 256 KiB before: fewer frames, bus messages and
JetStream writes per object."""
ITEM_OVERHEAD = 200  # envelope bytes per item besides its payload (ref, checksum, ids)

Batchable = PutObject | PatchObject | ObjectDeleted | NewChecksum


@dataclass(frozen=True, slots=True)
class Run:
    """What to send next: ``frame`` stands for the first ``count`` waiting messages."""

    frame: Frame
    count: int


def _size(msg: Batchable) -> int:
    if isinstance(msg, PutObject):
        return len(msg.object) + ITEM_OVERHEAD
    if isinstance(msg, PatchObject):
        return len(msg.patch) + ITEM_OVERHEAD
    return ITEM_OVERHEAD


def next_run(
    waiting: Iterable[Frame], *, max_items: int = BATCH_ITEMS, max_bytes: int = BATCH_BYTES
) -> Run | None:
    """A batch of the longest run of waiting object messages that may travel together (even a
    run of one, so every object message of a kind takes the kind's bus partition and keeps its
    order), or the first waiting message if it is no object message."""
    items: list[Batchable] = []
    refs: set[ObjectRef] = set()
    size = 0
    first: Frame | None = None
    for msg in waiting:
        if first is None:
            first = msg
        if not isinstance(msg, Batchable) or len(items) >= max_items:
            break
        ref = msg.ref
        if ref in refs or (items and ref.kind != items[0].ref.kind):
            break
        grown = size + _size(msg)
        if items and grown > max_bytes:
            break
        items.append(msg)
        refs.add(ref)
        size = grown
    if first is None:
        return None
    if not items:
        return Run(first, 1)
    return Run(_batch(items), len(items))


def _batch(items: list[Batchable]) -> Batch:
    return Batch(
        kind=items[0].ref.kind,
        new_checksum=tuple(m for m in items if isinstance(m, NewChecksum)),
        object_deleted=tuple(m for m in items if isinstance(m, ObjectDeleted)),
        patch_object=tuple(m for m in items if isinstance(m, PatchObject)),
        put_object=tuple(m for m in items if isinstance(m, PutObject)),
        msg_id=new_msg_id(),
    )


def halves(batch: Batch) -> tuple[Batch, Batch]:
    """The items of a batch of two or more in two batches, the first half (in kubescape's
    handling order) first: for a server whose bus refuses the whole batch for its size. Its
    objects are distinct, so two batches in a row carry the same changes."""
    items = batch.unrolled()
    if len(items) < 2:
        raise ValueError("a batch of fewer than two items has no halves")
    middle = len(items) // 2
    return _regrouped(batch, items[:middle]), _regrouped(batch, items[middle:])


def _regrouped(batch: Batch, items: tuple[ObjectMessage, ...]) -> Batch:
    return replace(
        batch,
        get_object=tuple(m for m in items if isinstance(m, GetObject)),
        new_checksum=tuple(m for m in items if isinstance(m, NewChecksum)),
        object_deleted=tuple(m for m in items if isinstance(m, ObjectDeleted)),
        patch_object=tuple(m for m in items if isinstance(m, PatchObject)),
        put_object=tuple(m for m in items if isinstance(m, PutObject)),
    )
