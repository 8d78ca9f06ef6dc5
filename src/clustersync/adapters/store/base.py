"""The store contract shared by the SQLite and PostgreSQL stores.

Rows are keyed by account, cluster, kind, namespace and name. Every write carries ``seq``, the bus
sequence number of the message that caused it, and a write only lands if its ``seq`` is higher
than the row's: a redelivered or stale message can never overwrite newer state. Deletes leave a
tombstone carrying their ``seq`` so that a late put cannot resurrect the object; tombstones are
purged after a retention period.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from clustersync.model import Kind, ObjectRef


class StoreError(RuntimeError):
    """The store could not complete an operation (connection lost, constraint, bad URL)."""


class StoreUnavailableError(StoreError):
    """The store cannot be reached right now (down, restarting, connection lost): retrying
    later will work, so callers wait instead of giving up on the data."""


@dataclass(frozen=True, slots=True, order=True)
class ObjectKey:
    account: str
    cluster: str
    ref: ObjectRef


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: ObjectKey
    uid: str
    resource_version: str
    checksum: str
    object: bytes  # JSON text of the object as the agent sent it (shaped, masked)
    seq: int
    updated_at: float = 0.0  # epoch seconds; set by the store on write


@dataclass(frozen=True, slots=True)
class Delete:
    key: ObjectKey
    seq: int


Write = StoredObject | Delete


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A bus message that could not be decoded or applied, parked for an operator."""

    id: int
    subject: str
    data: bytes
    reason: str
    parked_at: float


class Store(Protocol):
    async def get(self, key: ObjectKey) -> StoredObject | None:
        """The live row, or None if absent or tombstoned."""
        ...

    async def apply(self, writes: Sequence[Write]) -> int:
        """Apply upserts and deletes in one transaction, each guarded by ``seq``.

        Returns how many writes landed (stale ones are skipped, not errors)."""
        ...

    async def list(
        self,
        account: str | None = None,
        cluster: str | None = None,
        kind: Kind | None = None,
    ) -> list[StoredObject]:
        """Live rows, ordered by key, optionally narrowed."""
        ...

    async def highest_version(self) -> int:
        """The highest ``seq`` of any row, tombstones included (0 if empty): an embedded bus
        starting again numbers its messages above it, so its writes are not refused as stale."""
        ...

    async def purge_tombstones(self, older_than: float) -> int:
        """Drop tombstones written before ``older_than`` (epoch seconds); returns how many."""
        ...

    async def park(self, subject: str, data: bytes, reason: str) -> int:
        """Keep a message that failed, with its reason; returns its dead-letter id."""
        ...

    async def dead_letters(self, limit: int = 100) -> builtins.list[DeadLetter]: ...

    async def dead_letter(self, id: int) -> DeadLetter | None: ...

    async def drop_dead_letter(self, id: int) -> bool: ...

    async def close(self) -> None: ...
