"""clustersync's fast object digest, used only between peers that agreed on it.

kubescape's canonical hash (:mod:`checksum`) walks every value in Python and hashes each one
separately: about 4,700 pods a second, most of an agent's CPU on an initial sync and of the
ingester's on a stream of patches. This digest is one SHA-256 over orjson's sorted-key encoding,
done in C, some fifty times faster. Our agent and server agree on it through the websocket
subprotocol ``clustersync.v2`` (:mod:`messages`); kubescape peers never see it.

A fast digest is written ``cs1:<64 hex>``. kubescape's checksums are 64 lowercase hex digits (or
a storage annotation's value, which has no reason to hold the tag), so the string itself says
which algorithm made it, and whoever verifies a checksum computes "the same kind as the one
received" (:func:`digest_like`) without knowing what was negotiated, nor by whom.

What it covers: the decoded value with ``.status.conditions`` left out, as kubescape's hash
does, so that heartbeat-only changes still do not count. Unlike kubescape's hash it tells ``1``
from ``1.0`` and depends on the values' types; that is sound because both sides hash the same
decoded orjson text (agents send orjson's encoding, and orjson's and :mod:`gojson`'s decoders
agree on every text orjson writes).

Values orjson cannot encode (integers beyond 64 bits, lone surrogates, keys that are not
strings): the digest falls back to kubescape's hash, which is untagged, so the verifier falls
back too. An agent cannot send such an object anyway (every message is orjson's encoding). NaN
and infinities, which no JSON text decodes to, would be encoded (and hashed) as ``null``.
"""

from __future__ import annotations

from hashlib import sha256
from typing import Any

import orjson

from clustersync.protocol.checksum import canonical_checksum

FAST_TAG = "cs1:"


def _without_conditions(value: Any) -> Any:
    """``value`` without ``.status.conditions``, copying only the two levels on that path."""
    if isinstance(value, dict):
        status = value.get("status")
        if isinstance(status, dict) and "conditions" in status:
            trimmed = {key: item for key, item in status.items() if key != "conditions"}
            return {**value, "status": trimmed}
    return value


def fast_digest(value: Any) -> str:
    """The fast digest of a decoded JSON value (kubescape's hash where orjson cannot encode it)."""
    raw = fast_digest_bytes(value)
    if raw is None:
        return canonical_checksum(value)
    return FAST_TAG + raw.hex()


def fast_digest_bytes(value: Any) -> bytes | None:
    """The 32 bytes of SHA-256 a fast digest writes in hex after its tag; None where orjson
    cannot encode ``value`` (then the digest is kubescape's hash)."""
    try:
        body = orjson.dumps(_without_conditions(value), option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return None
    return sha256(body).digest()


def sorted_json_and_digest(value: dict[str, Any]) -> tuple[bytes, bytes]:
    """orjson's sorted-key encoding of ``value`` and the 32 bytes of its fast digest, from one
    encoding of the whole object where possible. Raises orjson.JSONEncodeError.

    The digest's body is the same encoding without ``.status.conditions``. When ``status`` is
    the last key in sorted order (every kind with conditions in practice), the encoding ends
    with ``"status":<status>}``, and the body is the encoding up to ``<status>``, then the
    status without its conditions, then ``}``: hashed in pieces, that is the digest of the
    body without encoding the whole object a second time. Otherwise the body is encoded
    apart, as :func:`fast_digest_bytes` does.
    """
    document = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    status = value.get("status")
    if not isinstance(status, dict) or "conditions" not in status:
        return document, sha256(document).digest()  # nothing left out: the body is the document
    if max(value) != "status":  # keys are strings, or the encoding above refused them
        body = orjson.dumps(_without_conditions(value), option=orjson.OPT_SORT_KEYS)
        return document, sha256(body).digest()
    whole = orjson.dumps(status, option=orjson.OPT_SORT_KEYS)
    trimmed = {key: item for key, item in status.items() if key != "conditions"}
    hasher = sha256(memoryview(document)[: len(document) - len(whole) - 1])
    hasher.update(orjson.dumps(trimmed, option=orjson.OPT_SORT_KEYS))
    hasher.update(b"}")
    return document, hasher.digest()


def is_fast(checksum: str) -> bool:
    """Whether ``checksum`` was made by :func:`fast_digest` (else it is kubescape's)."""
    return checksum.startswith(FAST_TAG)


def digest_like(received: str, value: Any) -> str:
    """The checksum of ``value`` of the same kind as ``received``: what a verifier compares it
    with, whichever algorithm the sender's link negotiated."""
    return fast_digest(value) if is_fast(received) else canonical_checksum(value)
