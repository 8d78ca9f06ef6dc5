"""The agent's persisted checksums: the format, and the checks before any entry is believed.

Hashing every object dominates an agent's restart (about 120 us per 5 KB pod in pure Python:
12 s for 100k pods before the first digest can be compared). The agent therefore saves the
checksum of each object version it hashed, and on start takes them back, but never blindly:

- a header line names the format version, the checksum scheme, and a fingerprint of everything
  that changes the shaped object (the shaping tables and the synced kinds with their strategy);
  a file written under other rules is discarded whole;
- an integrity digest (SHA-256) covers the body: a torn or edited file is discarded whole;
- an entry holds the object's ref, its "uid/resourceVersion" and its checksum, and the session
  uses it only for an object with that very uid and resourceVersion;
- the driver re-hashes a random sample of the entries it uses before believing the rest
  (:func:`sample`); one mismatch discards the whole file.

Pure: the driver reads and writes the file (atomically).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import orjson

from clustersync.model import Kind, ObjectRef
from clustersync.protocol import sealed
from clustersync.protocol.checksum import CHECKSUM_ANNOTATION
from clustersync.protocol.sealed import RejectedFileError, seal, unseal
from clustersync.protocol.shaping import (
    LAST_APPLIED,
    MASK,
    NULLED_FIELDS,
    TYPED_STORAGE_RESOURCES,
)

FORMAT = 1
# What a checksum string means: kubescape's canonical hash of the shaped object, or the storage
# server's precomputed annotation, each kept with any tag the session gives it.
SCHEME = "clustersync-checksum-v1"
SAMPLE_SIZE = 16  # entries re-hashed before a file's entries are used

Version = tuple[str, str]  # ("uid/resourceVersion", checksum)


@dataclass(frozen=True, slots=True)
class Entry:
    ref: ObjectRef
    version: str  # "uid/resourceVersion"
    checksum: str


def fingerprint(kinds: Mapping[Kind, str]) -> str:
    """A digest of everything that decides an object's checksum: the shaping rules (nulled
    fields, masked values, stripped annotations, typed storage kinds) and the synced kinds with
    their strategy. An agent upgraded to other rules, or configured otherwise, discards the file."""
    rules = {
        "nulled": {kind: [list(p) for p in paths] for kind, paths in NULLED_FIELDS.items()},
        "mask": MASK,
        "stripped": sorted((LAST_APPLIED, CHECKSUM_ANNOTATION)),
        "typed": sorted(TYPED_STORAGE_RESOURCES),
        "kinds": sorted(f"{k.group}/{k.version}/{k.resource}={how}" for k, how in kinds.items()),
    }
    return hashlib.sha256(orjson.dumps(rules, option=orjson.OPT_SORT_KEYS)).hexdigest()


def encode(entries: Iterable[Entry], fingerprint_: str) -> bytes:
    """The file: a JSON header line, then the JSON body it vouches for."""
    by_kind: dict[Kind, list[list[str]]] = {}
    for entry in entries:
        ref = entry.ref
        by_kind.setdefault(ref.kind, []).append(
            [ref.namespace, ref.name, entry.version, entry.checksum]
        )
    body = orjson.dumps(
        [
            {"kind": [kind.group, kind.version, kind.resource], "entries": rows}
            for kind, rows in by_kind.items()
        ]
    )
    entries_ = sum(len(rows) for rows in by_kind.values())
    return seal(body, format_=FORMAT, scheme=SCHEME, fingerprint=fingerprint_, entries=entries_)


def decode(data: bytes, fingerprint_: str) -> list[Entry]:
    """The entries of a file written under the same rules; raises :class:`RejectedFileError`."""
    header, body = unseal(
        data,
        format_=FORMAT,
        scheme=SCHEME,
        fingerprint=fingerprint_,
        refused="written under other shaping rules or kinds",
    )
    try:
        return _entries(orjson.loads(body), header.get("entries"))
    except (orjson.JSONDecodeError, TypeError, ValueError, KeyError) as exc:
        # The digest matched: only a writer bug (or a forged digest) gets here.
        raise RejectedFileError("malformed", f"body: {exc}") from None


def _entries(doc: object, expected: object) -> list[Entry]:
    if not isinstance(doc, list):
        raise ValueError("the body is not a list")
    entries: list[Entry] = []
    for group in doc:
        group_, version, resource = (str(part) for part in group["kind"])
        kind = Kind(group_, version, resource)
        for namespace, name, object_version, checksum in group["entries"]:
            values = (namespace, name, object_version, checksum)
            if not all(isinstance(value, str) for value in values):
                raise ValueError(f"an entry that is not four strings: {values!r}")
            entries.append(Entry(ObjectRef(kind, namespace, name), object_version, checksum))
    if expected != len(entries):
        raise ValueError(f"{len(entries)} entries, the header says {expected!r}")
    return entries


def sample(entries: Sequence[Entry], rng: random.Random | None = None) -> list[Entry]:
    """The entries to re-hash before believing the others (all of them, if few)."""
    return sealed.sample(entries, SAMPLE_SIZE, rng)
