"""Which objects the agent syncs, and what it sends of them (filtering, stripping, masking)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from clustersync.model import Kind, ObjectRef
from clustersync.protocol.agent import AgentSession
from clustersync.protocol.agent_types import Strategy
from clustersync.protocol.checksum import CHECKSUM_ANNOTATION
from clustersync.protocol.messages import BATCH_RECONCILIATION, Batch, NewChecksum
from clustersync.protocol.shaping import (
    LAST_APPLIED,
    MASK,
    NamespaceRules,
    ShapingError,
    contains_mask,
    env_entries,
    has_controller_parent,
    is_filtered,
    lend_shaped,
    restore,
    shape,
    unmask,
)

OPERATOR = "kubescape"
RS_OWNER = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc", "uid": "1"}
DEPLOY_OWNER = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "2"}
JOB_OWNER = {"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "3"}
CRONJOB_OWNER = {"apiVersion": "batch/v1", "kind": "CronJob", "name": "cj", "uid": "4"}
CRONJOB_BETA_OWNER = {"apiVersion": "batch/v1beta1", "kind": "CronJob", "name": "cj", "uid": "5"}
NODE_OWNER = {"apiVersion": "v1", "kind": "Node", "name": "node-1", "uid": "6"}
CRD_OWNER = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "r", "uid": "7"}
DS_OWNER = {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "ds", "uid": "8"}


def obj(
    kind: str,
    namespace: str = "default",
    owners: list[Any] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "x"}
    if namespace:
        meta["namespace"] = namespace
    if owners is not None:
        meta["ownerReferences"] = owners
    if labels is not None:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": kind, "metadata": meta}


DEFAULT = NamespaceRules(operator_namespace=OPERATOR)
EXCLUDE = NamespaceRules(operator_namespace=OPERATOR, exclude=frozenset({"kube-system", OPERATOR}))
INCLUDE = NamespaceRules(
    operator_namespace=OPERATOR, include=frozenset({"prod"}), exclude=frozenset({"prod"})
)
HASH = {"pod-template-hash": "abc123"}

FILTER_MATRIX: list[tuple[str, dict[str, Any], NamespaceRules, bool]] = [
    # namespace rules
    ("plain pod", obj("Pod"), DEFAULT, False),
    ("excluded namespace", obj("Pod", "kube-system"), EXCLUDE, True),
    ("excluded namespace, any kind", obj("ConfigMap", "kube-system"), EXCLUDE, True),
    ("not excluded", obj("Pod", "default"), EXCLUDE, False),
    ("included namespace", obj("Pod", "prod"), INCLUDE, False),
    ("include wins over exclude", obj("Service", "prod"), INCLUDE, False),
    ("not included", obj("Pod", "default"), INCLUDE, True),
    ("not included, kube-system", obj("Service", "kube-system"), INCLUDE, True),
    ("cluster-scoped with include", obj("Node", ""), INCLUDE, False),
    ("cluster-scoped with exclude", obj("Namespace", ""), EXCLUDE, False),
    ("cluster-scoped owned", obj("ClusterRole", "", [DEPLOY_OWNER]), DEFAULT, False),
    # the operator namespace bypasses everything
    ("operator ns, excluded", obj("Pod", OPERATOR), EXCLUDE, False),
    ("operator ns, not included", obj("ConfigMap", OPERATOR), INCLUDE, False),
    ("operator ns, RS-owned pod", obj("Pod", OPERATOR, [RS_OWNER]), DEFAULT, False),
    ("operator ns, hash pod", obj("Pod", OPERATOR, labels=HASH), INCLUDE, False),
    ("operator ns, owned job", obj("Job", OPERATOR, [CRONJOB_OWNER]), EXCLUDE, False),
    # controller parents
    ("RS-owned pod", obj("Pod", owners=[RS_OWNER]), DEFAULT, True),
    ("DaemonSet-owned pod", obj("Pod", owners=[DS_OWNER]), DEFAULT, True),
    ("Job-owned pod", obj("Pod", owners=[JOB_OWNER]), DEFAULT, True),
    ("CronJob-owned job", obj("Job", owners=[CRONJOB_OWNER]), DEFAULT, True),
    ("v1beta1 CronJob-owned job", obj("Job", owners=[CRONJOB_BETA_OWNER]), DEFAULT, True),
    ("Deployment-owned RS", obj("ReplicaSet", owners=[DEPLOY_OWNER]), DEFAULT, True),
    ("node-owned static pod", obj("Pod", owners=[NODE_OWNER]), DEFAULT, False),
    ("CRD-owned pod", obj("Pod", owners=[CRD_OWNER]), DEFAULT, False),
    ("CRD-owned RS", obj("ReplicaSet", owners=[CRD_OWNER]), DEFAULT, False),
    ("first owner CRD", obj("Pod", owners=[CRD_OWNER, RS_OWNER]), DEFAULT, False),
    ("first owner RS", obj("Pod", owners=[RS_OWNER, CRD_OWNER]), DEFAULT, True),
    ("owned Deployment", obj("Deployment", owners=[DEPLOY_OWNER]), DEFAULT, False),
    ("owned Service", obj("Service", owners=[RS_OWNER]), DEFAULT, False),
    ("owned ConfigMap", obj("ConfigMap", owners=[JOB_OWNER]), DEFAULT, False),
    ("malformed owner", obj("Pod", owners=["apps/v1"]), DEFAULT, False),
    ("bare pod", obj("Pod", owners=[]), DEFAULT, False),
    # pod-template-hash without owners
    ("orphan hash pod", obj("Pod", labels=HASH), DEFAULT, True),
    ("orphan hash pod, empty owners", obj("Pod", owners=[], labels=HASH), DEFAULT, True),
    ("empty hash", obj("Pod", labels={"pod-template-hash": ""}), DEFAULT, False),
    ("other labels", obj("Pod", labels={"app": "web"}), DEFAULT, False),
    ("hash on a Job", obj("Job", labels=HASH), DEFAULT, False),
    ("hash on a RS", obj("ReplicaSet", labels=HASH), DEFAULT, False),
    ("hash pod with CRD owner", obj("Pod", owners=[CRD_OWNER], labels=HASH), DEFAULT, False),
    ("excluded and owned", obj("Pod", "kube-system", [RS_OWNER]), EXCLUDE, True),
]


@pytest.mark.parametrize(
    ("obj_", "rules", "filtered"),
    [case[1:] for case in FILTER_MATRIX],
    ids=[case[0] for case in FILTER_MATRIX],
)
def test_filter_matrix(obj_: dict[str, Any], rules: NamespaceRules, filtered: bool) -> None:
    before = copy.deepcopy(obj_)
    assert is_filtered(obj_, rules) is filtered
    assert obj_ == before


def test_filter_without_metadata() -> None:
    assert not is_filtered({"kind": "Pod"}, DEFAULT)
    assert not is_filtered({"kind": "Pod", "metadata": None}, DEFAULT)
    assert not has_controller_parent({"kind": "Pod", "metadata": {"labels": None}})


def test_rules_allows() -> None:
    rules = NamespaceRules()
    assert rules.allows("anything")
    assert rules.allows("")
    assert not EXCLUDE.allows("kube-system")
    assert EXCLUDE.allows(OPERATOR)  # the operator namespace is always allowed
    assert INCLUDE.allows(OPERATOR)
    assert not INCLUDE.allows("default")


# ------------------------------------------------------------------ stripping

PODS = Kind.parse("/v1/pods")
NODES = Kind.parse("/v1/nodes")
SERVICES = Kind.parse("/v1/services")
SBOM = Kind.parse("spdx.softwarecomposition.kubescape.io/v1beta1/sbomsyfts")
SBOM_FILTERED = Kind.parse("spdx.softwarecomposition.kubescape.io/v1beta1/sbomsyftfiltereds")


def test_stripping() -> None:
    live = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "p",
            "namespace": "default",
            "managedFields": [{"manager": "kubectl"}],
            "annotations": {
                LAST_APPLIED: '{"big": "json"}',
                CHECKSUM_ANNOTATION: "abc",
                "keep": "me",
            },
        },
        "status": {"conditions": [{"type": "Ready"}]},
    }
    before = copy.deepcopy(live)
    shaped = shape(PODS, live)
    assert live == before
    assert shaped == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default", "annotations": {"keep": "me"}},
        "status": {"conditions": [{"type": "Ready"}]},  # only nodes lose their conditions
    }


def test_shape_tolerates_odd_metadata() -> None:
    assert shape(PODS, {"kind": "Pod"}) == {"kind": "Pod"}
    assert shape(PODS, {"kind": "Pod", "metadata": None}) == {"kind": "Pod", "metadata": None}
    # kubescape cannot read a null annotation map, and removes it (tests/golden has the rest).
    odd = {"kind": "Pod", "metadata": {"annotations": None}}
    assert shape(PODS, odd) == {"kind": "Pod", "metadata": {}}


def test_node_conditions_nulled() -> None:
    live = {
        "kind": "Node",
        "metadata": {"name": "n"},
        "status": {"conditions": [{"type": "Ready", "lastHeartbeatTime": "t"}], "capacity": 1},
    }
    before = copy.deepcopy(live)
    shaped = shape(NODES, live)
    assert shaped["status"] == {"conditions": None, "capacity": 1}
    assert live == before


@pytest.mark.parametrize(("kind", "nulled"), [(SBOM, False), (SBOM_FILTERED, True)])
def test_sbom_fields_nulled_unless_typed(kind: Kind, nulled: bool) -> None:
    # kubescape reads sbomsyfts through its typed storage client, which skips the nulling.
    live = {
        "kind": "SBOMSyft",
        "metadata": {"name": "s"},
        "spec": {
            "syft": {
                "descriptor": {"name": "syft"},
                "files": [{"id": 1}],
                "artifactRelationships": [{"parent": "a"}],
                "artifacts": [{"name": "openssl"}],
            },
        },
    }
    before = copy.deepcopy(live)
    expected = {
        "descriptor": None,
        "files": None,
        "artifactRelationships": None,
        "artifacts": [{"name": "openssl"}],
    }
    assert shape(kind, live)["spec"]["syft"] == (expected if nulled else before["spec"]["syft"])
    assert live == before


def test_nulling_is_per_kind() -> None:
    pod = {"kind": "Pod", "metadata": {"name": "p"}, "spec": {"syft": {"files": [1]}}}
    assert shape(PODS, pod) == pod


# ------------------------------------------------------------------ masking

POD_PATH = ("spec",)
TEMPLATE_PATH = ("spec", "template", "spec")
CRONJOB_PATH = ("spec", "jobTemplate", "spec", "template", "spec")


def workload(kind: str, path: tuple[str, ...], pod_spec: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {"kind": kind, "metadata": {"name": "w", "namespace": "default"}}
    node = doc
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = pod_spec
    return doc


def one_env(entry: Any, list_name: str = "containers") -> dict[str, Any]:
    return {list_name: [{"name": "app", "image": "nginx", "env": [entry]}]}


SECRET = {"name": "PASSWORD", "value": "hunter2"}
MASKED = {"name": "PASSWORD", "value": MASK}

MASK_MATRIX: list[tuple[str, str, tuple[str, ...], Any, Any, str]] = [
    # (id, kind, path, env entry, expected entry, container list)
    ("pod", "Pod", POD_PATH, SECRET, MASKED, "containers"),
    ("pod init", "Pod", POD_PATH, SECRET, MASKED, "initContainers"),
    ("pod ephemeral", "Pod", POD_PATH, SECRET, MASKED, "ephemeralContainers"),
    ("deployment", "Deployment", TEMPLATE_PATH, SECRET, MASKED, "containers"),
    ("deployment init", "Deployment", TEMPLATE_PATH, SECRET, MASKED, "initContainers"),
    ("statefulset", "StatefulSet", TEMPLATE_PATH, SECRET, MASKED, "containers"),
    ("daemonset", "DaemonSet", TEMPLATE_PATH, SECRET, MASKED, "containers"),
    ("replicaset", "ReplicaSet", TEMPLATE_PATH, SECRET, MASKED, "containers"),
    ("job", "Job", TEMPLATE_PATH, SECRET, MASKED, "containers"),
    ("custom kind", "Rollout", TEMPLATE_PATH, SECRET, MASKED, "containers"),
    ("cronjob", "CronJob", CRONJOB_PATH, SECRET, MASKED, "containers"),
    ("cronjob init", "CronJob", CRONJOB_PATH, SECRET, MASKED, "initContainers"),
    (
        "empty value",
        "Pod",
        POD_PATH,
        {"name": "E", "value": ""},
        {"name": "E", "value": MASK},
        "containers",
    ),
    (
        "null value",
        "Pod",
        POD_PATH,
        {"name": "E", "value": None},
        {"name": "E", "value": MASK},
        "containers",
    ),
    ("value only", "Pod", POD_PATH, {"value": "v"}, {"value": MASK}, "containers"),
    (
        "valueFrom",
        "Pod",
        POD_PATH,
        {"name": "T", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        {"name": "T", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        "containers",
    ),
    (
        "valueFrom in deployment",
        "Deployment",
        TEMPLATE_PATH,
        {"name": "T", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "T", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        "containers",
    ),
    ("name only", "Pod", POD_PATH, {"name": "N"}, {"name": "N"}, "containers"),
    ("string entry", "Pod", POD_PATH, "PASSWORD=x", "PASSWORD=x", "containers"),
    ("null entry", "Pod", POD_PATH, None, None, "containers"),
    ("list entry", "Pod", POD_PATH, ["value", "x"], ["value", "x"], "containers"),
    # wrong paths: nothing is masked
    ("pod with template path", "Pod", TEMPLATE_PATH, SECRET, SECRET, "containers"),
    ("deployment with pod path", "Deployment", POD_PATH, SECRET, SECRET, "containers"),
    ("cronjob with template path", "CronJob", TEMPLATE_PATH, SECRET, SECRET, "containers"),
    ("job with cronjob path", "Job", CRONJOB_PATH, SECRET, SECRET, "containers"),
    ("unknown container list", "Pod", POD_PATH, SECRET, SECRET, "sidecars"),
    ("service", "Service", POD_PATH, SECRET, SECRET, "containers"),
    ("service template", "Service", ("spec",), SECRET, SECRET, "containers"),
]


@pytest.mark.parametrize(
    ("kind", "path", "entry", "expected", "list_name"),
    [case[1:] for case in MASK_MATRIX],
    ids=[case[0] for case in MASK_MATRIX],
)
def test_mask_matrix(
    kind: str, path: tuple[str, ...], entry: Any, expected: Any, list_name: str
) -> None:
    live = workload(kind, path, one_env(copy.deepcopy(entry), list_name))
    before = copy.deepcopy(live)
    shaped = shape(Kind.parse("example.io/v1/things"), live)
    assert live == before
    node: Any = shaped
    for key in path:
        node = node[key]
    assert node[list_name][0]["env"] == [expected]
    assert contains_mask(shaped) is (expected != entry)


def test_service_untouched() -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s", "namespace": "default"},
        "spec": {
            "ports": [{"port": 80, "targetPort": 8080}],
            "selector": {"app": "web"},
            "containers": [{"name": "c", "env": [SECRET]}],
        },
    }
    assert shape(SERVICES, service) == service


@pytest.mark.parametrize(
    "pod_spec",
    [
        {"containers": None},
        {"containers": "nginx"},
        {"containers": [None, "c", 3]},
        {"containers": [{"name": "c", "env": None}]},
        {"containers": [{"name": "c", "env": {"value": "x"}}]},
        {"containers": [{"name": "c"}]},
    ],
)
def test_malformed_containers_are_skipped(pod_spec: dict[str, Any]) -> None:
    live = workload("Pod", POD_PATH, pod_spec)
    assert shape(PODS, live) == live
    assert list(env_entries(live)) == []


def test_malformed_pod_spec_paths_are_skipped() -> None:
    for live in (
        {"kind": "Pod", "spec": None},
        {"kind": "Pod", "spec": [1]},
        {"kind": "Deployment", "spec": {"template": "x"}},
        {"kind": "CronJob", "spec": {"jobTemplate": {"spec": None}}},
        {"kind": "Pod"},
        {"spec": {"containers": [{"env": [SECRET]}]}},
    ):
        assert shape(PODS, live) == live


def test_mixed_entries_in_one_container() -> None:
    spec = {
        "containers": [
            {
                "name": "app",
                "env": [
                    {"name": "A", "value": "1"},
                    "junk",
                    {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                    {"name": "C", "value": ""},
                ],
            },
            {"name": "side", "env": [{"name": "A", "value": "2"}]},
        ],
        "initContainers": [{"name": "init", "env": [{"name": "I", "value": "3"}]}],
    }
    shaped = shape(PODS, workload("Pod", POD_PATH, spec))
    assert shaped["spec"]["containers"][0]["env"] == [
        {"name": "A", "value": MASK},
        "junk",
        {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        {"name": "C", "value": MASK},
    ]
    assert shaped["spec"]["containers"][1]["env"] == [{"name": "A", "value": MASK}]
    assert shaped["spec"]["initContainers"][0]["env"] == [{"name": "I", "value": MASK}]
    assert [(lst, c, e["name"]) for lst, c, e in env_entries(shaped)] == [
        ("containers", "app", "A"),
        ("containers", "app", "C"),
        ("containers", "side", "A"),
        ("initContainers", "init", "I"),
    ]


# ------------------------------------------------------------------ lending (the informer's cache)


@pytest.mark.parametrize(
    ("kind", "path", "entry", "list_name"),
    [(case[1], case[2], case[3], case[5]) for case in MASK_MATRIX],
    ids=[case[0] for case in MASK_MATRIX],
)
def test_a_lent_object_is_shaped_as_shape_does_and_given_back_unchanged(
    kind: str, path: tuple[str, ...], entry: Any, list_name: str
) -> None:
    live = workload(kind, path, one_env(copy.deepcopy(entry), list_name))
    live["metadata"]["annotations"] = {LAST_APPLIED: "{}", "team": "a"}
    live["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    before = copy.deepcopy(live)
    things = Kind.parse("example.io/v1/things")
    loan = lend_shaped(things, live)
    assert loan is not None
    assert loan.shaped == shape(things, before)
    loan.give_back()
    assert live == before
    rebuilt = copy.deepcopy(shape(things, before))
    restore(things, rebuilt, loan.removed)
    assert rebuilt == {**before, "metadata": {k: v for k, v in before["metadata"].items()
                                              if k != "managedFields"}}


def test_an_env_entry_shared_by_two_containers_is_lent_and_given_back() -> None:
    shared = {"name": "A", "value": "secret"}
    live = workload("Pod", POD_PATH, {"containers": [{"env": [shared]}, {"env": [shared]}]})
    before = copy.deepcopy(live)
    loan = lend_shaped(PODS, live)
    assert loan is not None
    assert loan.shaped == shape(PODS, before)
    assert loan.removed == {"env": ["secret", "secret"]}
    loan.give_back()
    assert shared == {"name": "A", "value": "secret"}


@pytest.mark.parametrize("annotations", [None, "text", {"a": None}, {"a": 1}])
def test_annotations_shaping_would_change_are_not_lent(annotations: Any) -> None:
    live = workload("Pod", POD_PATH, one_env(copy.deepcopy(SECRET)))
    live["metadata"]["annotations"] = annotations
    assert lend_shaped(PODS, live) is None
    assert live["spec"]["containers"][0]["env"] == [SECRET]


# ------------------------------------------------------------------ unmasking


def _deployment(env: dict[str, list[Any]]) -> dict[str, Any]:
    return workload(
        "Deployment",
        TEMPLATE_PATH,
        {"containers": [{"name": name, "env": entries} for name, entries in env.items()]},
    )


def test_unmask_restores_live_values() -> None:
    live = _deployment(
        {
            "app": [{"name": "A", "value": "a1"}, {"name": "B", "value": "b1"}],
            "side": [{"name": "A", "value": "side-a"}],
        }
    )
    incoming = shape(Kind.parse("apps/v1/deployments"), live)
    incoming["spec"]["replicas"] = 3
    before = copy.deepcopy(incoming)
    restored, missing = unmask(incoming, live)
    assert missing == 0
    assert incoming == before
    assert restored["spec"]["template"]["spec"]["containers"] == [
        {"name": "app", "env": [{"name": "A", "value": "a1"}, {"name": "B", "value": "b1"}]},
        {"name": "side", "env": [{"name": "A", "value": "side-a"}]},
    ]
    assert restored["spec"]["replicas"] == 3
    assert not contains_mask(restored)


def test_unmask_keeps_explicit_new_values() -> None:
    live = _deployment({"app": [{"name": "A", "value": "old"}]})
    incoming = _deployment({"app": [{"name": "A", "value": "new"}, {"name": "B", "value": "b"}]})
    restored, missing = unmask(incoming, live)
    assert missing == 0
    assert restored == incoming


@pytest.mark.parametrize(
    ("incoming_env", "live", "missing"),
    [
        ({"app": [MASKED]}, None, 1),
        ({"app": [MASKED, {"name": "B", "value": MASK}]}, None, 2),
        ({"app": [MASKED]}, {"app": [{"name": "OTHER", "value": "x"}]}, 1),
        ({"app": [MASKED]}, {"other": [SECRET]}, 1),
        ({"app": [MASKED]}, {"app": [{"name": "PASSWORD", "valueFrom": {}}]}, 1),
        ({"app": [MASKED]}, {"app": [MASKED]}, 1),
        ({"app": [MASKED, {"name": "B", "value": MASK}]}, {"app": [SECRET]}, 1),
        ({"app": [MASKED]}, {"app": [SECRET]}, 0),
    ],
)
def test_unmask_counts_values_it_cannot_restore(
    incoming_env: dict[str, list[Any]], live: dict[str, list[Any]] | None, missing: int
) -> None:
    live_obj = _deployment(live) if live is not None else None
    restored, count = unmask(_deployment(incoming_env), live_obj)
    assert count == missing
    assert contains_mask(restored) is (missing > 0)


def test_unmask_matches_by_container_list() -> None:
    live = workload("Pod", POD_PATH, {"initContainers": [{"name": "app", "env": [SECRET]}]})
    incoming = workload("Pod", POD_PATH, {"containers": [{"name": "app", "env": [MASKED]}]})
    _, missing = unmask(incoming, live)
    assert missing == 1


def test_shape_then_unmask_is_identity_for_env() -> None:
    live = workload(
        "CronJob",
        CRONJOB_PATH,
        {
            "containers": [{"name": "c", "env": [SECRET, {"name": "E", "value": ""}]}],
            "initContainers": [{"name": "i", "env": [{"name": "X", "value": "y"}]}],
        },
    )
    shaped = shape(Kind.parse("batch/v1/cronjobs"), live)
    assert contains_mask(shaped)
    restored, missing = unmask(shaped, live)
    assert missing == 0
    assert restored == live


def test_a_node_whose_status_is_not_an_object_is_not_sent_and_is_reported() -> None:
    # kubescape cannot null status.conditions under a non-object status and sends nothing; our
    # agent does the same, reports it, and does not take it for a deletion.
    odd = {"kind": "Node", "metadata": {"name": "n1", "resourceVersion": "5"}, "status": None}
    with pytest.raises(ShapingError):
        shape(NODES, odd)
    session = AgentSession({NODES: Strategy.COPY}, NamespaceRules())
    assert (
        session.inventory_request(NODES, [odd]).digests
        == session.inventory_request(NODES, []).digests
    )
    held = NewChecksum(ref=ObjectRef(NODES, "", "n1"), checksum="c")
    batch = Batch(kind=NODES, batch_type=BATCH_RECONCILIATION, new_checksum=(held,))
    out = session.reconcile(batch, [odd])
    assert out.send == []
    assert [reason for reason, _ in out.errors] == ["unshapeable"]
