"""The agent and backend decision modules wired together in memory.

``Pair`` plays both drivers: a dict for the cluster, a dict for the backend's store, and a FIFO
of encoded frames each way (every message goes through the real websocket codec, so too-deep
messages are dropped exactly as a peer would drop them).
"""

from __future__ import annotations

import copy
import dataclasses
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from clustersync.model import Kind, ObjectRef
from clustersync.protocol.agent import AgentSession
from clustersync.protocol.agent_types import (
    ClusterWrite,
    Strategy,
    Verb,
    WatchEvent,
    WritePolicy,
    checksum_of,
)
from clustersync.protocol.backend import (
    Decision,
    Remove,
    StoredCopy,
    Upsert,
    backend_write,
    decide_all,
    reconciliation_batches,
)
from clustersync.protocol.checksum import CHECKSUM_ANNOTATION, canonical_checksum
from clustersync.protocol.codec import TooDeepError, decode, encode
from clustersync.protocol.messages import (
    BATCH_RECONCILIATION,
    MAX_DEPTH,
    Batch,
    GetObject,
    Message,
    NewChecksum,
    ObjectDeleted,
    PatchObject,
    PutObject,
    reply_meta,
)
from clustersync.protocol.shaping import MASK, NamespaceRules, shape

PODS = Kind.parse("/v1/pods")
DEPLOYMENTS = Kind.parse("apps/v1/deployments")
CONFIGMAPS = Kind.parse("/v1/configmaps")
SECRETS = Kind.parse("/v1/secrets")
OPERATOR = "kubescape"
STRATEGIES = {PODS: Strategy.PATCH, DEPLOYMENTS: Strategy.PATCH, CONFIGMAPS: Strategy.COPY}
UP, DOWN = "up", "down"


class Pair:
    def __init__(
        self,
        strategies: dict[Kind, Strategy] | None = None,
        rules: NamespaceRules | None = None,
        policy: WritePolicy | None = None,
    ) -> None:
        self.session = AgentSession(
            strategies if strategies is not None else STRATEGIES,
            rules or NamespaceRules(operator_namespace=OPERATOR),
            policy,
        )
        self.cluster: dict[ObjectRef, dict[str, Any]] = {}
        self.store: dict[ObjectRef, StoredCopy] = {}
        self.to_backend: deque[Message] = deque()
        self.to_agent: deque[Message] = deque()
        self.trace: list[tuple[str, Message]] = []  # every message as delivered
        self.dropped: list[tuple[str, int]] = []  # (direction, depth) of too-deep messages
        self.agent_errors: list[tuple[str, str]] = []
        self.backend_errors: list[tuple[str, str]] = []
        self.writes: list[ClusterWrite] = []
        self.tamper: Callable[[Message], Message] | None = None  # a faulty peer, if set
        self._rv = 100
        self._uid = 0

    # ------------------------------------------------------------ the cluster

    def _stamp(self, ref: ObjectRef, obj: dict[str, Any]) -> dict[str, Any]:
        """What the API server does to a written object: uid, resourceVersion, timestamps."""
        result = copy.deepcopy(obj)
        meta = result.setdefault("metadata", {})
        existing = self.cluster.get(ref)
        if existing is not None:
            meta["uid"] = existing["metadata"]["uid"]
            meta["creationTimestamp"] = existing["metadata"]["creationTimestamp"]
        else:
            self._uid += 1
            meta["uid"] = f"uid-{self._uid}"
            meta["creationTimestamp"] = f"2024-01-01T00:00:{self._uid:02d}Z"
        if ref.namespace:
            meta["namespace"] = ref.namespace
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        self.cluster[ref] = result
        return copy.deepcopy(result)

    def put_live(self, kind: Kind, obj: dict[str, Any]) -> tuple[ObjectRef, dict[str, Any]]:
        """A create or update made by someone in the cluster (no watch event yet)."""
        meta = obj["metadata"]
        ref = ObjectRef(kind, meta.get("namespace", ""), meta["name"])
        return ref, self._stamp(ref, obj)

    def delete_live(self, ref: ObjectRef) -> dict[str, Any]:
        return self.cluster.pop(ref)

    def watch(self, kind: Kind, event: WatchEvent, live: dict[str, Any]) -> list[Message]:
        msgs = self.session.local_change(kind, event, copy.deepcopy(live))
        self._send(UP, msgs)
        return msgs

    # ------------------------------------------------------------ transport

    def _send(self, direction: str, msgs: list[Message]) -> None:
        queue = self.to_backend if direction == UP else self.to_agent
        for msg in msgs:
            frame = encode(self.tamper(msg) if self.tamper else msg)
            try:
                queue.append(decode(frame))
            except TooDeepError:
                self.dropped.append((direction, msg.depth))

    def pump(self, max_steps: int = 200) -> int:
        steps = 0
        while self.to_backend or self.to_agent:
            steps += 1
            assert steps <= max_steps, "the pair did not settle"
            if self.to_backend:
                self._backend_receives(self.to_backend.popleft())
            if self.to_agent:
                self._agent_receives(self.to_agent.popleft())
        return steps

    # ------------------------------------------------------------ the backend driver

    def _apply_decision(self, decision: Decision) -> None:
        change = decision.change
        if isinstance(change, Upsert):
            self.store[change.ref] = StoredCopy(change.checksum, change.object)
        elif isinstance(change, Remove):
            self.store.pop(change.ref, None)
        self.backend_errors.extend(decision.errors)
        self._send(DOWN, decision.send)

    def _backend_receives(self, msg: Message) -> None:
        self.trace.append((UP, msg))
        for decision in decide_all(msg, self.store):
            self._apply_decision(decision)

    def backend_write(self, msg: PutObject | ObjectDeleted) -> None:
        self._apply_decision(backend_write(msg))

    def reconcile(self, kinds: tuple[Kind, ...] = ()) -> None:
        inventory = [(ref, stored.checksum) for ref, stored in self.store.items()]
        self._send(DOWN, list(reconciliation_batches(inventory, kinds)))

    # ------------------------------------------------------------ the agent driver

    def _agent_receives(self, msg: Message) -> None:
        self.trace.append((DOWN, msg))
        if isinstance(msg, Batch) and msg.batch_type == BATCH_RECONCILIATION:
            live = [copy.deepcopy(o) for r, o in self.cluster.items() if r.kind == msg.kind]
            outcomes = [self.session.reconcile(msg, live)]
        elif isinstance(msg, Batch):
            outcomes = [self._handle(item) for item in msg.unrolled()]
        else:
            outcomes = [self._handle(msg)]
        for out in outcomes:
            self.agent_errors.extend(out.errors)
            self._send(UP, out.send)
            for write in out.writes:
                self._write(write)

    def _handle(self, msg: Any) -> Any:
        live = self.cluster.get(msg.ref)
        return self.session.handle(msg, copy.deepcopy(live) if live is not None else None)

    def _write(self, write: ClusterWrite) -> None:
        self.writes.append(write)
        if write.object is None:
            self.cluster.pop(write.ref, None)
            return
        result = self._stamp(write.ref, write.object)
        self._send(UP, self.session.applied(write, result))

    # ------------------------------------------------------------ observations

    def names(self) -> list[str]:
        return [f"{d}:{type(m).__name__}" for d, m in self.trace]

    def clear_trace(self) -> None:
        self.trace.clear()

    def stored_doc(self, ref: ObjectRef) -> Any:
        return orjson.loads(self.store[ref].object)

    def assert_synced(self, ref: ObjectRef) -> None:
        live = self.cluster[ref]
        shaped = shape(ref.kind, live)
        assert self.stored_doc(ref) == shaped
        assert self.store[ref].checksum == checksum_of(live, shaped)

    def assert_healthy(self) -> None:
        assert self.dropped == []
        assert all(m.depth <= MAX_DEPTH for _, m in self.trace)
        assert self.agent_errors == []
        assert self.backend_errors == []


@pytest.fixture
def pair() -> Iterator[Pair]:
    p = Pair()
    yield p
    # Whatever a scenario does, no delivered message is ever deeper than the limit.
    assert all(0 < m.depth <= MAX_DEPTH for _, m in p.trace)


def pod(
    name: str = "web",
    namespace: str = "default",
    image: str = "nginx:1",
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {"app": name}},
        "spec": {
            "containers": [
                {"name": "app", "image": image, "env": [{"name": "TOKEN", "value": "s3cret"}]}
            ]
        },
    }


def deployment(name: str = "api", replicas: int = 1, token: str = "s3cret") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "template": {
                "spec": {
                    "containers": [
                        {"name": "app", "image": "api:1", "env": [{"name": "T", "value": token}]}
                    ]
                }
            },
        },
    }


def add_and_sync(pair: Pair, kind: Kind, obj: dict[str, Any]) -> tuple[ObjectRef, dict[str, Any]]:
    ref, live = pair.put_live(kind, obj)
    pair.watch(kind, WatchEvent.ADDED, live)
    pair.pump()
    return ref, live


# ================================================================== flow 1: added


def test_added_object_reaches_the_store(pair: Pair) -> None:
    ref, live = pair.put_live(PODS, pod())
    sent = pair.watch(PODS, WatchEvent.ADDED, live)
    assert [type(m) for m in sent] == [NewChecksum]
    pair.pump()
    assert pair.names() == ["up:NewChecksum", "down:GetObject", "up:PutObject"]
    assert [m.depth for _, m in pair.trace] == [1, 2, 3]
    assert len({m.msg_id for _, m in pair.trace}) == 1
    get = pair.trace[1][1]
    assert isinstance(get, GetObject)
    assert get.base_object is None
    pair.assert_synced(ref)
    assert pair.store[ref].checksum == checksum_of(live, shape(PODS, live))
    assert b"s3cret" not in pair.store[ref].object
    assert MASK.encode() in pair.store[ref].object
    assert ref in pair.session.shadows
    pair.assert_healthy()


def test_added_twice_is_quiet_the_second_time(pair: Pair) -> None:
    ref, live = add_and_sync(pair, PODS, pod())
    pair.clear_trace()
    pair.watch(PODS, WatchEvent.ADDED, live)
    pair.pump()
    assert pair.names() == ["up:NewChecksum"]
    pair.assert_synced(ref)


def test_filtered_objects_are_not_sent(pair: Pair) -> None:
    owned = pod("web-abc-1")
    owned["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet"}]
    _, live = pair.put_live(PODS, owned)
    assert pair.watch(PODS, WatchEvent.ADDED, live) == []
    assert pair.watch(PODS, WatchEvent.MODIFIED, live) == []
    _, cm = pair.put_live(SECRETS, {"kind": "Secret", "metadata": {"name": "s"}})
    assert pair.watch(SECRETS, WatchEvent.ADDED, cm) == []  # kind not synced
    assert pair.pump() == 0
    assert pair.store == {}


# ================================================================== modifications


def test_modified_with_shadow_sends_a_patch(pair: Pair) -> None:
    ref, live = add_and_sync(pair, PODS, pod())
    pair.clear_trace()
    changed = copy.deepcopy(live)
    changed["spec"]["containers"][0]["image"] = "nginx:2"
    _, live2 = pair.put_live(PODS, changed)
    sent = pair.watch(PODS, WatchEvent.MODIFIED, live2)
    pair.pump()
    # The modification shortcut: no checksum round trip, the change itself goes out.
    assert pair.names() == ["up:PatchObject"]
    assert isinstance(sent[0], PatchObject)
    assert sent[0].depth == 1
    patch = orjson.loads(sent[0].patch)
    assert set(patch) == {"metadata", "spec"}
    assert patch["metadata"] == {"resourceVersion": live2["metadata"]["resourceVersion"]}
    assert "TOKEN" in sent[0].patch.decode()  # containers is a list: replaced whole...
    assert b"s3cret" not in sent[0].patch  # ...but masked
    pair.assert_synced(ref)
    pair.assert_healthy()


def test_resource_version_only_change_is_skipped(pair: Pair) -> None:
    ref, live = add_and_sync(pair, PODS, pod())
    pair.clear_trace()
    _, live2 = pair.put_live(PODS, live)  # same content, new resourceVersion
    assert live2["metadata"]["resourceVersion"] != live["metadata"]["resourceVersion"]
    assert pair.watch(PODS, WatchEvent.MODIFIED, live2) == []
    assert pair.store[ref].checksum == checksum_of(live, shape(PODS, live))


def test_modification_shortcut_without_shadow_sends_whole_object(pair: Pair) -> None:
    # An agent that restarted knows nothing: the first MODIFIED goes out whole, no round trip.
    ref, live = pair.put_live(PODS, pod())
    sent = pair.watch(PODS, WatchEvent.MODIFIED, live)
    assert [type(m) for m in sent] == [PutObject]
    pair.pump()
    assert pair.names() == ["up:PutObject"]
    pair.assert_synced(ref)
    pair.assert_healthy()


def test_copy_strategy_always_sends_whole_objects(pair: Pair) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "a"}}
    ref, _ = add_and_sync(pair, CONFIGMAPS, cm)
    pair.clear_trace()
    cm["data"] = {"k": "v"}
    _, live2 = pair.put_live(CONFIGMAPS, cm)
    pair.watch(CONFIGMAPS, WatchEvent.MODIFIED, live2)
    pair.pump()
    assert pair.names() == ["up:PutObject"]
    assert ref not in pair.session.shadows
    pair.assert_synced(ref)
    pair.assert_healthy()


def test_corrupt_backend_copy_is_repaired_by_a_second_patch(pair: Pair) -> None:
    ref, live = add_and_sync(pair, PODS, pod())
    corrupt = pair.stored_doc(ref)
    corrupt["spec"]["containers"][0]["image"] = "evil:6"
    corrupt["metadata"]["labels"] = {"tampered": "yes"}
    corrupt["extra"] = {"x": 1}
    pair.store[ref] = StoredCopy(pair.store[ref].checksum, orjson.dumps(corrupt))
    pair.clear_trace()

    changed = copy.deepcopy(live)
    changed["metadata"]["labels"]["tier"] = "front"
    _, live2 = pair.put_live(PODS, changed)
    pair.watch(PODS, WatchEvent.MODIFIED, live2)
    pair.pump()
    assert pair.names() == ["up:PatchObject", "down:GetObject", "up:PatchObject"]
    assert [m.depth for _, m in pair.trace] == [1, 2, 3]
    get = pair.trace[1][1]
    assert isinstance(get, GetObject)
    assert get.base_object is not None
    assert orjson.loads(get.base_object) == corrupt
    pair.assert_synced(ref)
    assert "extra" not in pair.stored_doc(ref)
    pair.assert_healthy()


def test_corrupt_agent_shadow_is_repaired(pair: Pair) -> None:
    ref, live = add_and_sync(pair, PODS, pod())
    changed = copy.deepcopy(live)
    changed["spec"]["containers"][0]["image"] = "nginx:2"
    # The agent wrongly believes the backend already has the new image, with other labels.
    wrong = shape(PODS, changed)
    wrong["metadata"]["labels"] = {"stale": "yes"}
    pair.session.shadows[ref] = orjson.dumps(wrong)
    pair.clear_trace()

    _, live2 = pair.put_live(PODS, changed)
    pair.watch(PODS, WatchEvent.MODIFIED, live2)
    pair.pump()
    assert pair.names() == ["up:PatchObject", "down:GetObject", "up:PatchObject"]
    pair.assert_synced(ref)
    assert pair.stored_doc(ref)["spec"]["containers"][0]["image"] == "nginx:2"
    pair.assert_healthy()


def test_patch_for_an_object_the_backend_lacks(pair: Pair) -> None:
    ref, live = add_and_sync(pair, PODS, pod())
    del pair.store[ref]
    pair.clear_trace()
    changed = copy.deepcopy(live)
    changed["metadata"]["labels"]["v"] = "2"
    _, live2 = pair.put_live(PODS, changed)
    pair.watch(PODS, WatchEvent.MODIFIED, live2)
    pair.pump()
    assert pair.names() == ["up:PatchObject", "down:GetObject", "up:PutObject"]
    pair.assert_synced(ref)
    pair.assert_healthy()


def test_precomputed_checksum_annotation_with_patch_strategy(pair: Pair) -> None:
    obj = pod()
    obj["metadata"]["annotations"] = {CHECKSUM_ANNOTATION: "precomputed-1"}
    ref, live = add_and_sync(pair, PODS, obj)
    # Announced with the annotation, but the GetObject reply carries the canonical hash (Go).
    assert pair.trace[0][1].checksum == "precomputed-1"  # type: ignore[union-attr]
    assert pair.store[ref].checksum == canonical_checksum(shape(PODS, live))
    pair.clear_trace()
    changed = copy.deepcopy(live)
    changed["metadata"]["annotations"][CHECKSUM_ANNOTATION] = "precomputed-2"
    changed["spec"]["containers"][0]["image"] = "nginx:2"
    _, live2 = pair.put_live(PODS, changed)
    pair.watch(PODS, WatchEvent.MODIFIED, live2)
    pair.pump()
    # The patch must verify on the backend: its checksum is that of the patch result.
    assert pair.dropped == []
    assert pair.names() == ["up:PatchObject"]
    assert pair.stored_doc(ref) == shape(PODS, live2)
    assert pair.store[ref].checksum == canonical_checksum(shape(PODS, live2))


def test_bool_for_int_change_is_not_lost(pair: Pair) -> None:
    cm = {"kind": "Thing", "metadata": {"name": "t", "namespace": "default"}, "spec": {"on": 1}}
    ref, _ = add_and_sync(pair, PODS, cm)
    pair.clear_trace()
    cm["spec"]["on"] = True
    _, live2 = pair.put_live(PODS, cm)
    pair.watch(PODS, WatchEvent.MODIFIED, live2)
    pair.pump()
    assert pair.names() == ["up:PatchObject"]
    assert pair.stored_doc(ref)["spec"]["on"] is True
    pair.assert_synced(ref)
    pair.assert_healthy()


# ================================================================== deletes and recreation


def test_delete(pair: Pair) -> None:
    ref, _ = add_and_sync(pair, PODS, pod())
    pair.clear_trace()
    gone = pair.delete_live(ref)
    pair.watch(PODS, WatchEvent.DELETED, gone)
    pair.pump()
    assert pair.names() == ["up:ObjectDeleted"]
    assert ref not in pair.store
    assert ref not in pair.session.shadows
    pair.assert_healthy()


def test_recreate_with_new_uid(pair: Pair) -> None:
    ref, first = add_and_sync(pair, PODS, pod())
    gone = pair.delete_live(ref)
    pair.watch(PODS, WatchEvent.DELETED, gone)
    _, second = pair.put_live(PODS, pod(image="nginx:3"))
    assert second["metadata"]["uid"] != first["metadata"]["uid"]
    pair.watch(PODS, WatchEvent.ADDED, second)
    pair.pump()
    assert pair.stored_doc(ref)["metadata"]["uid"] == second["metadata"]["uid"]
    pair.assert_synced(ref)
    pair.assert_healthy()


def test_recreate_coalesced_into_added(pair: Pair) -> None:
    # deleted+added coalesce to added: the agent never saw the delete and keeps a stale shadow.
    ref, first = add_and_sync(pair, PODS, pod())
    pair.delete_live(ref)
    _, second = pair.put_live(PODS, pod())
    pair.clear_trace()
    pair.watch(PODS, WatchEvent.ADDED, second)
    pair.pump()
    assert pair.names() == ["up:NewChecksum", "down:GetObject", "up:PutObject"]
    assert pair.stored_doc(ref)["metadata"]["uid"] == second["metadata"]["uid"]
    assert pair.stored_doc(ref)["metadata"]["uid"] != first["metadata"]["uid"]
    pair.assert_synced(ref)
    # And the following modification patches against the new object.
    pair.clear_trace()
    second["metadata"]["labels"]["x"] = "y"
    _, third = pair.put_live(PODS, second)
    pair.watch(PODS, WatchEvent.MODIFIED, third)
    pair.pump()
    assert pair.names() == ["up:PatchObject"]
    pair.assert_synced(ref)
    pair.assert_healthy()


# ================================================================== flow 3: backend writes


def _backend_put(kind: Kind, obj: dict[str, Any]) -> PutObject:
    meta = reply_meta(None)
    ref = ObjectRef(kind, obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
    return PutObject(
        ref=ref, checksum="", object=orjson.dumps(obj), depth=meta.depth, msg_id=meta.msg_id
    )


def test_backend_creates_an_object(pair: Pair) -> None:
    msg = _backend_put(DEPLOYMENTS, deployment("new", replicas=2, token="from-ui"))
    ref = msg.ref
    pair.backend_write(msg)
    assert ref in pair.store  # stored before delivery
    pair.pump()
    assert pair.names() == ["down:PutObject", "up:PatchObject"]
    assert [m.depth for _, m in pair.trace] == [1, 2]
    live = pair.cluster[ref]
    assert live["metadata"]["uid"]
    assert live["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] == "from-ui"
    # applied() reported the cluster's additions back: the store has uid and resourceVersion.
    stored = pair.stored_doc(ref)
    assert stored["metadata"]["uid"] == live["metadata"]["uid"]
    assert stored["metadata"]["resourceVersion"] == live["metadata"]["resourceVersion"]
    assert pair.store[ref].checksum == checksum_of(live, shape(DEPLOYMENTS, live))
    pair.assert_synced(ref)
    pair.assert_healthy()

    # No echo: the watch events for this very write produce nothing new.
    pair.clear_trace()
    assert pair.watch(DEPLOYMENTS, WatchEvent.MODIFIED, live) == []
    pair.watch(DEPLOYMENTS, WatchEvent.ADDED, live)
    pair.pump()
    assert pair.names() == ["up:NewChecksum"]  # verified equal, nothing else
    assert len(pair.writes) == 1
    pair.assert_synced(ref)


def test_backend_updates_a_masked_object(pair: Pair) -> None:
    ref, live = add_and_sync(pair, DEPLOYMENTS, deployment(replicas=1, token="real-secret"))
    edited = pair.stored_doc(ref)
    assert edited["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] == MASK
    edited["spec"]["replicas"] = 5
    pair.clear_trace()
    pair.backend_write(_backend_put(DEPLOYMENTS, edited))
    pair.pump()
    assert pair.names() == ["down:PutObject", "up:PatchObject"]
    live = pair.cluster[ref]
    assert live["spec"]["replicas"] == 5
    # The masked value was restored from the live object, never written as the mask.
    assert live["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] == "real-secret"
    pair.assert_synced(ref)
    pair.assert_healthy()
    assert pair.watch(DEPLOYMENTS, WatchEvent.MODIFIED, live) == []


def test_backend_write_with_unknown_mask_is_refused(pair: Pair) -> None:
    obj = deployment("fresh", token=MASK)
    msg = _backend_put(DEPLOYMENTS, obj)
    pair.backend_write(msg)
    pair.pump()
    assert msg.ref not in pair.cluster
    assert [reason for reason, _ in pair.agent_errors] == ["masked_value"]
    # The agent tells the backend the cluster has no such object, so the store forgets it.
    assert pair.names() == ["down:PutObject", "up:ObjectDeleted"]
    assert msg.ref not in pair.store


@pytest.mark.parametrize(
    ("policy", "namespace"),
    [
        (WritePolicy(kinds=frozenset({PODS})), "default"),
        (WritePolicy(namespaces=frozenset({"other"})), "default"),
        (WritePolicy(verbs=frozenset({Verb.UPDATE, Verb.DELETE})), "default"),
        (WritePolicy(), "kube-system"),
    ],
)
def test_backend_write_refused_by_policy(policy: WritePolicy, namespace: str) -> None:
    pair = Pair(
        rules=NamespaceRules(operator_namespace=OPERATOR, exclude=frozenset({"kube-system"})),
        policy=policy,
    )
    obj = deployment("d")
    obj["metadata"]["namespace"] = namespace
    msg = _backend_put(DEPLOYMENTS, obj)
    pair.backend_write(msg)
    pair.pump()
    assert pair.cluster == {}
    assert [reason for reason, _ in pair.agent_errors] == ["write_refused"]
    assert pair.writes == []


def test_backend_write_namespace_must_match_the_message(pair: Pair) -> None:
    pair.session.write_policy = WritePolicy(namespaces=frozenset({"default"}))
    obj = deployment("d")
    obj["metadata"]["namespace"] = "kube-system"
    msg = _backend_put(DEPLOYMENTS, obj)
    msg = PutObject(
        ref=ObjectRef(DEPLOYMENTS, "default", "d"),
        checksum="",
        object=msg.object,
        depth=msg.depth,
        msg_id=msg.msg_id,
    )
    pair.backend_write(msg)
    out = pair.session.handle(pair.to_agent.popleft(), None)
    assert out.writes == []
    assert [reason for reason, _ in out.errors] == ["bad_object"]


def test_backend_write_of_unknown_kind(pair: Pair) -> None:
    obj = {"kind": "Secret", "metadata": {"name": "s", "namespace": "default"}}
    msg = _backend_put(SECRETS, obj)
    pair.backend_write(msg)
    pair.pump()
    assert pair.cluster == {}
    assert [reason for reason, _ in pair.agent_errors] == ["unknown_kind"]
    # The backend stored the write; the agent, which never syncs the kind, has it dropped.
    assert pair.names() == ["down:PutObject", "up:ObjectDeleted"]
    assert msg.ref not in pair.store


def test_copy_strategy_backend_write(pair: Pair) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "a"}}
    msg = _backend_put(CONFIGMAPS, cm)
    pair.backend_write(msg)
    pair.pump()
    assert pair.names() == ["down:PutObject", "up:PutObject"]
    pair.assert_synced(msg.ref)
    pair.assert_healthy()


# ================================================================== flow 4: backend deletes


def test_backend_deletes_an_object(pair: Pair) -> None:
    ref, _ = add_and_sync(pair, PODS, pod())
    pair.clear_trace()
    meta = reply_meta(None)
    pair.backend_write(ObjectDeleted(ref=ref, depth=meta.depth, msg_id=meta.msg_id))
    assert ref not in pair.store
    pair.pump()
    assert pair.names() == ["down:ObjectDeleted"]
    assert ref not in pair.cluster
    assert ref not in pair.session.shadows
    assert pair.writes[-1].object is None
    pair.assert_healthy()


def test_backend_delete_refused_by_policy() -> None:
    pair = Pair(policy=WritePolicy(verbs=frozenset({Verb.CREATE, Verb.UPDATE})))
    ref, _ = add_and_sync(pair, PODS, pod())
    pair.backend_write(ObjectDeleted(ref=ref, depth=1, msg_id="m"))
    pair.pump()
    assert ref in pair.cluster
    assert [reason for reason, _ in pair.agent_errors] == ["write_refused"]


# ================================================================== reconciliation


def test_reconciliation_repairs_every_difference(pair: Pair) -> None:
    in_sync, _ = add_and_sync(pair, PODS, pod("in-sync"))
    changed, live = add_and_sync(pair, PODS, pod("changed"))
    extra, _ = add_and_sync(pair, PODS, pod("backend-only"))
    other_kind, _ = add_and_sync(pair, CONFIGMAPS, {"kind": "ConfigMap", "metadata": {"name": "c"}})
    # Drift the agent never reported: a change, a delete, a create.
    live["spec"]["containers"][0]["image"] = "nginx:9"
    pair.put_live(PODS, live)
    pair.delete_live(extra)
    missing, _ = pair.put_live(PODS, pod("cluster-only"))
    filtered = pod("web-abc-1")
    filtered["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet"}]
    pair.put_live(PODS, filtered)
    pair.clear_trace()

    pair.reconcile()
    pair.pump()
    up = sorted((type(m).__name__, m.ref.name) for d, m in pair.trace if d == UP and m.depth == 2)
    assert up == [
        ("ObjectDeleted", "backend-only"),
        ("PutObject", "changed"),
        ("PutObject", "cluster-only"),
    ]
    pods = {r for r in pair.cluster if r.kind == PODS and r.name != "web-abc-1"}
    assert {r for r in pair.store if r.kind == PODS} == pods
    for ref in (in_sync, changed, missing, other_kind):
        pair.assert_synced(ref)
    pair.assert_healthy()

    # A second reconciliation finds nothing to do.
    pair.clear_trace()
    pair.reconcile()
    pair.pump()
    assert pair.names() == ["down:Batch", "down:Batch"]


def test_reconciliation_with_empty_inventory_sends_everything(pair: Pair) -> None:
    ref, _ = pair.put_live(PODS, pod())
    pair.reconcile(kinds=(PODS,))
    pair.pump()
    assert pair.names() == ["down:Batch", "up:PutObject"]
    pair.assert_synced(ref)
    pair.assert_healthy()


def test_reconciliation_of_unsynced_kind_deletes_nothing(pair: Pair) -> None:
    ref = ObjectRef(SECRETS, "default", "s")
    pair.store[ref] = StoredCopy("c", b'{"kind":"Secret","metadata":{"name":"s"}}')
    pair.reconcile()
    pair.pump()
    assert pair.names() == ["down:Batch"]
    assert [reason for reason, _ in pair.agent_errors] == ["unknown_kind"]
    assert ref in pair.store


def test_backend_announcement_makes_the_agent_fetch(pair: Pair) -> None:
    # A backend NewChecksum for an object the cluster lacks: the agent asks for it and writes it.
    obj = pod("from-backend")
    obj["spec"]["containers"][0]["env"] = []
    ref = ObjectRef(PODS, "default", "from-backend")
    pair.store[ref] = StoredCopy(canonical_checksum(obj), orjson.dumps(obj))
    pair._send(DOWN, [NewChecksum(ref=ref, checksum=pair.store[ref].checksum, depth=1, msg_id="m")])
    pair.pump()
    assert pair.names() == [
        "down:NewChecksum",
        "up:GetObject",
        "down:PutObject",
        "up:PatchObject",
    ]
    assert ref in pair.cluster
    pair.assert_synced(ref)
    pair.assert_healthy()


# ================================================================== depth


def test_endless_chain_is_cut_at_max_depth(pair: Pair) -> None:
    # A peer whose patch checksums never verify would ping-pong forever; depth cuts it.
    ref, live = add_and_sync(pair, PODS, pod())
    pair.tamper = lambda m: (
        dataclasses.replace(m, checksum="0" * 64) if isinstance(m, PatchObject) else m
    )
    pair.clear_trace()
    live["metadata"]["labels"]["x"] = "1"
    _, live2 = pair.put_live(PODS, live)
    pair.watch(PODS, WatchEvent.MODIFIED, live2)
    steps = pair.pump(max_steps=50)
    assert steps <= MAX_DEPTH
    assert [m.depth for _, m in pair.trace] == list(range(1, MAX_DEPTH + 1))
    assert [type(m) for _, m in pair.trace] == [PatchObject, GetObject] * (MAX_DEPTH // 2)
    assert pair.dropped == [(UP, MAX_DEPTH + 1)]  # the agent's 9th reply never arrives
    assert len({m.msg_id for _, m in pair.trace}) == 1
    assert pair.stored_doc(ref) != shape(PODS, live2)  # left for reconciliation to repair
    pair.tamper = None
    pair.clear_trace()
    pair.dropped.clear()
    pair.reconcile()
    pair.pump()
    pair.assert_synced(ref)
    pair.assert_healthy()


def test_depth_stays_bounded_across_scenarios() -> None:
    pair = Pair()
    refs = []
    for i in range(5):
        ref, _ = add_and_sync(pair, PODS, pod(f"p{i}"))
        refs.append(ref)
    for i, ref in enumerate(refs):
        live = copy.deepcopy(pair.cluster[ref])
        live["metadata"]["labels"]["round"] = str(i)
        if i % 2:
            doc = pair.stored_doc(ref)
            doc["junk"] = i
            pair.store[ref] = StoredCopy("bogus", orjson.dumps(doc))
        _, live2 = pair.put_live(PODS, live)
        pair.watch(PODS, WatchEvent.MODIFIED, live2)
    pair.reconcile()
    pair.pump()
    for ref in refs:
        pair.assert_synced(ref)
    assert max(m.depth for _, m in pair.trace) <= 4
    pair.assert_healthy()


@pytest.mark.parametrize("extra", [{"note": "plain"}, {"note": None}], ids=["no-null", "null"])
def test_a_patch_carries_the_checksum_of_its_result(pair: Pair, extra: dict[str, Any]) -> None:
    # Without a null the result is the shaped object and its known hash is reused; with one the
    # result lacks that key (a merge patch cannot carry a null), so the hash must be the result's.
    from clustersync.protocol.mergepatch import apply_patch

    ref, live = add_and_sync(pair, PODS, pod())
    base = orjson.loads(pair.session.shadows[ref])
    changed = copy.deepcopy(live)
    changed["spec"]["containers"][0]["image"] = "nginx:3"
    changed["spec"]["extra"] = extra
    _, live2 = pair.put_live(PODS, changed)
    sent = pair.watch(PODS, WatchEvent.MODIFIED, live2)
    assert isinstance(sent[0], PatchObject)
    result = apply_patch(base, orjson.loads(sent[0].patch))
    assert sent[0].checksum == canonical_checksum(result)
    pair.pump()
    assert pair.store[ref].checksum == sent[0].checksum  # the backend verified and kept it
