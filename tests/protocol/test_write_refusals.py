"""The agent's decisions on backend writes it refuses: an outcome for the write, what the cluster
really holds for the backend's copy, and a namespace check that leaving out the namespace cannot
get around."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from clustersync.model import Kind, ObjectRef
from clustersync.protocol.agent import AgentSession
from clustersync.protocol.agent_types import Strategy, WritePolicy
from clustersync.protocol.messages import (
    ObjectDeleted,
    PutObject,
    WriteOutcome,
    WriteStatus,
)
from clustersync.protocol.shaping import NamespaceRules

CONFIGMAPS = Kind("", "v1", "configmaps")
NAMESPACES = Kind("", "v1", "namespaces")
NODES = Kind("", "v1", "nodes")
SECRETS = Kind("", "v1", "secrets")
RULES = NamespaceRules(operator_namespace="kubescape", exclude=frozenset({"kube-system"}))


def session(policy: WritePolicy | None = None) -> AgentSession:
    s = AgentSession(
        {CONFIGMAPS: Strategy.COPY, NAMESPACES: Strategy.PATCH, NODES: Strategy.PATCH},
        RULES,
        policy,
    )
    s.namespaced.update({CONFIGMAPS: True, NAMESPACES: False, NODES: False})
    return s


def put(ref: ObjectRef, *, depth: int = 0, msg_id: str = "write-1") -> PutObject:
    meta: dict[str, Any] = {"name": ref.name}
    if ref.namespace:
        meta["namespace"] = ref.namespace
    body = {"metadata": meta, "data": {"k": "v"}}
    return PutObject(ref=ref, checksum="", object=orjson.dumps(body), depth=depth, msg_id=msg_id)


def live(ref: ObjectRef, value: str = "live") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": ref.name, "uid": "u-1", "resourceVersion": "7"}
    if ref.namespace:
        meta["namespace"] = ref.namespace
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"k": value}}


def refused(reason_part: str, ref: ObjectRef, msg_id: str = "write-1") -> list[WriteOutcome]:
    return [WriteOutcome(ref=ref, status=WriteStatus.REFUSED, reason=reason_part, msg_id=msg_id)]


def test_a_refused_put_reports_the_refusal_and_what_the_cluster_holds() -> None:
    ref = ObjectRef(CONFIGMAPS, "payments", "settings")
    out = session(WritePolicy(namespaces=frozenset({"shop"}))).handle(put(ref), live(ref))
    assert out.writes == []
    assert out.reports == refused("write policy: namespace payments is not writable", ref)
    (restated,) = out.send
    assert isinstance(restated, PutObject)
    assert orjson.loads(restated.object)["data"] == {"k": "live"}  # the cluster's, not ours
    assert (restated.ref, restated.msg_id, restated.depth) == (ref, "write-1", 1)


def test_a_refused_put_of_an_absent_object_deletes_the_backends_copy() -> None:
    ref = ObjectRef(CONFIGMAPS, "kube-system", "new")
    out = session().handle(put(ref), None)
    assert [type(m) for m in out.send] == [ObjectDeleted]
    assert [r.status for r in out.reports] == [WriteStatus.REFUSED]


def test_a_namespaced_kind_without_namespace_is_refused() -> None:
    ref = ObjectRef(CONFIGMAPS, "", "settings")
    out = session().handle(put(ref), None)
    assert out.writes == []
    assert out.reports == refused(
        "write policy: /v1/configmaps is namespaced: a write needs a namespace", ref
    )


def test_an_allow_list_of_namespaces_refuses_cluster_scoped_writes() -> None:
    policy = WritePolicy(namespaces=frozenset({"shop"}))
    node = ObjectRef(NODES, "", "node-1")
    out = session(policy).handle(put(node), None)
    assert out.writes == []
    assert [r.reason for r in out.reports] == [
        "write policy: writes.namespaces allows namespaced writes only"
    ]
    # Without an allow-list the sync rules apply, and they admit cluster-scoped objects.
    assert [w.ref for w in session().handle(put(node), None).writes] == [node]


@pytest.mark.parametrize(
    ("policy", "name", "writable"),
    [
        (None, "kube-system", False),  # excluded from sync: its Namespace object is too
        (None, "shop", True),
        (WritePolicy(namespaces=frozenset({"shop"})), "shop", True),
        (WritePolicy(namespaces=frozenset({"shop"})), "payments", False),
    ],
)
def test_a_namespace_object_is_checked_as_its_namespace(
    policy: WritePolicy | None, name: str, writable: bool
) -> None:
    ref = ObjectRef(NAMESPACES, "", name)
    out = session(policy).handle(ObjectDeleted(ref=ref, msg_id="write-1"), live(ref))
    assert bool(out.writes) is writable
    assert [r.status for r in out.reports] == ([] if writable else [WriteStatus.REFUSED])


def test_a_kind_the_agent_does_not_sync_is_refused_with_an_outcome() -> None:
    ref = ObjectRef(SECRETS, "shop", "token")
    out = session().handle(put(ref), None)
    assert out.reports == refused("/v1/secrets is not synced here", ref)
    # The backend's stored copy goes: this cluster will never sync (or resync) the kind.
    assert out.send == [ObjectDeleted(ref=ref, depth=1, msg_id="write-1")]


def test_replies_in_a_chain_get_no_outcome() -> None:
    # A PutObject answering the agent's own GetObject is not a backend write: no report.
    ref = ObjectRef(CONFIGMAPS, "kube-system", "settings")
    out = session().handle(put(ref, depth=2), live(ref))
    assert [r for r, _ in out.errors] == ["write_refused"]
    assert out.reports == []


def test_restate_after_an_api_server_refusal() -> None:
    s = session()
    ref = ObjectRef(CONFIGMAPS, "shop", "settings")
    cause = put(ref)
    (gone,) = s.restate(ref, None, cause)
    assert isinstance(gone, ObjectDeleted) and gone.msg_id == "write-1"
    (kept,) = s.restate(ref, live(ref, "before"), cause)
    assert isinstance(kept, PutObject)
    assert orjson.loads(kept.object)["data"] == {"k": "before"}
