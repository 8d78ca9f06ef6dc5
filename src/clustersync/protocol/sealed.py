"""Files the agent keeps in its ``dataDir``, sealed so that nothing in them is believed blindly.

A sealed file is one JSON header line, then the body. The header names the format version and
scheme of the body, a fingerprint of everything the body is only valid for (the caller decides
what: shaping rules, a kind and cluster...) and the SHA-256 of the body; opening the file checks
all four before the body is read, so a file of another version, of other rules or clusters, or a
torn or edited one is refused whole. The callers then check a random sample of entries against
what they claim (:func:`sample`) before believing the rest.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Any, TypeVar

import orjson

T = TypeVar("T")


class RejectedFileError(ValueError):
    """The file cannot be used; ``reason`` is a metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def seal(body: bytes, *, format_: int, scheme: str, fingerprint: str, **facts: Any) -> bytes:
    """The file: a header line vouching for ``body`` (with ``facts`` of the caller's), then it."""
    header = {
        **facts,
        "format": format_,
        "scheme": scheme,
        "fingerprint": fingerprint,
        "sha256": hashlib.sha256(body).hexdigest(),
    }
    return orjson.dumps(header) + b"\n" + body


def unseal(
    data: bytes, *, format_: int, scheme: str, fingerprint: str, refused: str
) -> tuple[dict[str, Any], bytes]:
    """The header and body of a file sealed with the same format, scheme and fingerprint;
    raises :class:`RejectedFileError`. ``refused`` says why a fingerprint differs."""
    head, newline, body = data.partition(b"\n")
    if not newline:
        raise RejectedFileError("truncated", f"no header line in {len(data)} bytes")
    try:
        header = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise RejectedFileError("malformed", f"header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise RejectedFileError("malformed", "header is not a JSON object")
    if header.get("format") != format_:
        raise RejectedFileError("format", f"format {header.get('format')!r}, expected {format_}")
    if header.get("scheme") != scheme:
        raise RejectedFileError("scheme", f"scheme {header.get('scheme')!r}, not {scheme}")
    if header.get("fingerprint") != fingerprint:
        raise RejectedFileError("fingerprint", refused)
    if hashlib.sha256(body).hexdigest() != header.get("sha256"):
        raise RejectedFileError("digest", f"the body ({len(body)} bytes) fails its digest")
    return header, body


def sample(entries: Sequence[T], size: int, rng: random.Random | None = None) -> list[T]:
    """``size`` entries picked at random to check before believing the others (all, if few)."""
    if len(entries) <= size:
        return list(entries)
    return (rng or random.SystemRandom()).sample(list(entries), size)
