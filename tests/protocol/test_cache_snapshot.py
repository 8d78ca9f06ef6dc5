"""The saved informer cache's format: what it keeps, and every file it refuses."""

from __future__ import annotations

import random

import orjson
import pytest

from clustersync.model import Kind
from clustersync.protocol.cache_snapshot import (
    FORMAT,
    SAMPLE_SIZE,
    CacheSnapshot,
    decode,
    encode,
    fingerprint,
    sample,
)
from clustersync.protocol.compact import Packer
from clustersync.protocol.sealed import RejectedFileError

PODS = Kind("", "v1", "pods")
PRINT = fingerprint(PODS, "acct", "prod", "https://10.0.0.1:6443")


def snapshot(count: int = 3, dictionary: bytes | None = b"dictionary bytes") -> CacheSnapshot:
    entries = [((f"ns-{i % 2}", f"pod-é-{i}"), bytes([i % 256]) * (i + 1)) for i in range(count)]
    return CacheSnapshot("4711", dictionary, entries)


@pytest.mark.parametrize("dictionary", [b"dictionary bytes", None])
def test_round_trip_keeps_version_dictionary_and_entries(dictionary: bytes | None) -> None:
    saved = snapshot(dictionary=dictionary)
    loaded = decode(encode(saved, PRINT), PRINT)
    assert loaded.resource_version == "4711"
    assert loaded.dictionary == dictionary
    assert list(loaded.entries) == [
        (("ns-0", "pod-é-0"), b"\x00"),
        (("ns-1", "pod-é-1"), b"\x01\x01"),
        (("ns-0", "pod-é-2"), b"\x02\x02\x02"),
    ]


def test_an_empty_cache_round_trips() -> None:
    loaded = decode(encode(CacheSnapshot("9", None, []), PRINT), PRINT)
    assert (loaded.resource_version, loaded.dictionary, list(loaded.entries)) == ("9", None, [])


@pytest.mark.parametrize(
    "other",
    [
        fingerprint(Kind("", "v1", "configmaps"), "acct", "prod", "https://10.0.0.1:6443"),
        fingerprint(PODS, "other-acct", "prod", "https://10.0.0.1:6443"),
        fingerprint(PODS, "acct", "staging", "https://10.0.0.1:6443"),
        fingerprint(PODS, "acct", "prod", "https://10.0.0.2:6443"),
    ],
    ids=["kind", "account", "cluster", "api-server"],
)
def test_a_file_of_another_kind_or_cluster_is_refused(other: str) -> None:
    assert other != PRINT
    with pytest.raises(RejectedFileError) as caught:
        decode(encode(snapshot(), other), PRINT)
    assert caught.value.reason == "fingerprint"


def test_a_truncated_body_fails_its_digest() -> None:
    data = encode(snapshot(), PRINT)
    with pytest.raises(RejectedFileError) as caught:
        decode(data[:-2], PRINT)
    assert caught.value.reason == "digest"


def test_a_file_cut_inside_its_header_is_truncated() -> None:
    data = encode(snapshot(), PRINT)
    with pytest.raises(RejectedFileError) as caught:
        decode(data[:20], PRINT)
    assert caught.value.reason == "truncated"


def test_an_edited_byte_fails_the_digest() -> None:
    data = bytearray(encode(snapshot(), PRINT))
    data[-1] ^= 0xFF
    with pytest.raises(RejectedFileError) as caught:
        decode(bytes(data), PRINT)
    assert caught.value.reason == "digest"


@pytest.mark.parametrize("other", [FORMAT - 1, FORMAT + 1])
def test_another_format_version_is_refused(other: int) -> None:
    """An older agent's file (entries of another layout) is refused whole, as is a newer one."""
    head, _, body = encode(snapshot(), PRINT).partition(b"\n")
    header = orjson.loads(head)
    header["format"] = other
    with pytest.raises(RejectedFileError) as caught:
        decode(orjson.dumps(header) + b"\n" + body, PRINT)
    assert caught.value.reason == "format"


def test_a_body_with_a_forged_digest_but_wrong_count_is_malformed() -> None:
    head, _, body = encode(snapshot(), PRINT).partition(b"\n")
    header = orjson.loads(head)
    header["entries"] = 2
    with pytest.raises(RejectedFileError) as caught:
        decode(orjson.dumps(header) + b"\n" + body, PRINT)
    assert caught.value.reason == "malformed"


def test_sample_takes_all_of_few_and_a_bounded_random_part_of_many() -> None:
    few = list(snapshot(5).entries)
    assert sample(few) == few
    many = list(snapshot(100).entries)
    picked = sample(many, random.Random(7))
    assert len(picked) == SAMPLE_SIZE
    assert set(picked) <= set(many)


def test_a_packer_given_a_learned_dictionary_reads_what_the_first_one_packed() -> None:
    first = Packer(samples=2)
    docs = [orjson.dumps({"kind": "Pod", "metadata": {"name": f"p{i}"}}) for i in range(4)]
    packed = [first.pack(doc) for doc in docs]
    assert first.dictionary is not None
    second = Packer(dictionary=first.dictionary)
    assert [second.unpack(p) for p in packed] == docs
    assert second.dictionary == first.dictionary
    assert first.unpack(second.pack(docs[0])) == docs[0]  # packs against the same dictionary
