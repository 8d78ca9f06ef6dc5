"""Reconciling objects known by their cache entries' facts: the same messages as reconciling the
parsed objects, without parsing what the facts decide."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from clustersync.model import Kind, ObjectRef
from clustersync.protocol import cache_entry
from clustersync.protocol.agent import AgentSession
from clustersync.protocol.agent_reconcile import ReconcilePasses
from clustersync.protocol.agent_types import Listed, Strategy, WatchEvent
from clustersync.protocol.cache_entry import Facts
from clustersync.protocol.checksum import canonical_checksum
from clustersync.protocol.compact import Packer
from clustersync.protocol.digest import fast_digest, is_fast
from clustersync.protocol.messages import (
    BATCH_RECONCILIATION,
    Batch,
    Message,
    NewChecksum,
    ObjectDeleted,
    PatchObject,
    PutObject,
)
from clustersync.protocol.shaping import MASK, NamespaceRules, shape

PODS = Kind("", "v1", "pods")
RULES = NamespaceRules(operator_namespace="kubescape", exclude=frozenset({"hidden"}))


def pod(name: str, namespace: str = "shop", rv: str = "1", **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "resourceVersion": rv,
            **meta,
        },
        "spec": {"containers": [{"name": "app", "env": [{"name": "TOKEN", "value": "secret"}]}]},
    }


OWNED = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs"}]


class Entries:
    """The informer cache's reading side, over entries made as the informer makes them; counts
    the entries it had to parse."""

    def __init__(self, kind: Kind | None = PODS) -> None:
        self.kind = kind
        self.packer = Packer(samples=2)
        self.parsed = 0

    def listed(self, obj: dict[str, Any]) -> Listed:
        meta = obj["metadata"]
        entry = cache_entry.encode(self.kind, obj, self.packer)
        return Listed(meta["namespace"], meta["name"], entry, self)

    def facts(self, entry: bytes) -> Facts:
        return cache_entry.facts(entry)

    def parse(self, entry: bytes) -> dict[str, Any]:
        self.parsed += 1
        return cache_entry.live(self.kind, entry, self.packer)

    def shaped_json(self, entry: bytes, known: Facts | None = None) -> bytes | None:
        return cache_entry.shaped_json(entry, self.packer, known)


def cluster() -> list[dict[str, Any]]:
    return [
        pod("a"),
        pod("b"),
        pod("c"),
        pod("hidden-1", namespace="hidden"),  # excluded namespace
        pod("owned", ownerReferences=OWNED),  # a controller's pod
        pod("operator", namespace="kubescape", ownerReferences=OWNED),  # bypasses the rules
    ]


def session(fast: bool = True, strategy: Strategy = Strategy.PATCH) -> AgentSession:
    agent = AgentSession({PODS: strategy}, RULES)
    agent.use_fast_digests(fast)
    return agent


def answer(fast: bool) -> Batch:
    """The backend holds "a" as the cluster has it, "b" in another version, and "gone"."""
    digest = fast_digest if fast else canonical_checksum
    held = [
        NewChecksum(ref=ObjectRef(PODS, "shop", "a"), checksum=digest(shape(PODS, pod("a")))),
        NewChecksum(ref=ObjectRef(PODS, "shop", "b"), checksum="something else"),
        NewChecksum(ref=ObjectRef(PODS, "shop", "gone"), checksum="x"),
    ]
    return Batch(kind=PODS, batch_type=BATCH_RECONCILIATION, new_checksum=tuple(held), msg_id="m")


def comparable(messages: list[Message]) -> list[tuple[Any, ...]]:
    rows = []
    for msg in messages:
        if isinstance(msg, PutObject):
            rows.append(("put", msg.ref, msg.checksum, orjson.loads(msg.object), msg.msg_id))
        else:
            assert isinstance(msg, ObjectDeleted)
            rows.append(("delete", msg.ref, msg.msg_id))
    return rows


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("strategy", [Strategy.PATCH, Strategy.COPY])
def test_listed_objects_reconcile_to_the_messages_parsed_ones_do(
    fast: bool, strategy: Strategy
) -> None:
    expected = session(fast, strategy).reconcile(answer(fast), cluster())
    entries = Entries()
    got = session(fast, strategy).reconcile(
        answer(fast), [entries.listed(obj) for obj in cluster()]
    )
    assert comparable(got.send) == comparable(expected.send)
    sent = {row[1].name for row in comparable(got.send) if row[0] == "put"}
    assert sent == {"b", "c", "operator"}
    assert ("delete", ObjectRef(PODS, "shop", "gone"), "m") in comparable(got.send)
    put = next(m for m in got.send if isinstance(m, PutObject))
    assert orjson.loads(put.object)["spec"]["containers"][0]["env"][0]["value"] == MASK
    assert all(is_fast(m.checksum) == fast for m in got.send if isinstance(m, PutObject))


def test_with_fast_digests_no_listed_object_is_parsed() -> None:
    entries = Entries()
    session().reconcile(answer(True), [entries.listed(obj) for obj in cluster()])
    assert entries.parsed == 0


def test_without_facts_in_the_entries_the_objects_are_parsed_as_before() -> None:
    entries = Entries(kind=None)  # a cache that holds the live JSON only
    expected = session().reconcile(answer(True), cluster())
    got = session().reconcile(answer(True), [entries.listed(obj) for obj in cluster()])
    assert comparable(got.send) == comparable(expected.send)
    assert entries.parsed == len(cluster())


def test_inventory_entries_of_listed_objects_equal_those_of_parsed_ones() -> None:
    entries = Entries()
    expected = list(session().inventory_entries(PODS, cluster()))
    agent = session()
    got = list(agent.inventory_entries(PODS, [entries.listed(obj) for obj in cluster()]))
    assert got == expected
    assert entries.parsed == 0
    # Each digest is held for its object version, as if the object had been hashed.
    held = {e.ref: (e.version, e.checksum) for e in agent.checksum_entries()}
    assert held[ObjectRef(PODS, "shop", "a")] == ("uid-a/1", fast_digest(shape(PODS, pod("a"))))


def test_an_object_sent_from_its_entry_patches_against_what_was_sent_on_its_next_change() -> None:
    entries = Entries()
    agent = session()
    agent.share_shadows(PODS, entries.parse)
    listed = entries.listed(pod("c"))
    out = agent.reconcile(answer(True), [listed])
    assert [m.ref.name for m in out.send if isinstance(m, PutObject)] == ["c"]
    changed = pod("c", rv="2")
    changed["metadata"]["labels"] = {"tier": "new"}
    (msg,) = agent.local_change(PODS, WatchEvent.MODIFIED, changed)
    assert isinstance(msg, PatchObject)
    patch = {"metadata": {"labels": {"tier": "new"}, "resourceVersion": "2"}}
    assert orjson.loads(msg.patch) == patch


def test_a_digest_taken_from_the_cache_entry_of_the_same_version_is_not_hashed_again() -> None:
    entries = Entries()
    live = pod("d")
    facts = entries.facts(entries.listed(live).entry)
    stand_in = Facts(facts.resource_version, facts.uid, "cs1:" + "ab" * 32, False, True)
    agent = session()
    agent.take_digest(ObjectRef(PODS, "shop", "d"), stand_in)
    (msg,) = agent.local_change(PODS, WatchEvent.ADDED, live)
    assert isinstance(msg, NewChecksum) and msg.checksum == stand_in.digest
    # Another version's digest is never used for this one.
    agent = session()
    older = Facts("0", facts.uid, "cs1:" + "cd" * 32, False, True)
    agent.take_digest(ObjectRef(PODS, "shop", "d"), older)
    (msg,) = agent.local_change(PODS, WatchEvent.ADDED, live)
    assert isinstance(msg, NewChecksum) and msg.checksum == fast_digest(shape(PODS, live))
    # Nor with kubescape's checksums on the link.
    agent = session(fast=False)
    agent.take_digest(ObjectRef(PODS, "shop", "d"), stand_in)
    (msg,) = agent.local_change(PODS, WatchEvent.ADDED, live)
    assert isinstance(msg, NewChecksum) and not is_fast(msg.checksum)


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("split", [1, 2, 4])
def test_a_reconciliation_in_passes_sends_what_the_one_shot_one_does(
    fast: bool, split: int
) -> None:
    """A list still arriving is reconciled part by part: same messages as the whole at once,
    and the deletions (the backend holds "gone", the cluster never listed it) only in the final
    pass, however the cluster is split."""
    expected = session(fast).reconcile(answer(fast), cluster())
    entries = Entries()
    listed = [entries.listed(obj) for obj in cluster()]
    parts = [listed[n::split] for n in range(split)]
    agent, passes = session(fast), ReconcilePasses()
    early: list[Message] = []
    for part in parts[:-1]:
        for step in agent.reconcile_steps(answer(fast), part, passes=passes, final=False):
            early += step.send
    final: list[Message] = []
    for step in agent.reconcile_steps(answer(fast), parts[-1], passes=passes, final=True):
        final += step.send
    assert not any(isinstance(m, ObjectDeleted) for m in early)
    assert sorted(comparable(early + final), key=repr) == sorted(
        comparable(expected.send), key=repr
    )
    # What the backend lacks ("c"), holds otherwise ("b"), holds equal ("a", not sent), holds
    # and the cluster lacks ("gone").
    assert {m.ref.name for m in early + final if isinstance(m, PutObject)} == {"b", "c", "operator"}
    assert [m.ref.name for m in final if isinstance(m, ObjectDeleted)] == ["gone"]


def test_a_pass_that_is_not_final_never_deletes() -> None:
    agent = session()
    out = list(agent.reconcile_steps(answer(True), [], passes=ReconcilePasses(), final=False))
    assert [m for step in out for m in step.send] == []
    passes = ReconcilePasses()
    out = list(agent.reconcile_steps(answer(True), [], passes=passes, final=True))
    deleted = [m.ref.name for step in out for m in step.send if isinstance(m, ObjectDeleted)]
    assert deleted == ["a", "b", "gone"]
