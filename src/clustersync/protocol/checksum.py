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

from clustersync.protocol.gojson import GoJSONError, loads

__all__ = ["GoJSONError", "canonical_checksum", "checksum_of_json", "object_checksum"]

CHECKSUM_ANNOTATION = "kubescape.io/sync-checksum"

_NULL = sha256(b"null").hexdigest()
_TRUE = sha256(b"true").hexdigest()
_FALSE = sha256(b"false").hexdigest()


# Where the walk is, as far as the one excluded path cares: building path strings for every key
# cost more than the hashing. Arrays add no level, so they keep their parent's position.
_ROOT, _ROOT_STATUS, _ELSEWHERE = 0, 1, 2

# Object keys come from a small vocabulary (metadata, name, image, ...): their digests are cached.
_KEY_DIGESTS: dict[str, str] = {}
_KEY_CACHE_LIMIT = 50_000


def _key_digest(key: str) -> str:
    digest = _KEY_DIGESTS.get(key)
    if digest is None:
        if len(_KEY_DIGESTS) >= _KEY_CACHE_LIMIT:
            _KEY_DIGESTS.clear()
        digest = _KEY_DIGESTS[key] = sha256(key.encode()).hexdigest()
    return digest


def _digest(value: Any, where: int) -> str:
    kind = type(value)
    if kind is str:
        return sha256(value.encode()).hexdigest()
    if kind is dict:
        entries = []
        for key, item in value.items():
            if where == _ROOT:
                if key == "status.conditions":
                    continue  # kubescape joins paths with dots, so this key matches too
                child = _ROOT_STATUS if key == "status" else _ELSEWHERE
            elif where == _ROOT_STATUS and key == "conditions":
                continue  # .status.conditions
            else:
                child = _ELSEWHERE
            entries.append(_key_digest(key) + ":" + _digest(item, child))
        entries.sort()
        return sha256("|".join(entries).encode()).hexdigest()
    if kind is list:
        items = sorted([_digest(item, where) for item in value])
        return sha256("|".join(items).encode()).hexdigest()
    if value is None:
        return _NULL
    if value is True:
        return _TRUE
    if value is False:
        return _FALSE
    if isinstance(value, int | float):
        return sha256(struct.pack(">d", float(value))).hexdigest()
    if isinstance(value, str | dict | list):  # subclasses
        return _digest(_plain(value), where)
    raise TypeError(f"cannot hash {type(value).__name__}")


def _plain(value: Any) -> Any:
    if isinstance(value, str):
        return str(value)
    return dict(value) if isinstance(value, dict) else list(value)


def canonical_checksum(obj: Any) -> str:
    """The checksum of a decoded JSON value, as kubescape computes it."""
    return _digest(obj, _ROOT)


def checksum_of_json(data: bytes | str) -> str:
    """The checksum of JSON text as Go decodes it; raises :class:`GoJSONError` where Go fails."""
    return canonical_checksum(loads(data))


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
