"""An informer's cache saved as of one resourceVersion: the format and its checks.

A restart that relists 100k pods spends seconds parsing objects it already had. The agent
therefore saves each informer's cache (its packed entries, as they are, with the kind's packing
dictionary) together with the resourceVersion the cache is exact at, and on start watches from
that resourceVersion instead of listing: the API server replays what changed meanwhile, or
answers 410 and the informer lists as it always did. Nothing in the file is believed blindly:

- a header line names the format version and a fingerprint of the kind and the cluster
  (account, cluster name, API server URL): a file of another kind or cluster is discarded;
- an integrity digest (SHA-256) covers the body: a torn or edited file is discarded whole;
- the informer unpacks a random sample of entries before believing the rest (:func:`sample`),
  and checks each names its key and resourceVersion.

Body: the dictionary, then per entry a ``>HHI`` length prefix (namespace, name, entry) and the
three byte strings. Pure: the driver reads and writes the file (atomically).
"""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from clustersync.model import Kind
from clustersync.protocol import sealed
from clustersync.protocol.sealed import RejectedFileError, seal, unseal

# 2: entries with a header of facts (protocol.cache_entry); 3: packed in 8 KiB windows;
# 4: entries may be zstd frames (protocol.compact)
FORMAT = 4
SCHEME = "clustersync-informer-cache-v1"
SAMPLE_SIZE = 16  # entries unpacked and checked before the others are believed

_PREFIX = struct.Struct(">HHI")  # namespace, name and entry lengths

Key = tuple[str, str]  # namespace, name


@dataclass(frozen=True, slots=True)
class CacheSnapshot:
    """An informer's cache, exact as of ``resource_version``; entries as the cache holds them."""

    resource_version: str
    dictionary: bytes | None
    entries: Sequence[tuple[Key, bytes]]


def fingerprint(kind: Kind, account: str, cluster: str, api_server: str) -> str:
    """What a snapshot is only valid for: one kind of one cluster, reached at one address."""
    identity = {
        "kind": [kind.group, kind.version, kind.resource],
        "account": account,
        "cluster": cluster,
        "apiServer": api_server,
    }
    return hashlib.sha256(orjson.dumps(identity, option=orjson.OPT_SORT_KEYS)).hexdigest()


def encode(snapshot: CacheSnapshot, fingerprint_: str) -> bytes:
    """The file: a JSON header line, then the body it vouches for."""
    dictionary = snapshot.dictionary or b""
    pack = _PREFIX.pack
    parts = [dictionary]
    for (namespace, name), entry in snapshot.entries:
        ns, nm = namespace.encode(), name.encode()
        parts.append(pack(len(ns), len(nm), len(entry)))
        parts += (ns, nm, entry)
    body = b"".join(parts)
    del parts
    return seal(
        body,
        format_=FORMAT,
        scheme=SCHEME,
        fingerprint=fingerprint_,
        resourceVersion=snapshot.resource_version,
        dictionary=None if snapshot.dictionary is None else len(dictionary),
        entries=len(snapshot.entries),
    )


def decode(data: bytes, fingerprint_: str) -> CacheSnapshot:
    """The snapshot of a file written for this kind and cluster; raises
    :class:`RejectedFileError`."""
    header, body = unseal(
        data,
        format_=FORMAT,
        scheme=SCHEME,
        fingerprint=fingerprint_,
        refused="written for another kind or cluster",
    )
    try:
        return _snapshot(header, body)
    except (TypeError, ValueError, struct.error, UnicodeDecodeError) as exc:
        # The digest matched: only a writer bug (or a forged digest) gets here.
        raise RejectedFileError("malformed", f"body: {exc}") from None


def _snapshot(header: dict[str, object], body: bytes) -> CacheSnapshot:
    rv, size, expected = header.get("resourceVersion"), header.get("dictionary"), header["entries"]
    if not isinstance(rv, str) or not rv:
        raise ValueError(f"resourceVersion {rv!r}")
    if size is not None and (not isinstance(size, int) or not 0 < size <= len(body)):
        raise ValueError(f"dictionary of {size!r} bytes")
    dictionary = None if size is None else body[:size]
    at = size or 0
    view = memoryview(body)
    unpack, prefix = _PREFIX.unpack_from, _PREFIX.size
    entries: list[tuple[Key, bytes]] = []
    while at < len(body):
        ns_len, name_len, entry_len = unpack(body, at)
        at += prefix
        name_at, entry_at = at + ns_len, at + ns_len + name_len
        end = entry_at + entry_len
        if end > len(body):
            raise ValueError(f"an entry runs past the end at byte {at}")
        key = (str(view[at:name_at], "utf-8"), str(view[name_at:entry_at], "utf-8"))
        entries.append((key, body[entry_at:end]))
        at = end
    if expected != len(entries):
        raise ValueError(f"{len(entries)} entries, the header says {expected!r}")
    return CacheSnapshot(rv, dictionary, entries)


def sample(
    entries: Sequence[tuple[Key, bytes]], rng: random.Random | None = None
) -> list[tuple[Key, bytes]]:
    """The entries to check before believing the others (all of them, if few)."""
    return sealed.sample(entries, SAMPLE_SIZE, rng)
