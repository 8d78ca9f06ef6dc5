"""Subject tokens and durable names are injective encodings of account and cluster names.

Two clusters must never share a bus subject or a durable: if ``v1.10`` and ``v1\\u2e10`` did, a
push for one would be created in the other. The properties are checked exhaustively over short
texts from an alphabet of troublemakers, and by decoding random Unicode texts back with a
decoder written here from the documented rule (not taken from the code under test).
"""

from __future__ import annotations

import itertools
import random
import re

from clustersync.protocol.envelope import (
    down_durable,
    down_subject,
    subject_token,
    up_subject,
    write_subject,
)

# A valid NATS subject token and consumer name: printable ASCII without . * > / \ or spaces.
VALID = re.compile(r"[A-Za-z0-9_~-]+")
TRICKY = ["a", "2", "e", "1", "0", "~", ".", "-", "_", "\u2e10", "é", " ", "*"]


def decode(token: str) -> str:
    """The documented rule backwards: ``~`` alone is the empty text; ``~hh`` is one UTF-8 byte;
    everything else stands for itself."""
    if token == "~":
        return ""
    out = bytearray()
    i = 0
    while i < len(token):
        if token[i] == "~":
            hex_digits = token[i + 1 : i + 3]
            assert re.fullmatch(r"[0-9a-f]{2}", hex_digits), token
            out.append(int(hex_digits, 16))
            i += 3
        else:
            assert token[i] in "-_" or (token[i].isascii() and token[i].isalnum()), token
            out += token[i].encode()
            i += 1
    return out.decode("utf-8", "surrogatepass")


def texts(alphabet: list[str], longest: int) -> list[str]:
    return [
        "".join(chars)
        for size in range(longest + 1)
        for chars in itertools.product(alphabet, repeat=size)
    ]


def test_the_reported_collision_is_gone() -> None:
    assert subject_token("v1.10") == "v1~2e10"
    assert subject_token("v1\u2e10") == "v1~e2~b8~90"
    assert up_subject("acct", "v1.10") != up_subject("acct", "v1\u2e10")
    assert down_subject("acct", "v1.10") != down_subject("acct", "v1\u2e10")
    assert write_subject("acct", "v1.10") != write_subject("acct", "v1\u2e10")


def test_distinct_texts_give_distinct_valid_tokens() -> None:
    every = texts(TRICKY, 4)
    tokens = [subject_token(text) for text in every]
    assert len(set(tokens)) == len(every)
    for text, token in zip(every, tokens, strict=True):
        assert VALID.fullmatch(token), (text, token)
        assert decode(token) == text


def test_random_unicode_round_trips() -> None:
    rng = random.Random(20261130)
    for _ in range(3000):
        # Code points from every plane, lone surrogates included (a Python str may hold them).
        text = "".join(chr(rng.choice([rng.randrange(0x80), rng.randrange(0x110000)]))
                       for _ in range(rng.randrange(12)))
        token = subject_token(text)
        assert VALID.fullmatch(token), (text, token)
        assert decode(token) == text


def test_kept_characters_stay_readable() -> None:
    assert subject_token("Prod-eu_1") == "Prod-eu_1"
    assert subject_token("~") == "~7e" and subject_token("") == "~"


def test_down_durables_never_collide() -> None:
    alphabet = ["a", "-", "~", "2", "d", "."]
    pairs = list(itertools.product(texts(alphabet, 3), repeat=2))
    durables = {down_durable(account, cluster) for account, cluster in pairs}
    assert len(durables) == len(pairs)
    assert down_durable("a-b", "c") != down_durable("a", "b-c")
    assert all(VALID.fullmatch(durable) for durable in durables)
