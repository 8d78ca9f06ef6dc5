"""Decoding JSON text into the values Go's ``encoding/json`` gives an ``interface{}``.

Checksums and merge patches exchanged with kubescape peers are computed on what Go decodes, so
the few places where Python parsers see something else matter: ``-0`` is a negative zero (a
float64) in Go but the integer 0 to orjson; invalid UTF-8 and lone surrogate escapes become
U+FFFD in Go (orjson refuses them); integers beyond 64 bits are float64s; a number out of the
float64 range is an error. orjson decodes everything else identically and fast, so it runs first
and the slower standard-library parser only sees the rare texts orjson cannot decode faithfully.
"""

from __future__ import annotations

import codecs
import json
import math
import re
from typing import Any

import orjson


class GoJSONError(ValueError):
    """Text Go's decoder refuses: not JSON, or a number outside the float64 range."""


# An integer literal -0 as a JSON value: after the start, ':', '[' or ',' (then whitespace).
# A match inside a string ("a:-0") is harmless: it only sends the text to the slow parser.
# The regex looks for "-0" alone (a literal prefix the engine scans for quickly); what precedes
# it is checked by hand: a leading alternation made every verified patch scan the whole text
# slowly, twice (stored copy and patch), more than a fast digest costs.
_MINUS_ZERO = re.compile(rb"-0(?![.eE0-9])")
_WHITESPACE = frozenset(b" \t\r\n")
_BEFORE_A_VALUE = frozenset(b":[,")


def _has_negative_zero(raw: bytes) -> bool:
    for match in _MINUS_ZERO.finditer(raw):
        i = match.start() - 1
        while i >= 0 and raw[i] in _WHITESPACE:
            i -= 1
        if i < 0 or raw[i] in _BEFORE_A_VALUE:
            return True
    return False


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _replace_each_byte(error: UnicodeError) -> tuple[str, int]:
    # Go writes one U+FFFD per invalid byte; Python's "replace" may merge several bytes into one.
    assert isinstance(error, UnicodeDecodeError)
    return "\ufffd", error.start + 1


codecs.register_error("clustersync-go-replace", _replace_each_byte)


def loads(data: bytes | str) -> Any:
    """The value Go decodes from ``data``; raises :class:`GoJSONError` where Go fails."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _slow_loads(raw)
    if _has_negative_zero(raw):
        return _slow_loads(raw)
    return value


def _slow_loads(raw: bytes) -> Any:
    text = raw.decode("utf-8", errors="clustersync-go-replace")
    try:
        value = json.loads(
            text, parse_int=_integer, parse_float=_double, parse_constant=_no_constant
        )
    except (ValueError, RecursionError) as exc:
        raise GoJSONError(f"invalid JSON: {exc}") from None
    return _without_lone_surrogates(value)


def _integer(literal: str) -> int | float:
    if literal == "-0":
        return -0.0
    try:
        value = int(literal)
        float(value)  # Go reads it as a float64: out of range is an error there
    except (ValueError, OverflowError):
        raise GoJSONError(f"number {literal} is out of the float64 range") from None
    return value


def _double(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        raise GoJSONError(f"number {literal} is out of the float64 range")
    return value


def _no_constant(name: str) -> Any:
    raise GoJSONError(f"invalid JSON value {name}")


def _without_lone_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_without_lone_surrogates(k): _without_lone_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_lone_surrogates(item) for item in value]
    return value
