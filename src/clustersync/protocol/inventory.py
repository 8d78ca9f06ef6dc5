"""Bucketed inventory digests: how a reconnect learns it is in sync without listing everything.

Objects of a kind fall into :data:`BUCKETS` buckets by name. A bucket's digest hashes the sorted
``namespace/name checksum`` lines of its objects, so two sides holding the same objects with the
same checksums agree on every digest. An agent's inventory request carries its digests; the
backend lists its objects only for the buckets whose digests differ, and names those buckets, so
an unchanged kind costs one request of a few kilobytes and an empty answer.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from hashlib import sha256

from clustersync.model import ObjectRef

BUCKETS = 256


def bucket_of(ref: ObjectRef) -> int:
    return zlib.crc32(f"{ref.namespace}/{ref.name}".encode()) % BUCKETS


def bucket_digests(entries: Iterable[tuple[ObjectRef, str]]) -> tuple[str, ...]:
    """One digest per bucket; an empty bucket's digest is the empty string (cheap on the wire)."""
    lines: list[list[str]] = [[] for _ in range(BUCKETS)]
    for ref, checksum in entries:
        lines[bucket_of(ref)].append(f"{ref.namespace}/{ref.name} {checksum}\n")
    return tuple(
        sha256("".join(sorted(bucket)).encode()).hexdigest()[:32] if bucket else ""
        for bucket in lines
    )


def differing_buckets(ours: tuple[str, ...], theirs: tuple[str, ...]) -> tuple[int, ...]:
    """Buckets whose digests differ (all of them if the other side used another bucket count)."""
    if len(ours) != len(theirs):
        return tuple(range(BUCKETS))
    return tuple(i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b)
