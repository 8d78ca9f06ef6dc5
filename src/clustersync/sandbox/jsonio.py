"""JSON for the sandbox: orjson for speed, the standard library where orjson gives up.

orjson refuses documents nested 255 levels or deeper; a real API server stores and serves
them (the fault matrix creates one 300 deep), so the sandbox falls back to ``json`` there.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_TOO_DEEP = "Recursion limit reached"


def dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError as exc:
        if _TOO_DEEP not in str(exc):
            raise
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def dumps_to_keep(value: Any) -> bytes:
    """``dumps`` for bytes held long: orjson's result can occupy several times its length
    (32 KiB for a 5 KB pod, measured with orjson 3.13), so it is copied to its exact size."""
    return bytes(memoryview(dumps(value)))


def loads(raw: bytes | str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if _TOO_DEEP not in str(exc):
            raise
        return json.loads(raw)
