"""Kinds and object references: parsing, string form, validation."""

from __future__ import annotations

import pytest

from clustersync.model import Kind, KindError, ObjectRef


@pytest.mark.parametrize(
    "text",
    [
        "/v1/pods",
        "/v1/nodes",
        "apps/v1/deployments",
        "batch/v1/cronjobs",
        "spdx.softwarecomposition.kubescape.io/v1beta1/sbomsyfts",
        "rbac.authorization.k8s.io/v1/clusterrolebindings",
    ],
)
def test_parse_str_round_trip(text: str) -> None:
    kind = Kind.parse(text)
    assert str(kind) == text
    assert Kind.parse(str(kind)) == kind


def test_core_group_is_empty() -> None:
    pods = Kind.parse("/v1/pods")
    assert pods == Kind("", "v1", "pods")
    assert pods.group == ""
    assert pods.api_version == "v1"
    assert str(pods) == "/v1/pods"


def test_api_version_of_named_group() -> None:
    assert Kind.parse("apps/v1/deployments").api_version == "apps/v1"


def test_kinds_are_hashable_and_ordered() -> None:
    kinds = {Kind.parse("apps/v1/deployments"), Kind.parse("apps/v1/deployments")}
    assert len(kinds) == 1
    assert sorted([Kind.parse("b/v1/x"), Kind.parse("/v1/pods"), Kind.parse("a/v1/x")]) == [
        Kind.parse("/v1/pods"),
        Kind.parse("a/v1/x"),
        Kind.parse("b/v1/x"),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "pods",
        "v1/pods",
        "/v1/pods/extra",
        "//pods",
        "/v1/",
        "/V1/pods",
        "/v1/Pods",
        "Apps/v1/deployments",
        "apps./v1/deployments",
        ".apps/v1/deployments",
        "apps..io/v1/deployments",
        "-apps/v1/deployments",
        "apps/v1/deploy ments",
        "apps/v1/deployments-",
        "apps/v1/*",
        "apps/v1/>",
        "a.b/v1/x.y",
        "a" * 254 + "/v1/pods",
    ],
)
def test_invalid_kinds_rejected(text: str) -> None:
    with pytest.raises(KindError):
        Kind.parse(text)


def test_kind_error_is_value_error() -> None:
    assert issubclass(KindError, ValueError)


@pytest.mark.parametrize(
    ("group", "version", "resource"),
    [("", "", "pods"), ("", "v1", ""), ("UPPER", "v1", "pods"), ("", "v1", "pods.x")],
)
def test_invalid_triples_rejected(group: str, version: str, resource: str) -> None:
    with pytest.raises(KindError):
        Kind(group, version, resource)


def test_longest_valid_group_accepted() -> None:
    group = ".".join(["a" * 63] * 4)[:253]
    assert len(group) == 253
    assert Kind(group, "v1", "things").group == group


def test_object_ref_str() -> None:
    pods = Kind.parse("/v1/pods")
    nodes = Kind.parse("/v1/nodes")
    assert str(ObjectRef(pods, "default", "web")) == "/v1/pods default/web"
    assert str(ObjectRef(nodes, "", "node-1")) == "/v1/nodes node-1"
    assert ObjectRef(pods, "default", "web") == ObjectRef(Kind("", "v1", "pods"), "default", "web")


def test_kinds_built_apart_are_one_key() -> None:
    a, b = Kind("apps", "v1", "deployments"), Kind.parse("apps/v1/deployments")
    assert a == b and hash(a) == hash(b)
    held = {ObjectRef(a, "prod", "api"): 1, a: 2}
    assert held[ObjectRef(b, "prod", "api")] == 1 and held[b] == 2
    assert Kind("apps", "v1", "replicasets") not in held
    assert Kind("", "v1", "deployments") not in held  # the group counts
    assert repr(a) == "Kind(group='apps', version='v1', resource='deployments')"
    assert sorted([Kind("b", "v1", "x"), a]) == [a, Kind("b", "v1", "x")]
