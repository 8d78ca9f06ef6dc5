"""The per-object records behind the session's shadows, checksums and sent checksums."""

from __future__ import annotations

import orjson

from clustersync.model import Kind, ObjectRef
from clustersync.protocol.synced import SyncedObjects

PODS = Kind("", "v1", "pods")
NODES = Kind("", "v1", "nodes")


def ref(name: str, kind: Kind = PODS) -> ObjectRef:
    return ObjectRef(kind, "ns" if kind == PODS else "", name)


def shadow(name: str) -> bytes:
    return orjson.dumps({"metadata": {"name": name}, "spec": {"replicas": 3, "image": "app:1"}})


def test_shadows_read_back_as_stored_across_kinds() -> None:
    store = SyncedObjects()
    for i in range(30):
        store.shadows[ref(f"p{i}")] = shadow(f"p{i}")
        store.shadows[ref(f"n{i}", NODES)] = shadow(f"n{i}")
    assert store.shadows[ref("p7")] == shadow("p7")
    assert store.shadows.get(ref("n29", NODES)) == shadow("n29")
    assert store.shadows.get(ref("absent")) is None
    assert len(store.shadows) == 60
    assert store.shadows.packed_size() < sum(len(shadow(f"p{i}")) * 2 for i in range(30))


def test_replacing_a_shadow_keeps_the_latest() -> None:
    store = SyncedObjects()
    store.shadows[ref("a")] = b'{"v":1}'
    store.shadows[ref("a")] = b'{"v":2}'
    assert store.shadows[ref("a")] == b'{"v":2}'
    assert len(store.shadows) == 1


def test_popping_one_fact_keeps_the_others() -> None:
    store = SyncedObjects()
    store.shadows[ref("a")] = b"{}"
    store.checksums[ref("a")] = ("uid-a/5", "c" * 64)
    store.sent[ref("a")] = "s" * 64
    assert store.shadows.pop(ref("a")) == b"{}"
    assert ref("a") not in store.shadows
    assert store.checksums[ref("a")] == ("uid-a/5", "c" * 64)
    assert store.sent.get(ref("a")) == "s" * 64
    assert store.sent.pop(ref("a")) == "s" * 64
    assert store.checksums.pop(ref("a")) == ("uid-a/5", "c" * 64)
    assert len(store) == 0  # a record with nothing left is dropped
    assert store.shadows.pop(ref("a")) is None
    assert store.sent.pop(ref("a")) is None


def test_forget_drops_every_fact() -> None:
    store = SyncedObjects()
    store.shadows[ref("a")] = b"{}"
    store.checksums[ref("a")] = ("u/1", "x")
    store.forget(ref("a"))
    assert store.shadows == {}
    assert store.checksums == {}
    assert store.sent.get(ref("a")) is None


def test_checksums_view_lists_only_hashed_objects() -> None:
    store = SyncedObjects()
    store.checksums[ref("a")] = ("u/1", "x")
    store.shadows[ref("b")] = b"{}"
    assert dict(store.checksums) == {ref("a"): ("u/1", "x")}
    assert list(store.shadows) == [ref("b")]


def test_discard_drops_a_shadow_only() -> None:
    store = SyncedObjects()
    store.shadows[ref("a")] = b"{}"
    store.sent[ref("a")] = "s"
    store.shadows.discard(ref("a"))
    store.shadows.discard(ref("never"))
    assert ref("a") not in store.shadows
    assert store.sent.get(ref("a")) == "s"


def test_hold_sets_a_checksum_and_counts_only_real_changes() -> None:
    store = SyncedObjects()
    store.shadows[ref("a")] = b'{"v":1}'
    store.hold(ref("a"), "uid-a/5", "x")
    assert store.checksums[ref("a")] == ("uid-a/5", "x")
    assert store.shadows[ref("a")] == b'{"v":1}'  # the other facts stay
    changes = store.checksum_changes
    store.hold(ref("a"), "uid-a/5", "x")
    assert store.checksum_changes == changes  # the same again: nothing to save
    store.hold(ref("a"), "uid-a/6", "y")
    assert store.checksums[ref("a")] == ("uid-a/6", "y")
    assert store.checksum_changes == changes + 1


def test_sent_whole_replaces_what_the_backend_holds() -> None:
    store = SyncedObjects()
    store.shadows[ref("patched")] = b'{"v":1}'
    store.sent[ref("patched")] = "old"
    store.sent_whole(ref("patched"), sent=None, shadow=b'{"v":2}')
    assert store.shadows[ref("patched")] == b'{"v":2}'
    assert store.sent.get(ref("patched")) is None

    packed = store.shadows.packed_size()
    store.share_from(PODS, lambda entry: {"read": entry.decode()})
    store.sent_whole(ref("shared"), sent=None, shadow=b"entry-bytes", shared=True)
    assert store.shadows.decoded(ref("shared")) == {"read": "entry-bytes"}
    assert store.shadows.packed_size() == packed  # a shared entry is the cache's, not packed

    store.shadows[ref("copied")] = b"{}"
    store.sent_whole(ref("copied"), sent="c2", shadow=None)
    assert store.sent.get(ref("copied")) == "c2"
    assert ref("copied") not in store.shadows

    store.sent_whole(ref("copied"), sent=None, shadow=None)
    assert len(store) == 2  # a record with nothing left is dropped
