"""kubescape's canonical object checksum (reference section 3.7).

A Merkle-style SHA-256 over the decoded JSON: object keys and array elements are hashed
separately and their hex digests sorted, so key order and array order do not matter; numbers are
hashed as IEEE-754 doubles, as Go's generic decoder sees them; ``.status.conditions`` is skipped
so that heartbeat-only changes do not count as changes.
"""

from __future__ import annotations

import struct
from hashlib import sha256
from typing import Any

import orjson

CHECKSUM_ANNOTATION = "kubescape.io/sync-checksum"
_EXCLUDED_PATHS = frozenset({".status.conditions"})

_NULL = sha256(b"null").hexdigest()
_TRUE = sha256(b"true").hexdigest()
_FALSE = sha256(b"false").hexdigest()


def _digest(value: Any, path: str) -> str:
    if isinstance(value, str):
        return sha256(value.encode()).hexdigest()
    if isinstance(value, dict):
        entries = []
        for key, item in value.items():
            child = f"{path}.{key}"
            if child in _EXCLUDED_PATHS:
                continue
            entries.append(sha256(key.encode()).hexdigest() + ":" + _digest(item, child))
        entries.sort()
        return sha256("|".join(entries).encode()).hexdigest()
    if isinstance(value, list):
        # Arrays add no path level: an array at .status.conditions is skipped by its parent.
        items = sorted(_digest(item, path) for item in value)
        return sha256("|".join(items).encode()).hexdigest()
    if value is None:
        return _NULL
    if value is True:
        return _TRUE
    if value is False:
        return _FALSE
    if isinstance(value, int | float):
        return sha256(struct.pack(">d", float(value))).hexdigest()
    raise TypeError(f"cannot hash {type(value).__name__}")


def canonical_checksum(obj: Any) -> str:
    """The checksum of a decoded JSON value, as kubescape computes it."""
    return _digest(obj, "")


def checksum_of_json(data: bytes | str) -> str:
    return canonical_checksum(orjson.loads(data))


def object_checksum(obj: dict[str, Any]) -> str:
    """Checksum of a Kubernetes object, using its precomputed sync-checksum annotation if any.

    kubescape's storage server precomputes the annotation for its large CRDs; honouring it is both
    faster and what kubescape peers expect.
    """
    annotations = obj.get("metadata", {}).get("annotations") or {}
    precomputed = annotations.get(CHECKSUM_ANNOTATION)
    if isinstance(precomputed, str) and precomputed:
        return precomputed
    return canonical_checksum(obj)
