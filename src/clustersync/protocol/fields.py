"""Reading decoded JSON the way Go's decoder does, shared by the websocket and Pulsar codecs.

Keys match case-insensitively, ``null`` reads as the zero value, and a value of the wrong JSON
type is a :class:`DecodeError` (never a ``TypeError`` further down).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from clustersync.protocol.messages import MAX_DEPTH


class DecodeError(ValueError):
    """A frame that is not a valid message; ``reason`` is a short metric label."""

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


class TooDeepError(DecodeError):
    def __init__(self, depth: int) -> None:
        super().__init__(f"message depth {depth} exceeds the limit of {MAX_DEPTH}", "too_deep")


def folded(doc: Any, what: str) -> dict[str, Any]:
    """The object's fields with lower-cased keys."""
    if not isinstance(doc, dict):
        raise DecodeError(f"{what} is not a JSON object")
    return {str(key).lower(): value for key, value in doc.items()}


def read_int(fields: Mapping[str, Any], key: str, default: int | None = 0) -> int:
    """An integer field; ``default=None`` makes it required."""
    value = fields.get(key.lower())
    if value is None and default is not None:
        return default
    if isinstance(value, float) and value.is_integer():
        return int(value)
    # bool is an int in Python but not in Go's decoder.
    if isinstance(value, bool) or not isinstance(value, int):
        raise DecodeError(f"{key} must be an integer, got {value!r}")
    return value


def read_str(fields: Mapping[str, Any], key: str) -> str:
    value = fields.get(key.lower())
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DecodeError(f"{key} must be a string, got {type(value).__name__}")
    return value


def read_bool(fields: Mapping[str, Any], key: str) -> bool:
    value = fields.get(key.lower())
    if value is None:
        return False
    if not isinstance(value, bool):
        raise DecodeError(f"{key} must be a boolean, got {value!r}")
    return value


_GO_INT = re.compile(r"[+-]?[0-9]+")
_INT64 = range(-(2**63), 2**63)


def resource_version_number(text: str) -> int:
    """A Kubernetes resourceVersion as kubescape's messages carry it: the decimal (int64)
    integer it spells, or 0 when it is not one."""
    if not _GO_INT.fullmatch(text):
        return 0
    value = int(text)
    return value if value in _INT64 else 0


def json_text(data: bytes, key: str) -> bytes:
    """``data`` if it holds JSON text."""
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"{key} is not valid JSON text: {exc}") from None
    return data
