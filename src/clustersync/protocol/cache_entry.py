"""One object in the agent's informer cache: what the agent sends of it, prepared once.

An initial sync used to handle every object twice: the list parsed it and packed its JSON into
the cache, then the reconciliation unpacked and parsed it again, shaped it, hashed it and dumped
the shaped copy into a frame. The object is parsed once, when it arrives, so that is where the
per-object work is done now. An entry holds the object *shaped* (the JSON the backend receives,
reference 3.6) with what shaping took away beside it, so the live object can still be read back
exactly, and a header of facts the reconciliation decides on without reading the object at all:
its resourceVersion, uid, fast digest, and whether a built-in controller owns it.

Layout: ``>H`` resourceVersion length and the resourceVersion (first, for the informer's diff),
a flags byte, ``B`` uid length and the uid, the 32-byte SHA-256 of the fast digest if flagged,
then the packed document (protocol.compact). The document is the shaped JSON (orjson's
sorted-key encoding: the fast digest hashes that encoding, so one dump serves both), followed by a
newline and a JSON object of the removed values when shaping removed any (orjson never writes a
raw newline). An object whose shaping cannot be undone exactly (null or non-string annotations,
nulled fields, an object kubescape refuses to shape, odd uids) is held as its live JSON instead,
flagged so; the agent then reads, shapes and hashes it when it needs to, as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from clustersync.model import Kind
from clustersync.protocol.compact import Packer
from clustersync.protocol.digest import FAST_TAG, fast_digest, sorted_json_and_digest
from clustersync.protocol.shaping import (
    Loan,
    ShapingError,
    has_controller_parent,
    lend_shaped,
    restore,
    shape,
)

RV_PREFIX = 2  # bytes giving the resourceVersion's length
RV_LIMIT = 256**RV_PREFIX - 1
UID_LIMIT = 255

SHAPED = 0x01  # the document is the shaped JSON (+ what shaping removed)
CONTROLLED = 0x02  # a built-in controller owns the object (shaping.has_controller_parent)
DIGESTED = 0x04  # the header holds the fast digest of the shaped object
_KNOWN_FLAGS = SHAPED | CONTROLLED | DIGESTED
_DIGEST_BYTES = 32
_SEPARATOR = b"\n"


class EntryError(ValueError):
    """An entry this module did not write (or a damaged one)."""


class UnencodableError(ValueError):
    """The object cannot be held (nested deeper than the JSON encoder allows, an oversized
    resourceVersion)."""


@dataclass(slots=True)
class Facts:
    """What the header of an entry says; ``digest`` and ``shaped`` go together (see
    :func:`encode`), and ``controlled`` is meaningful only when ``shaped``. Not frozen: one is
    read for every object a first sync reconciles, and a frozen one cost half again as much
    to make (its fields set through ``object.__setattr__``)."""

    resource_version: str
    uid: str
    digest: str | None  # the fast digest of the shaped object, ``cs1:...``
    controlled: bool
    shaped: bool
    # Where the packed document starts in the entry these facts were read from (-1: unknown),
    # so that sending the entry's shaped JSON does not read its header a second time.
    document_at: int = field(default=-1, compare=False, repr=False)

    @property
    def version(self) -> str:
        """The "uid/resourceVersion" a checksum belongs to (as agent_types.object_version)."""
        return f"{self.uid}/{self.resource_version}"


def encode(kind: Kind | None, obj: dict[str, Any], packer: Packer) -> bytes:
    """The entry for ``obj`` (managedFields are never kept); with ``kind`` None it holds the
    live JSON only. Raises :class:`UnencodableError`.

    ``obj`` is lent to shaping while this runs (its env values masked in place, then put back,
    see shaping.lend_shaped): it must not be read elsewhere meanwhile, which in one thread
    without awaits it cannot be."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
    rv_value = meta.get("resourceVersion")
    rv = str(rv_value or "").encode()
    if len(rv) > RV_LIMIT:
        raise UnencodableError(f"a resourceVersion of {len(rv)} bytes")
    uid_value = meta.get("uid", "")
    uid = uid_value.encode() if isinstance(uid_value, str) else b""
    loan = None
    if (
        kind is not None
        and isinstance(uid_value, str)
        and len(uid) <= UID_LIMIT
        and isinstance(rv_value, str)  # as object_version() formats it
    ):
        loan = _lent(kind, obj)  # shaping drops managedFields from its copy
    try:
        if loan is None:
            return _header(rv, 0, b"") + packer.pack(orjson.dumps(_without_managed_fields(obj)))
        try:
            # Sorted keys: the held JSON is also the body of the fast digest (digest.py).
            document, digest = sorted_json_and_digest(loan.shaped)
        finally:
            loan.give_back()
    except orjson.JSONEncodeError as exc:
        # orjson refuses nesting of 255 levels and more; nothing downstream could send it.
        raise UnencodableError(str(exc)) from None
    flags = SHAPED | DIGESTED | (CONTROLLED if has_controller_parent(obj) else 0)
    if loan.removed:
        document = b"".join((document, _SEPARATOR, orjson.dumps(loan.removed)))
    return b"".join((_header(rv, flags, uid), digest, packer.pack(document)))


def _without_managed_fields(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        return {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    return obj


def _lent(kind: Kind, obj: dict[str, Any]) -> Loan | None:
    try:
        return lend_shaped(kind, obj)
    except ShapingError:
        return None  # held live; the reconciliation reports it as before


def _header(rv: bytes, flags: int, uid: bytes) -> bytes:
    return len(rv).to_bytes(RV_PREFIX, "big") + rv + bytes((flags, len(uid))) + uid


def resource_version(entry: bytes) -> str:
    return entry[RV_PREFIX : RV_PREFIX + int.from_bytes(entry[:RV_PREFIX], "big")].decode()


def facts(entry: bytes) -> Facts:
    rv_end, at, flags, uid = _read_header(entry)
    digest = None
    if flags & DIGESTED:
        digest = FAST_TAG + entry[at : at + _DIGEST_BYTES].hex()
        at += _DIGEST_BYTES
    return Facts(
        resource_version=entry[RV_PREFIX:rv_end].decode(),
        uid=uid,
        digest=digest,
        controlled=bool(flags & CONTROLLED),
        shaped=bool(flags & SHAPED),
        document_at=at,
    )


def describes(kind: Kind, entry: bytes, obj: dict[str, Any]) -> bool:
    """Whether the header of ``entry`` tells the truth about ``obj``, the object read from it:
    its resourceVersion, and if it has them, its uid and digest. How a saved cache is checked
    before it is believed (a sample of it)."""
    found = facts(entry)
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    if str(meta.get("resourceVersion") or "") != found.resource_version:
        return False
    if found.shaped and meta.get("uid", "") != found.uid:
        return False
    if found.digest is None:
        return True
    try:
        return fast_digest(shape(kind, obj)) == found.digest
    except ShapingError:
        return False


def _read_header(entry: bytes) -> tuple[int, int, int, str]:
    """(end of the resourceVersion, offset of what follows the uid, flags, uid)."""
    rv_end = RV_PREFIX + int.from_bytes(entry[:RV_PREFIX], "big")
    if len(entry) < rv_end + 2:
        raise EntryError("truncated entry header")
    flags, uid_len = entry[rv_end], entry[rv_end + 1]
    if flags & ~_KNOWN_FLAGS:
        raise EntryError(f"unknown entry flags {flags:#x}")
    at = rv_end + 2 + uid_len
    return rv_end, at, flags, entry[rv_end + 2 : at].decode()


def _document(entry: bytes, packer: Packer) -> tuple[int, bytes]:
    _, at, flags, _ = _read_header(entry)
    if flags & DIGESTED:
        at += _DIGEST_BYTES
    return flags, packer.unpack(entry[at:])


def live(kind: Kind | None, entry: bytes, packer: Packer) -> dict[str, Any]:
    """The object the entry was made of (without managedFields). Raises :class:`EntryError`,
    protocol.compact.PackError or orjson.JSONDecodeError (all ValueErrors)."""
    flags, document = _document(entry, packer)
    if not flags & SHAPED:
        return _object(orjson.loads(document))
    body, _, removed = document.partition(_SEPARATOR)
    obj = _object(orjson.loads(body))
    if removed:
        if kind is None:
            raise EntryError("a shaped entry read without its kind")
        restore(kind, obj, orjson.loads(removed))
    return obj


def shaped_json(entry: bytes, packer: Packer, known: Facts | None = None) -> bytes | None:
    """The shaped JSON the entry holds (what the backend receives), or None for a live one.
    ``known``, the :func:`facts` of this very entry, spares reading its header again."""
    if known is not None and known.document_at >= 0:
        if not known.shaped:
            return None
        document = packer.unpack(entry[known.document_at :])
    else:
        flags, document = _document(entry, packer)
        if not flags & SHAPED:
            return None
    return document.partition(_SEPARATOR)[0]


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise EntryError("the entry holds no JSON object")
    return value
