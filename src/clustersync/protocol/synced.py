"""What the agent keeps per synced object, in one compact record.

Three facts are kept per object: the checksum of its last hashed version (hashing dominates the
agent's CPU), the shadow (the JSON the backend last received of a patch-strategy object, which
merge patches are computed against) and, for copy-strategy objects, the checksum last sent.
Kept as three dicts keyed by :class:`ObjectRef` they cost three keys, three slots and a full
JSON copy per object; here they share one record, and shadows are deflated against a dictionary
learned per kind (see protocol.compact), so a synced pod costs well under a kilobyte.

The three views keep the mapping interface the session used before (``get``, ``pop``, item
assignment), so the session's logic reads as it did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import orjson

from clustersync.model import Kind, ObjectRef
from clustersync.protocol.compact import Packer

Version = tuple[str, str]  # (the object's "uid/resourceVersion", its checksum)


class _Record:
    __slots__ = ("checksum", "sent", "shadow", "shared", "version")

    def __init__(self) -> None:
        self.version: str | None = None  # "uid/resourceVersion" the checksum belongs to
        self.checksum: str | None = None
        self.shadow: bytes | None = None  # packed, or a shared cache entry (see ShadowView.share)
        self.shared = False
        self.sent: str | None = None

    def empty(self) -> bool:
        return self.checksum is None and self.shadow is None and self.sent is None


class SyncedObjects:
    """The per-object records, and the views the session uses."""

    def __init__(self) -> None:
        self._records: dict[ObjectRef, _Record] = {}
        self.checksum_changes = 0  # grows with every checksum set or dropped: is a save due?
        self._packers: dict[Kind, Packer] = {}
        # Per kind, how to read the shadow back from a shared cache entry (see ShadowView.share).
        self._readers: dict[Kind, Callable[[bytes], Any]] = {}
        self.unreadable_shadows = 0  # shared entries that could not be read back (sent whole)
        self.shadows = ShadowView(self)
        self.checksums = ChecksumView(self)
        self.sent = SentView(self)

    def __len__(self) -> int:
        return len(self._records)

    def record(self, ref: ObjectRef) -> _Record:
        record = self._records.get(ref)
        if record is None:
            record = self._records[ref] = _Record()
        return record

    def find(self, ref: ObjectRef) -> _Record | None:
        return self._records.get(ref)

    def hold(self, ref: ObjectRef, version: str, checksum: str) -> None:
        """Hold ``checksum`` for this ``version`` of the object (as an assignment to
        :class:`ChecksumView`, counted as a change only when it is one): one lookup, for the
        reconciliation's path that touches every object of a first sync."""
        record = self.record(ref)
        if record.version != version or record.checksum != checksum:
            record.version, record.checksum = version, checksum
            self.checksum_changes += 1

    def sent_whole(
        self, ref: ObjectRef, *, sent: str | None, shadow: bytes | None, shared: bool = False
    ) -> None:
        """The object was sent whole: what the backend now holds is ``shadow`` (packed here
        unless ``shared``, see :meth:`ShadowView.share`) for a patch-strategy object, ``sent``
        (its checksum) for a copy-strategy one. One lookup instead of a discard, a pop and an
        assignment through the views."""
        record = self.record(ref)
        if shadow is not None and not shared:
            shadow = self.packer(ref.kind).pack(shadow)
        record.shadow, record.shared, record.sent = shadow, shadow is not None and shared, sent
        self.tidy(ref, record)

    def forget(self, ref: ObjectRef) -> None:
        if self._records.pop(ref, None) is not None:
            self.checksum_changes += 1

    def tidy(self, ref: ObjectRef, record: _Record) -> None:
        if record.empty():
            self._records.pop(ref, None)

    def refs(self) -> Iterator[ObjectRef]:
        return iter(list(self._records))

    def holds_checksum(self, kind: Kind, wanted: Callable[[str], bool]) -> bool:
        """Whether a held checksum of ``kind`` is ``wanted``: stops at the first and copies no
        list of the records (asked before every inventory request)."""
        for ref, record in self._records.items():
            if ref.kind == kind and record.checksum is not None and wanted(record.checksum):
                return True
        return False

    def share_from(self, kind: Kind, reader: Callable[[bytes], Any]) -> None:
        """Let shadows of ``kind`` be shared cache entries, which ``reader`` turns back into the
        shadow, decoded (it may raise ValueError for an entry it cannot read)."""
        self._readers[kind] = reader

    def shares(self, kind: Kind) -> bool:
        return kind in self._readers

    def read_shared(self, kind: Kind, entry: bytes) -> Any:
        reader = self._readers.get(kind)
        if reader is None:
            raise ValueError(f"no reader of shared shadows of {kind}")
        return reader(entry)

    def packer(self, kind: Kind) -> Packer:
        packer = self._packers.get(kind)
        if packer is None:
            packer = self._packers[kind] = Packer()
        return packer


class ShadowView(Mapping[ObjectRef, bytes]):
    """Shadows as JSON bytes by ref; stored packed."""

    def __init__(self, store: SyncedObjects) -> None:
        self._store = store

    def __getitem__(self, ref: ObjectRef) -> bytes:
        record = self._store.find(ref)
        if record is None or record.shadow is None:
            raise KeyError(ref)
        if not record.shared:
            return self._store.packer(ref.kind).unpack(record.shadow)
        return orjson.dumps(self.decoded(ref))

    def decoded(self, ref: ObjectRef) -> Any:
        """The shadow decoded; a shared one without the detour through its JSON text. Raises
        KeyError if there is none, orjson.JSONDecodeError if a stored one is not JSON."""
        record = self._store.find(ref)
        if record is None or record.shadow is None:
            raise KeyError(ref)
        if not record.shared:
            return orjson.loads(self._store.packer(ref.kind).unpack(record.shadow))
        try:
            return self._store.read_shared(ref.kind, record.shadow)
        except ValueError:
            # Counted and treated as no shadow: the object is then sent whole, which is safe.
            self._store.unreadable_shadows += 1
            raise KeyError(ref) from None

    def __setitem__(self, ref: ObjectRef, shadow: bytes) -> None:
        record = self._store.record(ref)
        record.shadow = self._store.packer(ref.kind).pack(shadow)
        record.shared = False

    def share(self, ref: ObjectRef, entry: bytes) -> None:
        """Make the shadow the shared ``entry`` (the caller's compact copy of the very object
        whose shape was sent; its kind's reader turns it back into that JSON): no packing, and
        no second copy while the entry is also the current one in the caller's cache. Reading
        it back costs a parse and a shape, once, at the object's next change."""
        record = self._store.record(ref)
        record.shadow = entry
        record.shared = True

    def __iter__(self) -> Iterator[ObjectRef]:
        for ref in self._store.refs():
            record = self._store.find(ref)
            if record is not None and record.shadow is not None:
                yield ref

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def pop(self, ref: ObjectRef, default: None = None) -> bytes | None:
        shadow = self.get(ref)
        record = self._store.find(ref)
        if record is not None:
            record.shadow, record.shared = None, False
            self._store.tidy(ref, record)
        return shadow if shadow is not None else default

    def discard(self, ref: ObjectRef) -> None:
        """Drop the shadow, if any (``pop`` without unpacking it)."""
        record = self._store.find(ref)
        if record is not None:
            record.shadow, record.shared = None, False
            self._store.tidy(ref, record)

    def packed_size(self) -> int:
        """Bytes held by the packed shadows (for tests and benchmarks)."""
        total = 0
        for ref in self:
            record = self._store.find(ref)
            if record is not None and not record.shared:  # shared entries belong to the cache
                total += len(record.shadow or b"")
        return total


class ChecksumView(Mapping[ObjectRef, Version]):
    """The last hashed version of each object: ref -> ("uid/resourceVersion", checksum)."""

    def __init__(self, store: SyncedObjects) -> None:
        self._store = store

    def __getitem__(self, ref: ObjectRef) -> Version:
        record = self._store.find(ref)
        if record is None or record.version is None or record.checksum is None:
            raise KeyError(ref)
        return record.version, record.checksum

    def __setitem__(self, ref: ObjectRef, value: Version) -> None:
        record = self._store.record(ref)
        record.version, record.checksum = value
        self._store.checksum_changes += 1

    def __iter__(self) -> Iterator[ObjectRef]:
        for ref in self._store.refs():
            record = self._store.find(ref)
            if record is not None and record.checksum is not None:
                yield ref

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def pop(self, ref: ObjectRef, default: None = None) -> Version | None:
        value = self.get(ref)
        record = self._store.find(ref)
        if record is not None:
            record.version = record.checksum = None
            self._store.checksum_changes += 1
            self._store.tidy(ref, record)
        return value if value is not None else default


class SentView:
    """The checksum last sent of each copy-strategy object."""

    def __init__(self, store: SyncedObjects) -> None:
        self._store = store

    def get(self, ref: ObjectRef) -> str | None:
        record = self._store.find(ref)
        return None if record is None else record.sent

    def __setitem__(self, ref: ObjectRef, checksum: str) -> None:
        self._store.record(ref).sent = checksum

    def pop(self, ref: ObjectRef, default: None = None) -> str | None:
        record = self._store.find(ref)
        if record is None:
            return default
        sent, record.sent = record.sent, None
        self._store.tidy(ref, record)
        return sent if sent is not None else default
