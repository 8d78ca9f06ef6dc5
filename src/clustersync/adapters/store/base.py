"""The store contract shared by the SQLite and PostgreSQL stores.

Rows are keyed by account, cluster, kind, namespace and name. Every write carries ``seq``, the bus
sequence number of the message that caused it, and a write only lands if its ``seq`` is higher
than the row's: a redelivered or stale message can never overwrite newer state. Deletes leave a
tombstone carrying their ``seq`` so that a late put cannot resurrect the object; tombstones are
purged after a retention period.

The store also keeps every backend write the API accepted, with its outcome (the ``writes``
table), and what each cluster's agent said it syncs (``cluster_info``).
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import orjson

from clustersync.model import Kind, KindError, ObjectRef
from clustersync.protocol.messages import ObjectDeleted, PutObject, SyncedKind, WriteStatus
from clustersync.protocol.outcomes import FINAL, may_replace


class StoreError(RuntimeError):
    """The store could not complete an operation (connection lost, constraint, bad URL)."""


class StoreUnavailableError(StoreError):
    """The store cannot be reached right now (down, restarting, connection lost): retrying
    later will work, so callers wait instead of giving up on the data."""


class BadObjectError(StoreError):
    """An object in a batch of writes is not JSON text the store can hold (malformed, not an
    object, or a value its JSON type refuses); nothing of the batch landed. Which object is not
    said: the caller parses them itself to refuse the bad ones alone (see UnparsedObject)."""


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
class UnparsedObject:
    """An object to store whose JSON text the writer has not parsed: the store reads its uid and
    resourceVersion from ``metadata`` itself (strings only; anything else is stored as "") and
    refuses the whole batch with BadObjectError if the text is not a JSON object. PostgreSQL
    parses every object into jsonb anyway, so this saves the writer a parse per object."""

    key: ObjectKey
    checksum: str
    object: bytes
    seq: int


@dataclass(frozen=True, slots=True)
class Delete:
    key: ObjectKey
    seq: int


Write = StoredObject | UnparsedObject | Delete


@dataclass(frozen=True, slots=True, order=True)
class KindCount:
    account: str
    cluster: str
    kind: Kind
    count: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A bus message that could not be decoded or applied, parked for an operator."""

    id: int
    subject: str
    data: bytes
    reason: str
    parked_at: float


@dataclass(frozen=True, slots=True)
class WriteRecord:
    """A backend write the API accepted, and what became of it."""

    id: str
    account: str
    cluster: str
    ref: ObjectRef
    verb: str  # "put" or "delete"
    status: WriteStatus = WriteStatus.PENDING
    reason: str = ""
    # The bus message as published, kept while the write is not final so that a write lost with
    # a non-durable bus can be published again; dropped once the outcome is final.
    subject: str = ""
    data: bytes = b""
    created_at: float = 0.0  # epoch seconds; set by the store
    updated_at: float = 0.0

    @classmethod
    def pending(
        cls, account: str, cluster: str, msg: PutObject | ObjectDeleted, subject: str, data: bytes
    ) -> WriteRecord:
        """The record of a backend write not settled yet, with the bus message carrying it."""
        verb = "delete" if isinstance(msg, ObjectDeleted) else "put"
        return cls(msg.msg_id, account, cluster, msg.ref, verb, subject=subject, data=data)

    def column_values(self) -> tuple[str | bytes, ...]:
        """The values of the ``writes`` columns id .. data, in table order (both stores)."""
        kind = self.ref.kind
        return (
            self.id, self.account, self.cluster, kind.group, kind.version, kind.resource,
            self.ref.namespace, self.ref.name, self.verb, self.status.value, self.reason,
            self.subject, bytes(self.data),
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    """What a cluster's agent last said about itself, or, for a kubescape agent (which says
    nothing), that it connected."""

    account: str
    cluster: str
    protocol: str  # "clustersync.v1", or "kubescape" (then ``kinds`` is not known: empty)
    kinds: tuple[SyncedKind, ...] = ()
    updated_at: float = 0.0  # epoch seconds; set by the store


@dataclass(frozen=True, slots=True)
class ClusterState:
    """What the backend last heard about a cluster's link and initial sync, as JSON texts: the
    server replica's connection facts (``link``) and the agent's progress report (``progress``);
    ``b"{}"`` until one arrives. Read by the fleet status (runtime/status.py)."""

    account: str
    cluster: str
    connection_id: str = ""
    link: bytes = b"{}"
    progress: bytes = b"{}"
    updated_at: float = 0.0  # epoch seconds; set by the store


def encode_kinds(kinds: Sequence[SyncedKind]) -> bytes:
    return orjson.dumps(
        [
            {
                "group": k.kind.group,
                "version": k.kind.version,
                "resource": k.kind.resource,
                "namespaced": k.namespaced,
            }
            for k in kinds
        ]
    )


def decode_kinds(data: bytes | str) -> tuple[SyncedKind, ...]:
    try:
        items = orjson.loads(data)
        return tuple(
            SyncedKind(Kind(i["group"], i["version"], i["resource"]), i["namespaced"])
            for i in items
        )
    except (orjson.JSONDecodeError, KindError, KeyError, TypeError) as exc:
        raise StoreError(f"stored cluster kinds are not readable: {exc}") from None


def replaceable_statuses(new: WriteStatus) -> tuple[str, ...]:
    """The current statuses a write may hold for ``new`` to replace it (see may_replace)."""
    return tuple(s.value for s in WriteStatus if may_replace(s, new))


def is_final(status: WriteStatus) -> bool:
    return status in FINAL


def write_filter(
    account: str | None, cluster: str | None, ref: ObjectRef | None, placeholder: str
) -> tuple[str, list[str]]:
    """The WHERE clause narrowing the writes table, and its parameters; ``placeholder`` is
    ``?`` (SQLite) or ``$`` (PostgreSQL, numbered)."""
    columns: list[tuple[str, str]] = []
    if account is not None:
        columns.append(("account", account))
    if cluster is not None:
        columns.append(("cluster", cluster))
    if ref is not None:
        kind = ref.kind
        columns += [("api_group", kind.group), ("api_version", kind.version),
                    ("resource", kind.resource), ("namespace", ref.namespace),
                    ("name", ref.name)]
    terms = [
        f"{column} = {'?' if placeholder == '?' else f'${i}'}"
        for i, (column, _) in enumerate(columns, 1)
    ]
    return (f" WHERE {' AND '.join(terms)}" if terms else ""), [v for _, v in columns]


class Store(Protocol):
    async def get(self, key: ObjectKey) -> StoredObject | None:
        """The live row, or None if absent or tombstoned."""
        ...

    async def get_many(self, keys: Sequence[ObjectKey]) -> dict[ObjectKey, StoredObject]:
        """The live rows of ``keys`` in one read, by key; absent and tombstoned keys are left
        out (a key given twice is read once). For the ingester, which needs the stored copies
        of all the objects a batch message is about."""
        ...

    async def apply(self, writes: Sequence[Write]) -> int:
        """Apply upserts and deletes in one transaction, each guarded by ``seq``.

        Returns how many writes landed (stale ones are skipped, not errors). Raises
        BadObjectError, and writes nothing, if an UnparsedObject's text is not a JSON object."""
        ...

    async def list(
        self,
        account: str | None = None,
        cluster: str | None = None,
        kind: Kind | None = None,
        *,
        namespace: str | None = None,
        name: str | None = None,
        after: ObjectKey | None = None,
        limit: int | None = None,
    ) -> list[StoredObject]:
        """Live rows, ordered by key, optionally narrowed; with ``after``, only rows whose key
        sorts after it, and at most ``limit`` of them (the API's pages)."""
        ...

    async def count_kinds(
        self, account: str | None = None, cluster: str | None = None
    ) -> builtins.list[KindCount]:
        """How many live rows each (account, cluster, kind) holds, ordered by those."""
        ...

    async def count_dead_letters(self) -> dict[str, int]:
        """How many dead letters were parked from each subject."""
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

    async def add_write(self, write: WriteRecord) -> bool:
        """Record a pending write; False (and nothing changed) if its id is already known."""
        ...

    async def get_write(self, id: str) -> WriteRecord | None: ...

    async def settle_write(self, id: str, status: WriteStatus, reason: str = "") -> bool:
        """Record an outcome; False if there is no such write or its outcome may not change
        that way (outcomes only move forward; the first final one stays)."""
        ...

    async def claim_forward(self, id: str) -> str | None:
        """Mark write ``id`` as forwarded to its cluster, unless a write to the same object
        that the API accepted after it was forwarded already: then change nothing and return
        that newer write's id (carrying out ``id`` now would put an older version back)."""
        ...

    async def pending_writes(self, limit: int = 10_000) -> builtins.list[WriteRecord]:
        """Writes still pending, oldest first, with their bus message."""
        ...

    async def purge_writes(self, older_than: float) -> int:
        """Drop final writes settled before ``older_than`` (epoch seconds); returns how many."""
        ...

    async def recent_writes(
        self,
        account: str | None = None,
        cluster: str | None = None,
        ref: ObjectRef | None = None,
        limit: int = 100,
    ) -> builtins.list[WriteRecord]:
        """Writes, newest first, optionally of one cluster or one object (the audit trail the
        dashboard shows; kept until ``purge_writes`` drops them)."""
        ...

    async def count_writes(self) -> builtins.list[tuple[str, str, str, int]]:
        """(account, cluster, status, how many) over the writes table, ordered."""
        ...

    async def save_cluster_info(self, info: ClusterInfo) -> None: ...

    async def cluster_info(self, account: str, cluster: str) -> ClusterInfo | None: ...

    async def save_link(
        self, account: str, cluster: str, connection_id: str, link: bytes, *, current: bool
    ) -> bool:
        """Record a connection's facts. ``current=False`` (a new connection) replaces whatever
        was there; ``current=True`` (news of a known connection: alive, closed) only updates the
        row of that same connection, so a replaced connection's late news changes nothing.
        Returns whether the row changed."""
        ...

    async def save_progress(self, account: str, cluster: str, progress: bytes) -> None: ...

    async def cluster_states(self) -> builtins.list[ClusterState]: ...

    async def close(self) -> None: ...
