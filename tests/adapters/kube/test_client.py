"""KubeClient against a real sandbox API server over TLS on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from clustersync.adapters.kube import (
    KubeConflictError,
    KubeError,
    KubeGoneError,
    KubeNotFoundError,
    ResourceInfo,
)
from clustersync.adapters.kube.base import WatchItem
from clustersync.adapters.kube.client import KubeClient
from clustersync.model import Kind, ObjectRef
from clustersync.sandbox import Sandbox

CONFIGMAPS = Kind("", "v1", "configmaps")
NAMESPACES = Kind("", "v1", "namespaces")
NODES = Kind("", "v1", "nodes")
DEPLOYMENTS = Kind("apps", "v1", "deployments")
PROFILES = Kind("spdx.softwarecomposition.kubescape.io", "v1beta1", "applicationprofiles")
WIDGETS = Kind("example.com", "v1", "widgets")
WAIT = 10.0


def configmap(name: str, namespace: str = "default", **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": dict(data),
    }


def cm_ref(name: str, namespace: str = "default") -> ObjectRef:
    return ObjectRef(CONFIGMAPS, namespace, name)


async def collect(
    kube: KubeClient, kind: Kind, rv: str, count: int, *, timeout_seconds: int = 30
) -> list[WatchItem]:
    """The first ``count`` non-bookmark events of a watch from ``rv``."""
    got: list[WatchItem] = []
    async with asyncio.timeout(WAIT):
        async with contextlib.aclosing(kube.watch(kind, rv, timeout_seconds)) as stream:
            async for item in stream:
                if item.type != "BOOKMARK":
                    got.append(item)
                if len(got) == count:
                    break
    return got


# ---------------------------------------------------------------- connect and discovery


async def test_connect_with_a_missing_kubeconfig_is_a_kube_error(tmp_path: Path) -> None:
    with pytest.raises(KubeError, match="cannot load Kubernetes credentials"):
        await KubeClient.connect(str(tmp_path / "no-such-kubeconfig"))


async def test_server_version(kube: KubeClient) -> None:
    version = await kube.server_version()
    assert version.startswith("v1.")


@pytest.mark.parametrize(
    ("kind", "kind_name", "namespaced"),
    [
        (CONFIGMAPS, "ConfigMap", True),
        (NAMESPACES, "Namespace", False),
        (NODES, "Node", False),
        (DEPLOYMENTS, "Deployment", True),
        (PROFILES, "ApplicationProfile", True),  # a CRD of kubescape's storage
        (Kind("rbac.authorization.k8s.io", "v1", "clusterroles"), "ClusterRole", False),
    ],
)
async def test_resource_info(
    kube: KubeClient, kind: Kind, kind_name: str, namespaced: bool
) -> None:
    assert await kube.resource_info(kind) == ResourceInfo(kind, kind_name, namespaced)


@pytest.mark.parametrize(
    "kind",
    [WIDGETS, Kind("", "v1", "widgets"), Kind("apps", "v2", "deployments")],
)
async def test_unknown_kind_is_not_found(kube: KubeClient, kind: Kind) -> None:
    with pytest.raises(KubeNotFoundError) as info:
        await kube.resource_info(kind)
    assert info.value.status == 404
    with pytest.raises(KubeNotFoundError):
        await kube.list(kind)


async def test_bad_token_is_refused(sandbox: Sandbox, tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    sandbox.write_kubeconfig(path)
    doc = yaml.safe_load(path.read_text())
    doc["users"][0]["user"]["token"] = "not-the-sandbox-token"
    path.write_text(yaml.safe_dump(doc))
    client = await KubeClient.connect(str(path))
    try:
        with pytest.raises(KubeError) as info:
            await client.list(CONFIGMAPS)
        assert info.value.status == 401
    finally:
        await client.close()


async def test_unreachable_server_is_a_kube_error(sandbox: Sandbox, tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    sandbox.write_kubeconfig(path)
    client = await KubeClient.connect(str(path))
    await sandbox.stop()
    try:
        with pytest.raises(KubeError):
            await client.server_version()
    finally:
        await client.close()


# ---------------------------------------------------------------- list


async def test_list_pages_and_fills_kind(sandbox: Sandbox, kube: KubeClient) -> None:
    names = {f"cm-{i}" for i in range(7)}
    for i, name in enumerate(sorted(names)):
        sandbox.create(configmap(name, "default" if i % 2 else "kube-public", n=str(i)))
    items, rv = await kube.list(CONFIGMAPS, page_size=2)
    assert rv == str(sandbox.resource_version)
    assert len(items) == 7
    assert {item["metadata"]["name"] for item in items} == names
    assert {item["metadata"]["namespace"] for item in items} == {"default", "kube-public"}
    for item in items:
        assert item["kind"] == "ConfigMap"
        assert item["apiVersion"] == "v1"
    # The same result as one big page.
    whole, whole_rv = await kube.list(CONFIGMAPS, page_size=500)
    assert whole_rv == rv
    assert sorted(whole, key=lambda o: o["metadata"]["name"]) == sorted(
        items, key=lambda o: o["metadata"]["name"]
    )


@pytest.mark.parametrize("page_size", [1, 3, 7, 8])
async def test_list_page_sizes(sandbox: Sandbox, kube: KubeClient, page_size: int) -> None:
    for i in range(7):
        sandbox.create(configmap(f"cm-{i}"))
    items, _ = await kube.list(CONFIGMAPS, page_size=page_size)
    assert sorted(o["metadata"]["name"] for o in items) == [f"cm-{i}" for i in range(7)]


async def test_list_of_a_group_kind_and_cluster_scoped_kind(
    sandbox: Sandbox, kube: KubeClient
) -> None:
    sandbox.create(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": 1},
        }
    )
    deployments, _ = await kube.list(DEPLOYMENTS)
    assert [(d["apiVersion"], d["kind"], d["metadata"]["name"]) for d in deployments] == [
        ("apps/v1", "Deployment", "web")
    ]
    namespaces, _ = await kube.list(NAMESPACES, page_size=1)
    assert {n["metadata"]["name"] for n in namespaces} == {"default", "kube-system", "kube-public"}
    assert all(n["kind"] == "Namespace" for n in namespaces)


async def test_empty_list(sandbox: Sandbox, kube: KubeClient) -> None:
    items, rv = await kube.list(CONFIGMAPS, page_size=2)
    assert items == []
    assert rv == str(sandbox.resource_version)


# ---------------------------------------------------------------- watch


async def test_watch_from_a_list_rv(sandbox: Sandbox, kube: KubeClient) -> None:
    sandbox.create(configmap("before"))
    _, rv = await kube.list(CONFIGMAPS)
    sandbox.create(configmap("new", a="1"))
    sandbox.patch("", "v1", "configmaps", "default", "before", {"data": {"b": "2"}})
    sandbox.delete("", "v1", "configmaps", "default", "new")
    events = await collect(kube, CONFIGMAPS, rv, 3)
    assert [(e.type, e.object["metadata"]["name"]) for e in events] == [
        ("ADDED", "new"),
        ("MODIFIED", "before"),
        ("DELETED", "new"),
    ]
    assert events[1].object["data"] == {"b": "2"}
    for event in events:
        assert event.object["kind"] == "ConfigMap"
        assert event.object["apiVersion"] == "v1"
    rvs = [int(e.object["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs) and rvs[0] > int(rv)


async def test_watch_sees_live_events(sandbox: Sandbox, kube: KubeClient) -> None:
    _, rv = await kube.list(CONFIGMAPS)
    seen: list[tuple[str, str]] = []
    async with asyncio.timeout(WAIT):
        async with contextlib.aclosing(kube.watch(CONFIGMAPS, rv, 30)) as stream:
            async for item in stream:
                if item.type == "BOOKMARK":
                    if not seen:  # the stream is open: now change things
                        sandbox.create(configmap("live"))
                        sandbox.delete("", "v1", "configmaps", "default", "live")
                        seen.append(("BOOKMARK", ""))
                    continue
                seen.append((item.type, item.object["metadata"]["name"]))
                if len(seen) == 3:
                    break
    assert seen == [("BOOKMARK", ""), ("ADDED", "live"), ("DELETED", "live")]


async def test_watch_bookmarks_carry_a_resource_version(
    sandbox: Sandbox, kube: KubeClient
) -> None:
    _, rv = await kube.list(CONFIGMAPS)
    async with asyncio.timeout(WAIT):
        async with contextlib.aclosing(kube.watch(CONFIGMAPS, rv, 30)) as stream:
            async for item in stream:
                assert item.type == "BOOKMARK"
                assert item.object["metadata"]["resourceVersion"] == rv
                break


async def test_watch_ends_when_the_server_times_it_out(
    sandbox: Sandbox, kube: KubeClient
) -> None:
    _, rv = await kube.list(CONFIGMAPS)
    sandbox.create(configmap("one"))
    seen: list[str] = []
    async with asyncio.timeout(WAIT):
        async for item in kube.watch(CONFIGMAPS, rv, timeout_seconds=1):
            seen.append(item.type)
    assert "ADDED" in seen  # and the loop ended by itself: the stream closed cleanly


async def test_watch_from_a_compacted_rv_is_gone(sandbox: Sandbox, kube: KubeClient) -> None:
    _, rv = await kube.list(CONFIGMAPS)
    sandbox.create(configmap("after-list"))
    sandbox.compact()
    with pytest.raises(KubeGoneError) as info:
        await collect(kube, CONFIGMAPS, rv, 1)
    assert info.value.status == 410


async def test_watch_of_an_unknown_kind(kube: KubeClient) -> None:
    with pytest.raises(KubeNotFoundError):
        await collect(kube, WIDGETS, "1", 1)


# ---------------------------------------------------------------- get, create, replace, delete


async def test_get(sandbox: Sandbox, kube: KubeClient) -> None:
    sandbox.create(configmap("here", x="1"))
    obj = await kube.get(cm_ref("here"))
    assert obj is not None
    assert obj["data"] == {"x": "1"}
    assert obj["metadata"]["namespace"] == "default"
    assert await kube.get(cm_ref("absent")) is None
    assert await kube.get(cm_ref("here", "kube-system")) is None
    ns = await kube.get(ObjectRef(NAMESPACES, "", "kube-system"))
    assert ns is not None and ns["metadata"]["name"] == "kube-system"


async def test_create(sandbox: Sandbox, kube: KubeClient) -> None:
    created = await kube.create(cm_ref("fresh"), configmap("fresh", k="v"))
    assert created["metadata"]["uid"]
    assert created["metadata"]["resourceVersion"] == str(sandbox.resource_version)
    stored = sandbox.get("", "v1", "configmaps", "default", "fresh")
    assert stored is not None and stored["data"] == {"k": "v"}
    with pytest.raises(KubeConflictError) as info:
        await kube.create(cm_ref("fresh"), configmap("fresh", k="other"))
    assert info.value.status == 409
    assert info.value.reason == "AlreadyExists"
    stored = sandbox.get("", "v1", "configmaps", "default", "fresh")
    assert stored is not None and stored["data"] == {"k": "v"}


async def test_create_cluster_scoped(sandbox: Sandbox, kube: KubeClient) -> None:
    obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}
    await kube.create(ObjectRef(NAMESPACES, "", "team-a"), obj)
    assert sandbox.get("", "v1", "namespaces", "", "team-a") is not None


async def test_replace(sandbox: Sandbox, kube: KubeClient) -> None:
    first = sandbox.create(configmap("target", v="1"))
    current = dict(first, data={"v": "2"})
    replaced = await kube.replace(cm_ref("target"), current)
    assert replaced["data"] == {"v": "2"}
    assert int(replaced["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    stale = dict(first, data={"v": "stale"})  # still carries the first resourceVersion
    with pytest.raises(KubeConflictError) as info:
        await kube.replace(cm_ref("target"), stale)
    assert info.value.status == 409
    stored = sandbox.get("", "v1", "configmaps", "default", "target")
    assert stored is not None and stored["data"] == {"v": "2"}


async def test_replace_of_an_absent_object(kube: KubeClient) -> None:
    with pytest.raises(KubeNotFoundError):
        await kube.replace(cm_ref("ghost"), configmap("ghost"))


async def test_delete(sandbox: Sandbox, kube: KubeClient) -> None:
    sandbox.create(configmap("doomed"))
    assert await kube.delete(cm_ref("doomed")) is True
    assert sandbox.get("", "v1", "configmaps", "default", "doomed") is None
    assert await kube.delete(cm_ref("doomed")) is False
    assert await kube.delete(cm_ref("never-existed", "kube-system")) is False
