"""The rows of a write batch in PostgreSQL's binary COPY format, for the staging table.

asyncpg's ``copy_records_to_table`` encodes records into a buffer that, past 64 KiB, grows by
exactly what each value needs: every object of 5 KB reallocated, and mostly copied, a buffer of
up to 512 KiB, which was a tenth of the ingester's CPU on an initial sync. Here each row is a
few small byte strings around the object's own bytes, joined once per chunk. Text goes as its
UTF-8 bytes, which PostgreSQL checks on receipt (bad UTF-8 fails the COPY, as a bad object).
Layout (PostgreSQL's "COPY ... FORMAT binary"): a signature, flags and header extension length,
then per row the field count and each field as a 32-bit length (-1: NULL) and its bytes, then -1.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterator, Sequence

from clustersync.adapters.store.base import Delete, UnparsedObject, Write
from clustersync.model import Kind

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
TRAILER = struct.pack("!h", -1)
CHUNK_BYTES = 256 * 1024  # what one CopyData message carries, about

# The staging table's columns, in this order: the key (account, cluster, api_group,
# api_version, resource, namespace, name), uid, resource_version, checksum, object (text), seq
# (bigint), deleted (boolean), earlier (bigint[]).
COLUMNS = 14
_INT8_OID = 20  # an array's element type is named by its type's OID

_length = struct.Struct("!i").pack
_NULL = _length(-1)
_FALSE = _length(1) + b"\x00"
_TRUE = _length(1) + b"\x01"
_bigint = struct.Struct("!iq").pack  # length 8, then the value
# Length, dimensions, has-nulls flag, element type, size and lower bound of a 1-D array.
_array_head = struct.Struct("!iiiiii").pack


def _text(value: str) -> bytes:
    data = value.encode()
    return _length(len(data)) + data


@functools.lru_cache(maxsize=256)
def _row_head(account: str, cluster: str, kind: Kind) -> bytes:
    """Field count and the first five columns, the same for every object of a kind."""
    fields = (account, cluster, kind.group, kind.version, kind.resource)
    return struct.pack("!h", COLUMNS) + b"".join(_text(field) for field in fields)


def _bigints(values: Sequence[int] | None) -> bytes:
    if values is None:
        return _NULL
    body = b"".join(_bigint(8, value) for value in values)
    return _array_head(20 + len(body), 1, 0, _INT8_OID, len(values), 1) + body


def row_parts(write: Write, earlier: Sequence[int] | None) -> list[bytes]:
    """One staging row; an UnparsedObject's uid and resource_version are NULL (the upsert reads
    them from the object)."""
    key = write.key
    ref = key.ref
    parts = [_row_head(key.account, key.cluster, ref.kind), _text(ref.namespace), _text(ref.name)]
    if isinstance(write, Delete):
        parts += (_text(""), _text(""), _text(""), _NULL, _bigint(8, write.seq), _TRUE)
    else:
        if isinstance(write, UnparsedObject):
            parts += (_NULL, _NULL)
        else:
            parts += (_text(write.uid), _text(write.resource_version))
        body = write.object
        parts += (_text(write.checksum), _length(len(body)), body, _bigint(8, write.seq), _FALSE)
    parts.append(_bigints(earlier))
    return parts


def copy_data(rows: Iterator[list[bytes]]) -> Iterator[bytes]:
    """The COPY stream of ``rows`` (from :func:`row_parts`), in chunks of about CHUNK_BYTES."""
    pending = [HEADER]
    size = len(HEADER)
    for parts in rows:
        pending += parts
        size += sum(map(len, parts))
        if size >= CHUNK_BYTES:
            yield b"".join(pending)
            pending, size = [], 0
    pending.append(TRAILER)
    yield b"".join(pending)
