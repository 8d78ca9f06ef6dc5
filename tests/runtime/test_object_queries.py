"""Object queries through the API: pages that add up to the whole inventory in key order,
filters by namespace, name and labels, and kinds in kubectl's forms."""

from __future__ import annotations

from typing import Any

try:  # `python -m pytest` from the repo root
    from tests.runtime.harness import ACCOUNT, CLUSTER_A, World
except ImportError:  # plain `pytest`: the test directory itself is on sys.path
    from harness import ACCOUNT, CLUSTER_A, World  # type: ignore[no-redef]


async def names(world: World, expect: int = 200, **params: str) -> Any:
    doc = await world.api("GET", "/api/v1/objects", params=params, expect=expect)
    if expect != 200:
        return doc
    return [(o["kind"], o["namespace"], o["name"]) for o in doc["items"]]


async def test_pages_add_up_to_the_whole_inventory_in_key_order(synced: World) -> None:
    everything = await names(synced, account=ACCOUNT, cluster=CLUSTER_A)
    # The seed (tests/runtime/harness.py) without the kube-system config map, which the agent
    # excludes, plus the sandbox's own namespaces default, kube-public and kube-system.
    assert len(everything) == 12
    keys = [(kind.split("/"), ns, name) for kind, ns, name in everything]
    assert keys == sorted(keys)
    paged: list[Any] = []
    token: str | None = None
    pages = 0
    while True:
        params = {"account": ACCOUNT, "cluster": CLUSTER_A, "limit": "4"}
        if token:
            params["continue"] = token
        doc = await synced.api("GET", "/api/v1/objects", params=params, expect=200)
        paged += [(o["kind"], o["namespace"], o["name"]) for o in doc["items"]]
        pages += 1
        token = doc.get("continue")
        if not token:
            break
    assert pages == 3 and paged == everything


async def test_filters_narrow_by_namespace_name_and_labels(synced: World) -> None:
    assert await names(synced, kind="configmaps", namespace="shop") == [
        ("/v1/configmaps", "shop", "flags"),
        ("/v1/configmaps", "shop", "settings"),
    ]
    assert await names(synced, name="toolbox") == [("/v1/pods", "shop", "toolbox")]
    assert await names(synced, kind="deployments.apps", labelSelector="app=web") == [
        ("apps/v1/deployments", "shop", "web")
    ]
    assert await names(synced, labelSelector="app in (api,web),app!=web") == [
        ("apps/v1/deployments", "shop", "api")
    ]
    cluster_scoped = await names(synced, kind="namespaces", namespace="")
    assert [name for _, _, name in cluster_scoped] == [
        "default", "kube-public", "kube-system", "kubescape", "shop"
    ]
    # A selector and a limit: the page fills with matches only, then says where to go on.
    doc = await synced.api("GET", "/api/v1/objects", expect=200,
                           params={"labelSelector": "app", "limit": "1"})
    assert [o["name"] for o in doc["items"]] == ["api"] and doc["continue"]
    doc = await synced.api("GET", "/api/v1/objects", expect=200,
                           params={"labelSelector": "app", "limit": "1",
                                   "continue": doc["continue"]})
    assert [o["name"] for o in doc["items"]] == ["web"]


async def test_kinds_in_kubectl_forms_and_did_you_mean(synced: World) -> None:
    want = await names(synced, kind="/v1/configmaps")
    assert len(want) == 3
    for form in ("configmaps", "configmap", "ConfigMap", "cm", "v1/configmaps"):
        assert await names(synced, kind=form) == want, form
    profiles = await names(synced, kind="applicationprofiles")  # learned from the stored data
    assert [name for _, _, name in profiles] == ["web-profile"]
    refused = await names(synced, expect=422, kind="deploymnets")
    assert "did you mean 'deployments'" in refused["detail"]


async def test_bad_paging_parameters_are_refused_clearly(synced: World) -> None:
    for params, words in (
        ({"limit": "0"}, "between 1 and"),
        ({"limit": "many"}, "whole number"),
        ({"continue": "not-a-token"}, "continue token"),
        ({"labelSelector": "a b c"}, "labelSelector"),
    ):
        doc = await names(synced, expect=400, **params)
        assert words in doc["detail"], (params, doc)
