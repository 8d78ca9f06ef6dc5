"""The persisted checksum format: round trip, and every reason a file is not believed."""

from __future__ import annotations

import hashlib
import random

import orjson
import pytest

from clustersync.model import Kind, ObjectRef
from clustersync.protocol.agent import AgentSession
from clustersync.protocol.agent_types import Strategy, WatchEvent
from clustersync.protocol.checksum import canonical_checksum
from clustersync.protocol.checksum_cache import (
    SAMPLE_SIZE,
    Entry,
    decode,
    encode,
    fingerprint,
    sample,
)
from clustersync.protocol.digest import FAST_TAG, fast_digest
from clustersync.protocol.messages import NewChecksum
from clustersync.protocol.sealed import RejectedFileError
from clustersync.protocol.shaping import NamespaceRules, shape

PODS = Kind("", "v1", "pods")
NODES = Kind("", "v1", "nodes")
PRINT = fingerprint({PODS: "patch", NODES: "copy"})


def entries(n: int = 5) -> list[Entry]:
    pods = [
        Entry(ObjectRef(PODS, "ns", f"p{i}"), f"uid-{i}/{10 + i}", f"{i:064x}") for i in range(n)
    ]
    return [*pods, Entry(ObjectRef(NODES, "", "node-1"), "uid-n/7", "cs1:abc")]


def test_round_trip_keeps_refs_versions_and_checksums_as_they_are() -> None:
    assert decode(encode(entries(), PRINT), PRINT) == entries()
    assert decode(encode([], PRINT), PRINT) == []


def test_fingerprint_follows_kinds_and_strategies() -> None:
    assert fingerprint({PODS: "patch", NODES: "copy"}) == PRINT
    assert fingerprint({PODS: "copy", NODES: "copy"}) != PRINT
    assert fingerprint({PODS: "patch"}) != PRINT


def _rejected(data: bytes, fingerprint_: str = PRINT) -> str:
    with pytest.raises(RejectedFileError) as caught:
        decode(data, fingerprint_)
    return caught.value.reason


def _with_header(data: bytes, **changes: object) -> bytes:
    head, _, body = data.partition(b"\n")
    header = {**orjson.loads(head), **changes}
    return orjson.dumps(header) + b"\n" + body


def test_every_kind_of_bad_file_is_rejected_with_its_reason() -> None:
    good = encode(entries(), PRINT)
    assert _rejected(good, fingerprint({PODS: "copy"})) == "fingerprint"
    assert _rejected(good[: len(good) // 2]) == "digest"  # torn in the body
    assert _rejected(good[:20]) == "truncated"  # torn in the header
    assert _rejected(b"") == "truncated"
    assert _rejected(b"\x00\xff garbage\n[]") == "malformed"
    assert _rejected(b"[1, 2]\n[]") == "malformed"
    assert _rejected(_with_header(good, format=2)) == "format"
    assert _rejected(_with_header(good, scheme="other")) == "scheme"
    edited = good.replace(b"uid-3/13", b"uid-3/99")
    assert _rejected(edited) == "digest"


def test_a_body_that_matches_a_forged_digest_is_still_checked() -> None:
    body = orjson.dumps([{"kind": ["", "v1", "pods"], "entries": [["ns", "p", 5, "c"]]}])
    header = {"format": 1, "scheme": "clustersync-checksum-v1", "fingerprint": PRINT,
              "entries": 1, "sha256": hashlib.sha256(body).hexdigest()}
    assert _rejected(orjson.dumps(header) + b"\n" + body) == "malformed"
    good = encode(entries(), PRINT)
    assert _rejected(_with_header(good, entries=99)) == "malformed"


def test_sample_takes_all_of_a_few_and_a_bounded_random_part_of_many() -> None:
    few = entries(3)
    assert sample(few) == few
    many = entries(500)
    picked = sample(many, random.Random(1))
    assert len(picked) == SAMPLE_SIZE
    assert set(picked) <= set(many)
    assert picked != sample(many, random.Random(2))


def _pod(rv: str, uid: str = "uid-1") -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p1", "namespace": "ns", "uid": uid, "resourceVersion": rv},
        "spec": {"containers": [{"name": "c", "image": "app:1"}]},
    }


def test_a_preloaded_checksum_is_used_only_for_its_uid_and_resource_version() -> None:
    saved = "f" * 64  # not the object's hash: shows where the saved one was used
    ref = ObjectRef(PODS, "ns", "p1")
    for live, expected_saved in (
        (_pod("5"), True),
        (_pod("6"), False),  # a newer version
        (_pod("5", uid="uid-2"), False),  # the same name, another object
    ):
        session = AgentSession({PODS: Strategy.PATCH}, NamespaceRules())
        assert session.preload_checksums([Entry(ref, "uid-1/5", saved)]) == 1
        [msg] = session.local_change(PODS, WatchEvent.ADDED, live)
        assert isinstance(msg, NewChecksum)
        real = canonical_checksum(shape(PODS, live))
        assert msg.checksum == (saved if expected_saved else real)


def test_checksum_agrees_rehashes_and_keeps_the_fresh_one() -> None:
    ref = ObjectRef(PODS, "ns", "p1")
    real = canonical_checksum(shape(PODS, _pod("5")))
    session = AgentSession({PODS: Strategy.PATCH}, NamespaceRules())
    session.preload_checksums([Entry(ref, "uid-1/5", real)])
    assert session.checksum_agrees(PODS, _pod("5"))
    session.preload_checksums([Entry(ref, "uid-1/5", "0" * 64)])
    assert not session.checksum_agrees(PODS, _pod("5"))
    assert list(session.checksum_entries()) == [Entry(ref, "uid-1/5", real)]
    session.forget_checksums()
    assert list(session.checksum_entries()) == []


def test_entries_of_kinds_not_synced_are_not_taken() -> None:
    session = AgentSession({PODS: Strategy.PATCH}, NamespaceRules())
    assert session.preload_checksums(entries(2)) == 2  # the node entry is left out


def test_a_checksum_saved_under_the_other_algorithm_is_checked_by_its_own() -> None:
    ref = ObjectRef(PODS, "ns", "p1")
    fast = fast_digest(shape(PODS, _pod("5")))
    session = AgentSession({PODS: Strategy.PATCH}, NamespaceRules())  # kubescape's hash here
    session.preload_checksums([Entry(ref, "uid-1/5", fast)])
    assert session.checksum_agrees(PODS, _pod("5"))
    assert list(session.checksum_entries()) == [Entry(ref, "uid-1/5", fast)]  # kept
    session.preload_checksums([Entry(ref, "uid-1/5", FAST_TAG + "0" * 64)])
    assert not session.checksum_agrees(PODS, _pod("5"))


def test_an_object_with_a_known_checksum_is_not_even_shaped() -> None:
    """A node whose status is not an object cannot be shaped (kubescape refuses it too): the
    inventory lists it only while a checksum for its very version is held, so none is shaped."""
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "n1", "uid": "uid-n", "resourceVersion": "3"},
        "status": "not an object",
    }
    ref = ObjectRef(NODES, "", "n1")
    session = AgentSession({NODES: Strategy.PATCH}, NamespaceRules())
    assert list(session.inventory_entries(NODES, [node])) == []  # shaping fails: left out
    session.preload_checksums([Entry(ref, "uid-n/3", "a" * 64)])
    assert list(session.inventory_entries(NODES, [node])) == [(ref, "a" * 64)]
    newer = {**node, "metadata": {**node["metadata"], "resourceVersion": "4"}}
    assert list(session.inventory_entries(NODES, [newer])) == []
