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
