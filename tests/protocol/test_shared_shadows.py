"""Shadows shared with the driver's cache: an object sent whole by a reconciliation keeps the
cache entry it was read from as its shadow, instead of a packed copy of what was sent."""

from __future__ import annotations

from typing import Any

import orjson

from clustersync.model import Kind, ObjectRef
from clustersync.protocol.agent import AgentSession
from clustersync.protocol.agent_types import Cached, Strategy, WatchEvent
from clustersync.protocol.compact import Packer
from clustersync.protocol.messages import BATCH_RECONCILIATION, Batch, PatchObject, PutObject
from clustersync.protocol.shaping import MASK, NamespaceRules

PODS = Kind("", "v1", "pods")


def pod(name: str, tier: str = "a", rv: str = "1") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "shop",
            "uid": f"uid-{name}",
            "resourceVersion": rv,
            "labels": {"tier": tier},
        },
        "spec": {"containers": [{"name": "app", "env": [{"name": "TOKEN", "value": "secret"}]}]},
    }


class Cache:
    """A stand-in for the informer's cache: objects kept as packed JSON entries."""

    def __init__(self) -> None:
        self.packer = Packer(samples=2)
        self.reads = 0

    def entry(self, live: dict[str, Any]) -> bytes:
        return self.packer.pack(orjson.dumps(live))

    def parse(self, entry: bytes) -> dict[str, Any]:
        self.reads += 1
        parsed: dict[str, Any] = orjson.loads(self.packer.unpack(entry))
        return parsed


def empty_inventory() -> Batch:
    return Batch(kind=PODS, batch_type=BATCH_RECONCILIATION, covered=None)


def session(strategy: Strategy = Strategy.PATCH) -> AgentSession:
    return AgentSession({PODS: strategy}, NamespaceRules())


def sent_whole(agent: AgentSession, cache: Cache, pods: list[dict[str, Any]]) -> list[PutObject]:
    items = [Cached(live, cache.entry(live)) for live in pods]
    out = agent.reconcile(empty_inventory(), items)
    assert all(isinstance(m, PutObject) for m in out.send)
    return [m for m in out.send if isinstance(m, PutObject)]


def test_an_object_sent_whole_shares_its_cache_entry_and_patches_against_what_was_sent() -> None:
    agent, cache = session(), Cache()
    agent.share_shadows(PODS, cache.parse)
    pods = [pod(f"p{i}") for i in range(5)]
    puts = sent_whole(agent, cache, pods)
    assert len(puts) == 5
    assert agent.shadows.packed_size() == 0  # nothing packed: the entries are shared
    assert cache.reads == 0  # and nothing read back yet
    ref = ObjectRef(PODS, "shop", "p3")
    sent = next(m.object for m in puts if m.ref == ref)
    assert agent.shadows[ref] == sent  # the shadow reads back as exactly what was sent
    assert orjson.loads(sent)["spec"]["containers"][0]["env"][0]["value"] == MASK

    [patch] = agent.local_change(PODS, WatchEvent.MODIFIED, pod("p3", tier="b", rv="2"))
    assert isinstance(patch, PatchObject)
    assert orjson.loads(patch.patch) == {
        "metadata": {"labels": {"tier": "b"}, "resourceVersion": "2"}
    }
    # The new shadow is a packed copy again (a change is not read from the cache).
    assert agent.shadows.packed_size() > 0
    assert orjson.loads(agent.shadows[ref])["metadata"]["labels"] == {"tier": "b"}


def test_without_a_reader_or_for_copy_kinds_nothing_is_shared() -> None:
    cache = Cache()
    plain = session()  # no share_shadows: packed shadows as before
    sent_whole(plain, cache, [pod("p0"), pod("p1")])
    assert plain.shadows.packed_size() > 0
    copy = session(Strategy.COPY)
    copy.share_shadows(PODS, cache.parse)
    sent_whole(copy, cache, [pod("p0")])
    assert len(copy.shadows) == 0 and cache.reads == 0


def test_plain_objects_are_reconciled_with_packed_shadows_as_before() -> None:
    agent, cache = session(), Cache()
    agent.share_shadows(PODS, cache.parse)
    out = agent.reconcile(empty_inventory(), [pod("p0")])
    assert [type(m) for m in out.send] == [PutObject]
    assert agent.shadows.packed_size() > 0


def test_an_unreadable_shared_entry_counts_and_the_next_change_goes_whole() -> None:
    agent, cache = session(), Cache()

    def broken(entry: bytes) -> dict[str, Any]:
        raise ValueError("cannot read")

    agent.share_shadows(PODS, broken)
    sent_whole(agent, cache, [pod("p0")])
    [msg] = agent.local_change(PODS, WatchEvent.MODIFIED, pod("p0", tier="b", rv="2"))
    assert isinstance(msg, PutObject)
    assert orjson.loads(msg.object)["metadata"]["labels"] == {"tier": "b"}
    assert agent.synced.unreadable_shadows == 1
