"""Single decisions of the agent and backend modules, one message at a time."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import orjson
import pytest

from clustersync.model import Kind, ObjectRef
from clustersync.protocol.agent import AgentSession
from clustersync.protocol.agent_types import (
    ClusterWrite,
    Strategy,
    WatchEvent,
    WritePolicy,
    checksum_of,
)
from clustersync.protocol.backend import (
    Remove,
    StoredCopy,
    Upsert,
    UpsertText,
    backend_write,
    bridge_hop,
    decide,
    decide_all,
    identity_of,
    reconciliation_batches,
)
from clustersync.protocol.checksum import CHECKSUM_ANNOTATION, canonical_checksum
from clustersync.protocol.codec import encode
from clustersync.protocol.fields import resource_version_number
from clustersync.protocol.mergepatch import apply_patch, create_patch
from clustersync.protocol.messages import (
    BATCH_RECONCILIATION,
    Batch,
    GetObject,
    NewChecksum,
    ObjectDeleted,
    PatchObject,
    Ping,
    PutObject,
)
from clustersync.protocol.shaping import MASK, NamespaceRules, shape

PODS = Kind.parse("/v1/pods")
CONFIGMAPS = Kind.parse("/v1/configmaps")
SECRETS = Kind.parse("/v1/secrets")
REF = ObjectRef(PODS, "default", "web")
CM_REF = ObjectRef(CONFIGMAPS, "default", "cfg")


def live_pod(image: str = "nginx:1", rv: str = "10") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "uid": "u1", "resourceVersion": rv},
        "spec": {
            "containers": [{"name": "c", "image": image, "env": [{"name": "T", "value": "s"}]}]
        },
    }


def live_cm(data: str = "1") -> dict[str, Any]:
    return {
        "kind": "ConfigMap",
        "metadata": {"name": "cfg", "namespace": "default"},
        "data": {"k": data},
    }


def session(**kwargs: Any) -> AgentSession:
    return AgentSession(
        {PODS: Strategy.PATCH, CONFIGMAPS: Strategy.COPY},
        NamespaceRules(operator_namespace="kubescape"),
        **kwargs,
    )


def checksum(obj: dict[str, Any]) -> str:
    return checksum_of(obj, shape(PODS, obj))


# ================================================================== agent: watch events


def test_added_sends_new_checksum_with_fresh_id() -> None:
    s = session()
    a = s.local_change(PODS, WatchEvent.ADDED, live_pod())
    b = s.local_change(PODS, WatchEvent.ADDED, live_pod())
    assert [type(m) for m in a] == [NewChecksum]
    assert isinstance(a[0], NewChecksum)
    assert a[0].ref == REF
    assert a[0].checksum == checksum(live_pod())
    assert a[0].depth == 1
    assert a[0].msg_id and a[0].msg_id != b[0].msg_id
    assert s.shadows == {}


def test_modified_without_shadow_is_a_put_and_keeps_a_shadow() -> None:
    s = session()
    (msg,) = s.local_change(PODS, WatchEvent.MODIFIED, live_pod())
    assert isinstance(msg, PutObject)
    assert orjson.loads(msg.object) == shape(PODS, live_pod())
    assert msg.checksum == checksum(live_pod())
    assert orjson.loads(s.shadows[REF]) == shape(PODS, live_pod())


def test_modified_with_shadow_is_a_patch_whose_checksum_is_the_result() -> None:
    s = session()
    s.local_change(PODS, WatchEvent.MODIFIED, live_pod())
    base = orjson.loads(s.shadows[REF])
    (msg,) = s.local_change(PODS, WatchEvent.MODIFIED, live_pod("nginx:2", rv="11"))
    assert isinstance(msg, PatchObject)
    result = apply_patch(base, orjson.loads(msg.patch))
    assert result == shape(PODS, live_pod("nginx:2", rv="11"))
    assert msg.checksum == canonical_checksum(result)


def test_modified_with_null_value_checksums_the_patch_result() -> None:
    s = session()
    s.local_change(PODS, WatchEvent.MODIFIED, live_pod())
    changed = live_pod(rv="11")
    changed["spec"]["nodeName"] = None  # cannot travel in a merge patch
    (msg,) = s.local_change(PODS, WatchEvent.MODIFIED, changed)
    assert isinstance(msg, PatchObject)
    result = apply_patch(shape(PODS, live_pod()), orjson.loads(msg.patch))
    assert "nodeName" not in result["spec"]
    assert msg.checksum == canonical_checksum(result)
    assert msg.checksum != checksum(changed)


@pytest.mark.parametrize("rv", ["10", "11"])
def test_empty_or_rv_only_patch_is_skipped(rv: str) -> None:
    s = session()
    s.local_change(PODS, WatchEvent.MODIFIED, live_pod())
    shadow = s.shadows[REF]
    assert s.local_change(PODS, WatchEvent.MODIFIED, live_pod(rv=rv)) == []
    assert s.shadows[REF] == shadow  # the old shadow is kept


def test_copy_strategy_modified_is_a_put_without_a_shadow() -> None:
    s = session()
    first, second = live_cm(), live_cm()
    second["data"] = {"changed": "yes"}
    for obj in (first, second):
        (msg,) = s.local_change(CONFIGMAPS, WatchEvent.MODIFIED, obj)
        assert isinstance(msg, PutObject)
        assert orjson.loads(msg.object)["data"] == obj["data"]
    assert s.shadows == {}


def test_copy_strategy_does_not_repeat_an_identical_put() -> None:
    # The watch event of an object the agent itself just wrote and reported must not echo.
    s = session()
    (msg,) = s.local_change(CONFIGMAPS, WatchEvent.MODIFIED, live_cm())
    assert isinstance(msg, PutObject)
    assert s.local_change(CONFIGMAPS, WatchEvent.MODIFIED, live_cm()) == []


def test_deleted_drops_the_shadow() -> None:
    s = session()
    s.local_change(PODS, WatchEvent.MODIFIED, live_pod())
    (msg,) = s.local_change(PODS, WatchEvent.DELETED, live_pod())
    assert msg == ObjectDeleted(ref=REF, depth=1, msg_id=msg.msg_id)
    assert REF not in s.shadows


def test_unsynced_and_filtered_objects_are_ignored() -> None:
    s = session()
    secret = {"kind": "Secret", "metadata": {"name": "x", "namespace": "default"}}
    assert s.local_change(SECRETS, WatchEvent.ADDED, secret) == []
    owned = live_pod()
    owned["metadata"]["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "Job"}]
    for event in WatchEvent:
        assert s.local_change(PODS, event, owned) == []


# ================================================================== agent: backend messages


def test_new_checksum_equal_is_quiet() -> None:
    msg = NewChecksum(ref=REF, checksum=checksum(live_pod()), depth=1, msg_id="m")
    out = session().handle(msg, live_pod())
    assert (out.send, out.writes, out.errors) == ([], [], [])


@pytest.mark.parametrize("live", [None, live_pod("other")])
def test_new_checksum_missing_or_different_asks_for_the_object(live: Any) -> None:
    msg = NewChecksum(ref=REF, checksum=checksum(live_pod()), depth=3, msg_id="m")
    out = session().handle(msg, live)
    assert out.send == [GetObject(ref=REF, depth=4, msg_id="m")]


def test_get_without_base_sends_the_whole_object() -> None:
    s = session()
    s.shadows[REF] = b'{"stale": true}'
    out = s.handle(GetObject(ref=REF, depth=2, msg_id="m"), live_pod())
    (msg,) = out.send
    assert isinstance(msg, PutObject)
    assert (msg.depth, msg.msg_id) == (3, "m")
    assert orjson.loads(msg.object) == shape(PODS, live_pod())
    assert orjson.loads(s.shadows[REF]) == shape(PODS, live_pod())


def test_get_with_base_replaces_the_shadow_and_patches_against_it() -> None:
    s = session()
    s.shadows[REF] = orjson.dumps(shape(PODS, live_pod()))
    base = shape(PODS, live_pod("old"))
    base["junk"] = 1
    out = s.handle(
        GetObject(ref=REF, base_object=orjson.dumps(base), depth=2, msg_id="m"), live_pod()
    )
    (msg,) = out.send
    assert isinstance(msg, PatchObject)
    result = apply_patch(base, orjson.loads(msg.patch))
    assert result == shape(PODS, live_pod())
    assert msg.checksum == canonical_checksum(result)
    assert orjson.loads(s.shadows[REF]) == shape(PODS, live_pod())


def test_get_with_base_equal_to_live_still_answers() -> None:
    s = session()
    base = orjson.dumps(shape(PODS, live_pod()))
    (msg,) = s.handle(GetObject(ref=REF, base_object=base, depth=2, msg_id="m"), live_pod()).send
    assert isinstance(msg, PatchObject)
    assert orjson.loads(msg.patch) == {}


def test_get_with_base_for_copy_strategy_sends_the_whole_object() -> None:
    base = orjson.dumps(live_cm("0"))
    out = session().handle(GetObject(ref=CM_REF, base_object=base, depth=2, msg_id="m"), live_cm())
    assert [type(m) for m in out.send] == [PutObject]


def test_get_for_missing_object_reports_it_deleted() -> None:
    s = session()
    s.shadows[REF] = b"{}"
    out = s.handle(GetObject(ref=REF, depth=2, msg_id="m"), None)
    assert out.send == [ObjectDeleted(ref=REF, depth=3, msg_id="m")]
    assert REF not in s.shadows


def test_put_becomes_a_cluster_write() -> None:
    obj = live_pod("nginx:9")
    obj["spec"]["containers"][0]["env"][0]["value"] = MASK
    msg = PutObject(ref=REF, checksum="c", object=orjson.dumps(obj), depth=1, msg_id="m")
    out = session().handle(msg, live_pod())
    assert out.send == []
    (write,) = out.writes
    assert isinstance(write, ClusterWrite)
    assert write.ref == REF
    assert write.cause == msg
    assert write.backend_copy == msg.object
    assert write.object is not None
    assert write.object["spec"]["containers"][0]["image"] == "nginx:9"
    assert write.object["spec"]["containers"][0]["env"][0]["value"] == "s"  # unmasked


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        ([1, 2], "bad_object"),
        ({"kind": "Pod"}, "bad_object"),
        ({"kind": "Pod", "metadata": {"name": "other"}}, "bad_object"),
        ({"kind": "Pod", "metadata": {"name": "web", "namespace": "kube-system"}}, "bad_object"),
    ],
)
def test_put_with_bad_object_is_refused(obj: Any, reason: str) -> None:
    msg = PutObject(ref=REF, checksum="c", object=orjson.dumps(obj), depth=1, msg_id="m")
    out = session().handle(msg, None)
    assert out.writes == []
    assert [r for r, _ in out.errors] == [reason]


def test_backend_refuses_a_bad_object_alone_and_stores_the_rest_of_its_batch() -> None:
    # Payloads reach decide_all unparsed (the ingester decodes with check_payloads=False).
    refs = [ObjectRef(PODS, "default", name) for name in ("a", "b", "c")]
    bodies = [b'{"metadata":{"name":"a","uid":"ua"}}', b'{"metadata":', b'{"metadata":{}}']
    puts = tuple(
        PutObject(ref=ref, checksum="c", object=body, depth=1, msg_id="m")
        for ref, body in zip(refs, bodies, strict=True)
    )
    first, bad, third = decide_all(Batch(kind=PODS, put_object=puts, depth=1), {})
    assert first.change == Upsert(refs[0], bodies[0], "c", "ua", "")
    assert bad.change is None and bad.send == []
    assert [reason for reason, _ in bad.errors] == ["bad_object"]
    assert str(refs[1]) in bad.errors[0][1]
    assert third.change == Upsert(refs[2], bodies[2], "c", "", "")


def test_a_store_that_parses_gets_puts_with_checksums_unparsed() -> None:
    refs = [ObjectRef(PODS, "default", name) for name in ("a", "b", "c", "d")]
    bodies = [b'{"metadata":{"uid":"ua"}}', b'{"metadata":', b'{"metadata":{"uid":"uc"}}',
              b"[1, 2]"]  # fmt: skip
    checksums = ["c", "c", "", "c"]
    puts = tuple(
        PutObject(ref=ref, checksum=checksum, object=body, depth=1, msg_id="m")
        for ref, body, checksum in zip(refs, bodies, checksums, strict=True)
    )
    first, second, third, fourth = decide_all(
        Batch(kind=PODS, put_object=puts, depth=1), {}, store_parses=True
    )
    # Not parsed here: even the malformed one goes to the store, which refuses it.
    assert first.change == UpsertText(refs[0], bodies[0], "c")
    assert second.change == UpsertText(refs[1], bodies[1], "c") and second.errors == []
    # Without a checksum the object is parsed to compute one; what cannot be an object
    # ("[" first) is parsed to be refused here.
    expected = canonical_checksum({"metadata": {"uid": "uc"}})
    assert third.change == Upsert(refs[2], bodies[2], expected, "uc", "")
    assert fourth.change is None
    assert [reason for reason, _ in fourth.errors] == ["bad_object"]


def test_only_strings_in_metadata_are_an_objects_identity() -> None:
    body = b'{"metadata":{"uid":7,"resourceVersion":"12"}}'
    msg = PutObject(ref=REF, checksum="c", object=body, depth=1, msg_id="m")
    (decision,) = decide_all(msg, {})
    assert decision.change == Upsert(REF, body, "c", "", "12")
    assert identity_of({"metadata": {"uid": "u", "resourceVersion": 3}}) == ("u", "")
    assert identity_of({"metadata": "x"}) == ("", "")


def test_backend_refuses_a_patch_that_is_not_json_without_asking_for_a_base() -> None:
    stored = StoredCopy("old", orjson.dumps(live_pod()))
    msg = PatchObject(ref=REF, checksum="c", patch=b'{"spec":', depth=1, msg_id="m")
    out = decide(msg, stored)
    assert out.change is None
    assert out.send == []
    assert [reason for reason, _ in out.errors] == ["bad_patch"]


def test_put_without_namespace_in_object_uses_the_message() -> None:
    obj = {"kind": "Pod", "metadata": {"name": "web"}}
    msg = PutObject(ref=REF, checksum="c", object=orjson.dumps(obj), depth=1, msg_id="m")
    (write,) = session().handle(msg, None).writes
    assert write.ref == REF


def test_put_refused_when_policy_forbids_the_kind() -> None:
    s = session(write_policy=WritePolicy(kinds=frozenset({CONFIGMAPS})))
    msg = PutObject(ref=REF, checksum="c", object=orjson.dumps(live_pod()), depth=1, msg_id="m")
    out = s.handle(msg, None)
    assert out.writes == []
    assert [r for r, _ in out.errors] == ["write_refused"]


def test_unknown_kind_records_an_error_and_sends_nothing() -> None:
    ref = ObjectRef(SECRETS, "default", "x")
    # Replies in a chain (depth 2 and more); a backend write of an unknown kind is in
    # test_write_refusals.py.
    for msg in (
        NewChecksum(ref=ref, checksum="c", depth=1, msg_id="m"),
        GetObject(ref=ref, depth=1, msg_id="m"),
        PutObject(ref=ref, checksum="c", object=b'{"metadata":{"name":"x"}}', depth=3, msg_id="m"),
        ObjectDeleted(ref=ref, depth=3, msg_id="m"),
    ):
        out = session().handle(msg, None)
        assert out.send == []
        assert out.writes == []
        assert [r for r, _ in out.errors] == ["unknown_kind"]


def test_ping_and_batches_via_handle() -> None:
    s = session()
    out = s.handle(Ping(depth=1, msg_id="p"), None)
    assert (out.send, out.writes, out.errors) == ([], [], [])
    out = s.handle(Batch(kind=PODS, batch_type=BATCH_RECONCILIATION), None)
    assert [r for r, _ in out.errors] == ["bad_batch"]


def test_patch_from_backend_verified_and_written() -> None:
    target = shape(PODS, live_pod("nginx:7"))
    patch = {"spec": target["spec"]}
    msg = PatchObject(
        ref=REF,
        checksum=canonical_checksum(apply_patch(shape(PODS, live_pod()), patch)),
        patch=orjson.dumps(patch),
        depth=1,
        msg_id="m",
    )
    (write,) = session().handle(msg, live_pod()).writes
    assert write.object is not None
    assert write.object["spec"]["containers"][0]["image"] == "nginx:7"
    assert write.object["spec"]["containers"][0]["env"][0]["value"] == "s"


@pytest.mark.parametrize(
    ("ref", "live", "checksum_ok"),
    [(REF, live_pod(), False), (REF, None, True), (CM_REF, live_cm(), True)],
)
def test_patch_from_backend_that_cannot_apply_asks_for_the_object(
    ref: ObjectRef, live: Any, checksum_ok: bool
) -> None:
    patch = {"metadata": {"labels": {"a": "b"}}}
    base = shape(ref.kind, live) if live else {}
    good = canonical_checksum(apply_patch(base, patch))
    msg = PatchObject(
        ref=ref,
        checksum=good if checksum_ok else "0" * 64,
        patch=orjson.dumps(patch),
        depth=4,
        msg_id="m",
    )
    out = session().handle(msg, live)
    assert out.send == [GetObject(ref=ref, depth=5, msg_id="m")]
    assert out.writes == []


def test_delete_from_backend() -> None:
    s = session()
    s.shadows[REF] = b"{}"
    msg = ObjectDeleted(ref=REF, depth=1, msg_id="m")
    out = s.handle(msg, live_pod())
    assert out.writes == [ClusterWrite(REF, None, msg)]
    assert REF not in s.shadows


def test_applied_ignores_filtered_results() -> None:
    s = session()
    obj = live_pod()
    obj["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet"}]
    msg = PutObject(ref=REF, checksum="c", object=orjson.dumps(obj), depth=1, msg_id="m")
    (write,) = s.handle(msg, None).writes
    assert s.applied(write, obj) == []


# ================================================================== agent: reconciliation


def test_reconcile_rejects_other_batch_types_and_unsynced_kinds() -> None:
    s = session()
    inventory = (NewChecksum(ref=REF, checksum="c"),)
    out = s.reconcile(Batch(kind=PODS, batch_type="", new_checksum=inventory), [])
    assert out.send == []
    assert [r for r, _ in out.errors] == ["bad_batch"]
    secret_ref = ObjectRef(SECRETS, "default", "x")
    batch = Batch(
        kind=SECRETS,
        batch_type=BATCH_RECONCILIATION,
        new_checksum=(NewChecksum(ref=secret_ref, checksum="c"),),
    )
    out = s.reconcile(batch, [])
    assert out.send == []
    assert [r for r, _ in out.errors] == ["unknown_kind"]


def test_reconcile_decisions() -> None:
    s = session()
    same = live_pod()
    changed = copy.deepcopy(live_pod())
    changed["metadata"]["name"] = "changed"
    new = copy.deepcopy(live_pod())
    new["metadata"]["name"] = "new"
    filtered = copy.deepcopy(live_pod())
    filtered["metadata"]["name"] = "owned"
    filtered["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet"}]

    def ref(name: str) -> ObjectRef:
        return ObjectRef(PODS, "default", name)

    s.shadows[ref("changed")] = b'{"old": 1}'
    batch = Batch(
        kind=PODS,
        batch_type=BATCH_RECONCILIATION,
        new_checksum=(
            NewChecksum(ref=REF, checksum=checksum(same)),
            NewChecksum(ref=ref("changed"), checksum="stale"),
            NewChecksum(ref=ref("gone"), checksum="x"),
            NewChecksum(ref=ref("owned"), checksum="y"),
        ),
        depth=1,
        msg_id="r",
    )
    out = s.reconcile(batch, [same, changed, new, filtered])
    got = sorted((type(m).__name__, m.ref.name, m.depth, m.msg_id) for m in out.send)
    # What the backend lacks or holds differently is sent whole: no checksum round trip.
    assert got == [
        ("ObjectDeleted", "gone", 2, "r"),
        ("ObjectDeleted", "owned", 2, "r"),
        ("PutObject", "changed", 2, "r"),
        ("PutObject", "new", 2, "r"),
    ]
    assert orjson.loads(s.shadows[ref("changed")]) == shape(PODS, changed)


def test_reconcile_in_steps_bounds_each_piece_and_asks_before_deleting() -> None:
    pods = []
    for n in range(25):
        pod = copy.deepcopy(live_pod())
        pod["metadata"]["name"] = f"p{n}"
        pods.append(pod)
    batch = Batch(
        kind=PODS,
        batch_type=BATCH_RECONCILIATION,
        new_checksum=(
            NewChecksum(ref=ObjectRef(PODS, "default", "gone"), checksum="x"),
            NewChecksum(ref=ObjectRef(PODS, "default", "appeared-meanwhile"), checksum="y"),
        ),
    )
    walked: list[str] = []

    def walk() -> Any:
        for pod in pods:
            walked.append(pod["metadata"]["name"])
            yield pod

    steps = session().reconcile_steps(
        batch, walk(), step=10, still_absent=lambda ref: ref.name != "appeared-meanwhile"
    )
    first = next(steps)
    # Lazy: the first piece is ready before the walk has gone past it.
    assert len(walked) == 10
    rest = list(steps)
    sizes = [len(piece.send) for piece in (first, *rest)]
    assert all(size <= 10 for size in sizes[:-1])
    names = [m.ref.name for piece in (first, *rest) for m in piece.send]
    assert sorted(names) == sorted([f"p{n}" for n in range(25)] + ["gone"])
    deleted = [m.ref.name for piece in rest for m in piece.send if isinstance(m, ObjectDeleted)]
    assert deleted == ["gone"]  # "appeared-meanwhile" is in the cluster by now


# ================================================================== backend


STORED = StoredCopy(checksum(live_pod()), orjson.dumps(shape(PODS, live_pod())))


def test_backend_new_checksum() -> None:
    equal = NewChecksum(ref=REF, checksum=STORED.checksum, depth=1, msg_id="m")
    assert decide(equal, STORED).send == []
    assert decide(equal, STORED).change is None
    different = NewChecksum(ref=REF, checksum="other", depth=1, msg_id="m")
    assert decide(different, STORED).send == [GetObject(ref=REF, depth=2, msg_id="m")]
    assert decide(equal, None).send == [GetObject(ref=REF, depth=2, msg_id="m")]


def test_backend_put_is_an_upsert() -> None:
    msg = PutObject(ref=REF, checksum="c", object=orjson.dumps(live_pod()), depth=3, msg_id="m")
    d = decide(msg, None)
    assert d.change == Upsert(REF, msg.object, "c", "u1", "10")
    assert d.send == []
    no_checksum = PutObject(ref=REF, checksum="", object=msg.object, depth=3, msg_id="m")
    change = decide(no_checksum, STORED).change
    assert isinstance(change, Upsert)
    assert change.checksum == canonical_checksum(live_pod())


def test_backend_put_of_non_object() -> None:
    d = decide(PutObject(ref=REF, checksum="c", object=b"[1]", depth=1, msg_id="m"), None)
    assert d.change is None
    assert [r for r, _ in d.errors] == ["bad_object"]


def test_backend_patch_without_stored_copy_offers_an_empty_base() -> None:
    msg = PatchObject(ref=REF, checksum="c", patch=b"{}", depth=1, msg_id="m")
    assert decide(msg, None).send == [GetObject(ref=REF, base_object=b"{}", depth=2, msg_id="m")]


def test_a_kubescape_agent_with_a_shadow_recovers_a_missing_stored_copy_in_one_round() -> None:
    # kubescape's agent answers a GetObject by patching against the base it is given, or else
    # against its shadow. Without a base it would patch against the same shadow again and loop
    # to the depth limit; with the empty base its patch carries the whole object. Its patches
    # are made and applied with the Go-exact functions (tests/golden proves them).
    shadow = shape(PODS, live_pod("nginx:1"))
    live = shape(PODS, live_pod("nginx:2", rv="11"))
    first = create_patch(shadow, live)
    msg = PatchObject(
        ref=REF,
        checksum=canonical_checksum(apply_patch(shadow, first)),
        patch=orjson.dumps(first),
        depth=1,
        msg_id="m",
    )
    [ask] = decide(msg, None).send
    assert isinstance(ask, GetObject) and ask.base_object is not None
    base = orjson.loads(ask.base_object)  # the Go agent's shadow becomes the base
    second = create_patch(base, live)
    retry = PatchObject(
        ref=REF,
        checksum=canonical_checksum(apply_patch(base, second)),
        patch=orjson.dumps(second),
        depth=ask.depth + 1,
        msg_id="m",
    )
    d = decide(retry, None)
    assert d.send == []
    assert isinstance(d.change, Upsert) and orjson.loads(d.change.object) == live


def test_our_agent_answers_an_empty_base_with_the_whole_object() -> None:
    s = session()
    s.local_change(PODS, WatchEvent.MODIFIED, live_pod("nginx:1"))  # leaves a shadow
    out = s.handle(GetObject(ref=REF, base_object=b"{}", depth=2, msg_id="m"), live_pod("nginx:2"))
    [reply] = out.send
    assert isinstance(reply, PutObject)
    assert orjson.loads(reply.object) == shape(PODS, live_pod("nginx:2"))


def _whole_object_patch(checksum: str, annotation: str | None = None) -> PatchObject:
    body = shape(PODS, live_pod("nginx:3", rv="12"))
    if annotation is not None:
        body["metadata"]["annotations"] = {CHECKSUM_ANNOTATION: annotation}
    return PatchObject(ref=REF, checksum=checksum, patch=orjson.dumps(body), depth=1, msg_id="h")


@pytest.mark.parametrize("stored", [None, STORED], ids=["new", "existing"])
def test_whole_objects_from_kubescapes_http_endpoint_are_stored(stored: StoredCopy | None) -> None:
    # The node-agent posts objects to the agent's HTTP endpoint; kubescape's agent forwards each
    # as a PatchObject whose patch is the whole body, without a checksum...
    d = decide(_whole_object_patch(""), stored)
    assert d.send == [] and isinstance(d.change, Upsert)
    expected = shape(PODS, live_pod("nginx:3", rv="12"))
    assert orjson.loads(d.change.object) == expected
    assert d.change.checksum == canonical_checksum(expected)
    # ... or with the storage annotation's checksum, which is what it is stored under.
    d = decide(_whole_object_patch("precomputed", annotation="precomputed"), stored)
    assert d.send == [] and isinstance(d.change, Upsert)
    assert d.change.checksum == "precomputed"
    # A checksum that is neither still has to verify.
    d = decide(_whole_object_patch("0" * 64, annotation="precomputed"), stored)
    assert d.change is None and [type(m) for m in d.send] == [GetObject]


def test_backend_patch_verified_is_an_upsert() -> None:
    patch = {"metadata": {"resourceVersion": "11"}, "spec": {"x": 1}}
    result = apply_patch(orjson.loads(STORED.object), patch)
    msg = PatchObject(
        ref=REF,
        checksum=canonical_checksum(result),
        patch=orjson.dumps(patch),
        depth=1,
        msg_id="m",
    )
    d = decide(msg, STORED)
    assert isinstance(d.change, Upsert)
    assert orjson.loads(d.change.object) == result
    assert (d.change.uid, d.change.resource_version) == ("u1", "11")
    assert d.send == []


@pytest.mark.parametrize("patch", [b'{"spec":{"x":1}}', b"[1]"])
def test_backend_patch_mismatch_sends_its_copy_as_base(patch: bytes) -> None:
    msg = PatchObject(ref=REF, checksum="0" * 64, patch=patch, depth=5, msg_id="m")
    d = decide(msg, STORED)
    assert d.change is None
    assert d.send == [GetObject(ref=REF, base_object=STORED.object, depth=6, msg_id="m")]


def test_verify_and_get_replies_use_the_canonical_hash_not_the_annotation() -> None:
    # kubescape's agent hashes the object to verify a checksum or answer a GetObject; only its
    # own announcements use the storage server's annotation.
    live = live_pod()
    live["metadata"]["annotations"] = {CHECKSUM_ANNOTATION: "precomputed"}
    canonical = canonical_checksum(shape(PODS, live))
    s = session()
    [announced] = s.local_change(PODS, WatchEvent.ADDED, live)
    assert isinstance(announced, NewChecksum) and announced.checksum == "precomputed"
    assert s.handle(NewChecksum(ref=REF, checksum=canonical, depth=1), live).send == []
    [asked] = s.handle(NewChecksum(ref=REF, checksum="precomputed", depth=1), live).send
    assert isinstance(asked, GetObject)
    [put] = s.handle(GetObject(ref=REF, depth=1), live).send
    assert isinstance(put, PutObject) and put.checksum == canonical


def test_backend_delete_and_get() -> None:
    assert decide(ObjectDeleted(ref=REF, depth=1, msg_id="m"), STORED).change == Remove(REF)
    d = decide(GetObject(ref=REF, depth=2, msg_id="m"), STORED)
    assert d.send == [
        PutObject(ref=REF, checksum=STORED.checksum, object=STORED.object, depth=3, msg_id="m")
    ]
    d = decide(GetObject(ref=REF, depth=2, msg_id="m"), None)
    assert d.send == []
    assert [r for r, _ in d.errors] == ["not_found"]


def test_backend_decide_all() -> None:
    assert decide_all(Ping(depth=1, msg_id="p"), {}) == []
    batch = Batch(
        kind=PODS,
        new_checksum=(NewChecksum(ref=REF, checksum=STORED.checksum),),
        object_deleted=(ObjectDeleted(ref=ObjectRef(PODS, "default", "gone")),),
    )
    decisions = decide_all(batch, {REF: STORED})
    assert [d.send for d in decisions] == [[], []]
    assert decisions[1].change == Remove(ObjectRef(PODS, "default", "gone"))
    reconciliation = Batch(kind=PODS, batch_type=BATCH_RECONCILIATION)
    (d,) = decide_all(reconciliation, {})
    assert [r for r, _ in d.errors] == ["bad_batch"]


def test_backend_write_put() -> None:
    obj = live_pod()
    msg = PutObject(ref=REF, checksum="ignored", object=orjson.dumps(obj), depth=1, msg_id="w")
    d = backend_write(msg)
    # The object says resourceVersion 10, but the cluster has not applied it yet: no version is
    # stored, so a kubescape agent's reconciliation re-sends what the cluster really holds.
    assert d.change == Upsert(REF, msg.object, canonical_checksum(obj), "u1", "")
    assert d.send == [
        PutObject(ref=REF, checksum=canonical_checksum(obj), object=msg.object, depth=1, msg_id="w")
    ]


@pytest.mark.parametrize("body", [b"not json", b"[]", b'"x"'])
def test_backend_write_put_of_non_object(body: bytes) -> None:
    d = backend_write(PutObject(ref=REF, checksum="", object=body, depth=1, msg_id="w"))
    assert d.change is None
    assert d.send == []
    assert [r for r, _ in d.errors] == ["bad_object"]


def test_backend_write_delete() -> None:
    msg = ObjectDeleted(ref=REF, depth=1, msg_id="w")
    d = backend_write(msg)
    assert d.change == Remove(REF)
    assert d.send == [msg]


def test_reconciliation_batches() -> None:
    other = ObjectRef(CONFIGMAPS, "", "cfg")
    batches = reconciliation_batches([(REF, "a"), (other, "b")], kinds=[SECRETS, PODS])
    assert [b.kind for b in batches] == sorted([PODS, CONFIGMAPS, SECRETS])
    by_kind = {b.kind: b for b in batches}
    assert by_kind[SECRETS].new_checksum == ()
    assert [(i.ref, i.checksum) for i in by_kind[PODS].new_checksum] == [(REF, "a")]
    assert all(b.batch_type == BATCH_RECONCILIATION for b in batches)
    assert all(b.depth == 1 for b in batches)
    assert len({b.msg_id for b in batches}) == 1
    assert reconciliation_batches([]) == []


def test_reconciliation_items_carry_the_stored_resource_version() -> None:
    # kubescape's agent skips an object whose live resourceVersion equals the item's and re-sends
    # every other one: the stored version must travel, and an entry without one travels as 0.
    other = ObjectRef(PODS, "default", "web-2")
    [batch] = reconciliation_batches([(REF, "a", 1001), (other, "b")])
    assert [(i.ref, i.resource_version) for i in batch.new_checksum] == [(REF, 1001), (other, 0)]
    frame = orjson.loads(encode(batch))
    assert [item["ResourceVersion"] for item in frame["Items"]["NewChecksum"]] == [1001, 0]


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("1001", 1001),
        ("", 0),
        ("abc", 0),
        ("12a", 0),
        (" 5", 0),
        ("5_0", 0),
        ("+7", 7),
        ("9223372036854775807", 9223372036854775807),
        ("9223372036854775808", 0),
    ],
)
def test_resource_version_number(text: str, number: int) -> None:
    assert resource_version_number(text) == number


def test_the_server_bridges_one_level_deeper_up_to_the_limit() -> None:
    msg = NewChecksum(ref=REF, checksum="c", depth=3, msg_id="m")
    assert bridge_hop(msg) == NewChecksum(ref=REF, checksum="c", depth=4, msg_id="m")
    assert bridge_hop(Ping(depth=7, msg_id="p")) == Ping(depth=8, msg_id="p")
    assert bridge_hop(NewChecksum(ref=REF, checksum="c", depth=8, msg_id="m")) is None


def test_replies_beyond_the_depth_limit_are_not_sent_but_reported() -> None:
    deep = PatchObject(ref=REF, checksum="0" * 64, patch=b'{"spec":{"x":1}}', depth=8, msg_id="m")
    [d] = decide_all(deep, {REF: STORED})
    assert d.send == [] and d.change is None
    assert [reason for reason, _ in d.errors] == ["too_deep"]
    [ok] = decide_all(replace(deep, depth=7), {REF: STORED})
    assert [m.depth for m in ok.send] == [8]
