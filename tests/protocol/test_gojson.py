"""JSON decoded as Go's encoding/json decodes it into interface{}: the cases where Python parsers
see something else, and where the result changes a kubescape checksum."""

from __future__ import annotations

import math
import struct
from hashlib import sha256

import pytest

from clustersync.protocol import gojson
from clustersync.protocol.checksum import checksum_of_json


def _string_digest(text: str) -> str:
    return sha256(text.encode()).hexdigest()


def _number_digest(value: float) -> str:
    return sha256(struct.pack(">d", value)).hexdigest()


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        (b'"\xff"', "\ufffd"),
        # Go writes one U+FFFD per invalid byte; Python's "replace" merges a truncated sequence.
        (b'"\xe2\x82"', "\ufffd\ufffd"),
        (b'"a\xe2\x82\xacb"', "a\u20acb"),  # valid UTF-8 stays
        (rb'"\ud800"', "\ufffd"),
        (rb'"\ud800A"', "\ufffdA"),
        (rb'"\ud800\ud800"', "\ufffd\ufffd"),
        (rb'"\udc00"', "\ufffd"),
        (rb'"\ud83d\ude00"', "\U0001f600"),  # a valid pair is one character
    ],
)
def test_strings_as_go_reads_them(raw: bytes, decoded: str) -> None:
    assert gojson.loads(raw) == decoded
    assert checksum_of_json(raw) == _string_digest(decoded)


def test_keys_get_the_same_treatment() -> None:
    assert gojson.loads(rb'{"\ud800":1}') == {"\ufffd": 1}


def test_negative_zero_is_kept_where_it_is_a_number_only() -> None:
    value = gojson.loads(b'{"a":-0,"b":[ -0 ],"c":"web-0","d":-0.5,"e":-1.5e1}')
    assert math.copysign(1.0, value["a"]) == -1.0 and value["a"] == 0
    assert math.copysign(1.0, value["b"][0]) == -1.0
    assert value["c"] == "web-0" and value["d"] == -0.5 and value["e"] == -15.0
    assert checksum_of_json(b"-0") == _number_digest(-0.0) != _number_digest(0.0)


@pytest.mark.parametrize(
    "text",
    [b"[\n\t-0]", b"-0", b'{"t":"2024-01-01","image":"web-0","n":-0}', b'{"a":[1,\r\n-0]}'],
)
def test_negative_zero_is_found_after_other_minus_zeros_and_any_whitespace(text: bytes) -> None:
    found = []

    def walk(value: object) -> None:
        if isinstance(value, float) and value == 0 and math.copysign(1.0, value) == -1.0:
            found.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(gojson.loads(text))
    assert len(found) == 1


def test_integers_beyond_64_bits_are_doubles() -> None:
    assert checksum_of_json(b"123456789012345678901234567890") == _number_digest(
        1.2345678901234568e29
    )


def test_duplicate_keys_last_wins_on_both_paths() -> None:
    assert gojson.loads(b'{"a":1,"a":2}') == {"a": 2}
    assert gojson.loads(b'{"a":-0,"a":2}') == {"a": 2}  # through the slow parser


@pytest.mark.parametrize(
    "raw", [b"1e400", b"-1e400", b"[1, 1e999]", b"1" * 400, b"NaN", b"Infinity", b"{", b"", b"nul"]
)
def test_what_go_refuses(raw: bytes) -> None:
    with pytest.raises(gojson.GoJSONError):
        gojson.loads(raw)
