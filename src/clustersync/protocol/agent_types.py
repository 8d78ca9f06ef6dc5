"""The vocabulary the agent's session and its driver share, without I/O.

The sync strategies and watch events, the write policy, what the session hands back (an
:class:`Outcome` with messages to send and :class:`ClusterWrite` to make), how the driver hands it
objects of its cache (:class:`Cached`, :class:`Listed` read through an :class:`EntryReader`), and
the small functions on objects every part of the session uses: an object's ref and version, its
checksum, the reply fields of a message and the outcome report of a backend write.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from clustersync.model import Kind, ObjectRef
from clustersync.protocol.cache_entry import Facts
from clustersync.protocol.checksum import CHECKSUM_ANNOTATION, canonical_checksum
from clustersync.protocol.messages import (
    Message,
    ObjectDeleted,
    PutObject,
    WriteOutcome,
    WriteStatus,
    reply_meta,
)
from clustersync.protocol.outcomes import short_reason, write_id


class Strategy(StrEnum):
    COPY = "copy"  # always send whole objects
    PATCH = "patch"  # send merge patches against a shadow copy


class Verb(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


class WatchEvent(StrEnum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"


@dataclass(frozen=True, slots=True)
class WritePolicy:
    """What the backend may write into this cluster; everything else is refused."""

    kinds: frozenset[Kind] | None = None  # None: every synced kind
    namespaces: frozenset[str] | None = None  # None: the sync namespace rules apply
    verbs: frozenset[Verb] = frozenset(Verb)


@dataclass(frozen=True, slots=True)
class ClusterWrite:
    """Create-or-replace ``object`` (or delete when None) in the cluster, caused by ``cause``."""

    ref: ObjectRef
    object: dict[str, Any] | None
    cause: Message
    backend_copy: bytes | None = None


@dataclass(frozen=True, slots=True)
class Cached:
    """A live object with the driver's compact cache entry it was read from: an object sent
    whole can then keep that entry as its shadow (see :meth:`AgentSession.share_shadows`)."""

    live: dict[str, Any]
    entry: bytes


class EntryReader(Protocol):
    """How the session reads a driver's cache entry (protocol.cache_entry, the informer's)."""

    def facts(self, entry: bytes) -> Facts: ...

    def parse(self, entry: bytes) -> dict[str, Any]: ...

    def shaped_json(self, entry: bytes, known: Facts | None = None) -> bytes | None: ...


@dataclass(slots=True)
class Listed:
    """An object of the driver's cache known by its key and entry only: the session decides on
    the facts in the entry's header (uid, resourceVersion, fast digest, owner) and unpacks the
    entry only to send it, or parses it where the facts do not suffice (see
    :meth:`AgentSession.reconcile_steps`). Not frozen: one is made for every object a
    reconciliation walks, and a frozen one cost three times as much to make."""

    namespace: str
    name: str
    entry: bytes
    reader: EntryReader

    def cached(self) -> Cached:
        return Cached(self.reader.parse(self.entry), self.entry)


@dataclass(slots=True)
class Outcome:
    send: list[Message] = field(default_factory=list)
    writes: list[ClusterWrite] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (metric reason, log text)
    # Outcomes of backend writes decided here (refusals); sent only to a clustersync server.
    reports: list[WriteOutcome] = field(default_factory=list)


def write_report(cause: Message, status: WriteStatus, reason: str = "") -> list[WriteOutcome]:
    """The outcome of ``cause`` if it is a backend write (see outcomes.write_id), else nothing."""
    ident = write_id(cause)
    if ident is None or not isinstance(cause, PutObject | ObjectDeleted):
        return []
    return [WriteOutcome(ref=cause.ref, status=status, reason=short_reason(reason), msg_id=ident)]


def ref_of(kind: Kind, obj: Mapping[str, Any]) -> ObjectRef:
    meta = obj.get("metadata") or {}
    # Namespaces repeat across many objects: one shared string each (refs are kept per object).
    namespace = sys.intern(str(meta.get("namespace") or ""))
    return ObjectRef(kind, namespace, str(meta.get("name") or ""))


def object_version(live: Mapping[str, Any]) -> str:
    """The "uid/resourceVersion" a held checksum belongs to."""
    meta = live.get("metadata") or {}
    return f"{meta.get('uid', '')}/{meta.get('resourceVersion', '')}"


def precomputed_checksum(live: Mapping[str, Any]) -> str | None:
    """The checksum kubescape's storage server wrote into the object's annotations, if any."""
    annotations = (live.get("metadata") or {}).get("annotations") or {}
    precomputed = annotations.get(CHECKSUM_ANNOTATION) if isinstance(annotations, dict) else None
    return precomputed if isinstance(precomputed, str) and precomputed else None


def checksum_of(live: Mapping[str, Any], shaped: Mapping[str, Any]) -> str:
    """The storage server's precomputed checksum if present, else the canonical hash."""
    return precomputed_checksum(live) or canonical_checksum(shaped)


def reply_fields(cause: Message | None) -> dict[str, Any]:
    """The depth and id of a reply to ``cause`` (of a message of our own, with None)."""
    meta = reply_meta(cause)
    return {"depth": meta.depth, "msg_id": meta.msg_id}
