"""List paging, selectors and watch semantics (the parts consumers rely on)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from kubernetes_asyncio import client, config, watch
from sandbox_helpers import WAIT, call, cm, open_watch

from clustersync.sandbox import Sandbox

pytestmark = pytest.mark.asyncio

CM = ("", "v1", "configmaps")
CM_PATH = "/api/v1/namespaces/default/configmaps"


def names(items: list[dict[str, object]]) -> list[str]:
    return [i["metadata"]["name"] for i in items]  # type: ignore[index]


async def test_paging_is_a_consistent_snapshot(api: client.ApiClient, sandbox: Sandbox) -> None:
    for i in range(7):
        sandbox.create(cm(f"cm{i}"))
    status, page1 = await call(api, "GET", CM_PATH, query=[("limit", 3)])
    assert status == 200
    snapshot_rv = page1["metadata"]["resourceVersion"]
    assert snapshot_rv == str(sandbox.resource_version)
    assert names(page1["items"]) == ["cm0", "cm1", "cm2"]
    assert page1["metadata"]["remainingItemCount"] == 4
    token = page1["metadata"]["continue"]

    # Changes after the snapshot must not show up in later pages.
    sandbox.delete(*CM, "default", "cm4")
    sandbox.create(cm("cm35"))
    sandbox.patch(*CM, "default", "cm5", {"data": {"k": "changed"}})

    _, page2 = await call(api, "GET", CM_PATH, query=[("limit", 3), ("continue", token)])
    assert names(page2["items"]) == ["cm3", "cm4", "cm5"]
    assert page2["items"][2]["data"] == {"k": "cm5"}
    assert page2["metadata"]["resourceVersion"] == snapshot_rv
    _, page3 = await call(
        api, "GET", CM_PATH, query=[("limit", 3), ("continue", page2["metadata"]["continue"])]
    )
    assert names(page3["items"]) == ["cm6"]
    assert "continue" not in page3["metadata"]

    _, fresh = await call(api, "GET", CM_PATH)
    assert names(fresh["items"]) == ["cm0", "cm1", "cm2", "cm3", "cm35", "cm5", "cm6"]
    assert fresh["metadata"]["resourceVersion"] == str(sandbox.resource_version)


async def test_continue_after_compaction_is_gone(api: client.ApiClient, sandbox: Sandbox) -> None:
    for i in range(3):
        sandbox.create(cm(f"c{i}"))
    _, page1 = await call(api, "GET", CM_PATH, query=[("limit", 1)])
    sandbox.create(cm("later"))
    sandbox.compact()
    status, err = await call(
        api, "GET", CM_PATH, query=[("limit", 1), ("continue", page1["metadata"]["continue"])]
    )
    assert status == 410 and err["reason"] == "Expired" and err["code"] == 410


async def test_history_limit_expires_old_resource_versions(tmp_path: Path) -> None:
    sb = Sandbox(history_limit=2)
    await sb.start()
    try:
        first_rv = sb.resource_version
        for i in range(5):
            sb.create(cm(f"h{i}"))
        kubeconfig = tmp_path / "kc"
        sb.write_kubeconfig(kubeconfig)
        cfg = client.Configuration()
        await config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
        async with client.ApiClient(configuration=cfg) as api:
            reader = await open_watch(api, CM_PATH, [("resourceVersion", str(first_rv))])
            try:
                event = await reader.next()
                assert event is not None and event["type"] == "ERROR"
                assert event["object"]["code"] == 410
            finally:
                reader.close()
            # The last two events are still retained.
            recent = str(sb.resource_version - 2)
            reader = await open_watch(api, CM_PATH, [("resourceVersion", recent)])
            try:
                events = await reader.take(2)
                assert names([e["object"] for e in events]) == ["h3", "h4"]
            finally:
                reader.close()
    finally:
        await sb.stop()


async def test_send_initial_events(api: client.ApiClient, sandbox: Sandbox) -> None:
    sandbox.create(cm("i1"))
    sandbox.create(cm("i2"))
    query = [
        ("sendInitialEvents", "true"),
        ("allowWatchBookmarks", "true"),
        ("resourceVersionMatch", "NotOlderThan"),
        ("resourceVersion", "1"),
    ]
    reader = await open_watch(api, CM_PATH, query)
    try:
        first = [await reader.next(), await reader.next(), await reader.next()]
        assert [e["type"] for e in first if e] == ["ADDED", "ADDED", "BOOKMARK"]
        bookmark = first[2]
        assert bookmark is not None
        annotations = bookmark["object"]["metadata"]["annotations"]
        assert annotations == {"k8s.io/initial-events-end": "true"}
        assert bookmark["object"]["metadata"]["resourceVersion"] == str(sandbox.resource_version)
        sandbox.create(cm("i3"))
        (live,) = await reader.take(1)
        assert live["object"]["metadata"]["name"] == "i3"
    finally:
        reader.close()


async def test_label_and_field_selectors(api: client.ApiClient, sandbox: Sandbox) -> None:
    sandbox.create(cm("a", app="web", tier="front"))
    sandbox.create(cm("b", app="web", tier="back"))
    sandbox.create(cm("c", app="db"))
    sandbox.create(cm("d"))
    sandbox.create(cm("e", "kube-system", app="web"))

    async def sel(label: str = "", field: str = "", path: str = CM_PATH) -> list[str]:
        query = [("labelSelector", label)] if label else []
        query += [("fieldSelector", field)] if field else []
        status, body = await call(api, "GET", path, query=query)
        assert status == 200, body
        return names(body["items"])

    assert await sel("app=web") == ["a", "b"]
    assert await sel("app==web,tier=front") == ["a"]
    assert await sel("app!=web") == ["c", "d"]
    assert await sel("tier") == ["a", "b"]
    assert await sel("!tier") == ["c", "d"]
    assert await sel("app in (db, web),tier notin (back)") == ["a", "c"]
    assert await sel("app notin (web)") == ["c", "d"]
    assert await sel("app=web", path="/api/v1/configmaps") == ["a", "b", "e"]
    assert await sel(field="metadata.name=c") == ["c"]
    assert await sel(field="metadata.name!=c") == ["a", "b", "d"]
    assert await sel(field="metadata.namespace=kube-system", path="/api/v1/configmaps") == ["e"]


async def test_watch_initial_then_live(api: client.ApiClient, sandbox: Sandbox) -> None:
    sandbox.create(cm("w1"))
    sandbox.create(cm("other", "kube-system"))
    reader = await open_watch(api, CM_PATH)
    try:
        (added,) = await reader.take(1)
        assert added["type"] == "ADDED" and added["object"]["metadata"]["name"] == "w1"
        modified = sandbox.patch(*CM, "default", "w1", {"data": {"k": "2"}})
        sandbox.create(cm("ignored", "kube-system"))  # other namespace: not seen
        deleted = sandbox.delete(*CM, "default", "w1")
        ev_mod, ev_del = await reader.take(2)
        assert ev_mod["type"] == "MODIFIED"
        assert (
            ev_mod["object"]["metadata"]["resourceVersion"]
            == (modified["metadata"]["resourceVersion"])
        )
        assert ev_del["type"] == "DELETED"
        # A delete gets its own, newer RV.
        assert int(ev_del["object"]["metadata"]["resourceVersion"]) > int(
            ev_mod["object"]["metadata"]["resourceVersion"]
        )
        assert (
            ev_del["object"]["metadata"]["resourceVersion"]
            == (deleted["metadata"]["resourceVersion"])
        )
    finally:
        reader.close()


async def test_watch_resume_from_resource_version(api: client.ApiClient, sandbox: Sandbox) -> None:
    sandbox.create(cm("r1"))
    _, lst = await call(api, "GET", CM_PATH)
    rv = lst["metadata"]["resourceVersion"]
    sandbox.create(cm("r2"))
    sandbox.patch(*CM, "default", "r1", {"metadata": {"labels": {"x": "y"}}})
    sandbox.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}})
    sandbox.delete(*CM, "default", "r2")
    reader = await open_watch(api, CM_PATH, [("resourceVersion", rv)])
    try:
        events = await reader.take(3)
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
            ("ADDED", "r2"),
            ("MODIFIED", "r1"),
            ("DELETED", "r2"),
        ]
        rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
        assert rvs == sorted(rvs) and rvs[0] > int(rv)
        sandbox.create(cm("r3"))
        (live,) = await reader.take(1)
        assert live["object"]["metadata"]["name"] == "r3"
    finally:
        reader.close()


async def test_watch_after_compaction_gets_410(api: client.ApiClient, sandbox: Sandbox) -> None:
    sandbox.create(cm("old"))
    old_rv = str(sandbox.resource_version)
    sandbox.create(cm("new"))
    sandbox.compact()
    reader = await open_watch(api, CM_PATH, [("resourceVersion", old_rv)])
    try:
        event = await reader.next()
        assert event is not None and event["type"] == "ERROR"
        assert event["object"]["kind"] == "Status" and event["object"]["code"] == 410
        assert event["object"]["reason"] in ("Expired", "Gone")
        assert await reader.next() is None  # stream ended
    finally:
        reader.close()
    # Watching from the current RV still works after compaction.
    reader = await open_watch(api, CM_PATH, [("resourceVersion", str(sandbox.resource_version))])
    try:
        sandbox.create(cm("after"))
        (ev,) = await reader.take(1)
        assert ev["object"]["metadata"]["name"] == "after"
    finally:
        reader.close()


async def test_bookmarks(api: client.ApiClient, sandbox: Sandbox) -> None:
    sandbox.bookmark_interval = 0.05
    reader = await open_watch(
        api,
        CM_PATH,
        [("resourceVersion", str(sandbox.resource_version)), ("allowWatchBookmarks", "true")],
    )
    try:
        sandbox.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "bump"}})
        while True:
            event = await reader.next()
            assert event is not None
            if event["type"] == "BOOKMARK":
                break
        obj = event["object"]
        assert obj["kind"] == "ConfigMap" and obj["apiVersion"] == "v1"
        assert obj["metadata"]["resourceVersion"] == str(sandbox.resource_version)
    finally:
        reader.close()


async def test_watch_timeout_seconds(api: client.ApiClient, sandbox: Sandbox) -> None:
    reader = await open_watch(api, CM_PATH, [("timeoutSeconds", "1")])
    try:
        assert await reader.next(timeout=WAIT) is None
    finally:
        reader.close()


async def test_watch_selector_transitions(api: client.ApiClient, sandbox: Sandbox) -> None:
    sandbox.create(cm("s1", app="web"))
    reader = await open_watch(api, CM_PATH, [("labelSelector", "app=web")])
    try:
        (initial,) = await reader.take(1)
        assert initial["type"] == "ADDED"
        sandbox.patch(*CM, "default", "s1", {"metadata": {"labels": {"app": "db"}}})
        sandbox.create(cm("s2", app="db"))
        sandbox.patch(*CM, "default", "s1", {"metadata": {"labels": {"app": "web"}}})
        left, back = await reader.take(2)
        assert (left["type"], back["type"]) == ("DELETED", "ADDED")
    finally:
        reader.close()


async def test_watch_field_selector_and_cluster_scope(
    api: client.ApiClient, sandbox: Sandbox
) -> None:
    reader = await open_watch(api, "/api/v1/nodes", [("fieldSelector", "metadata.name=n2")])
    try:
        for name in ("n1", "n2"):
            sandbox.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
        (ev,) = await reader.take(1)
        assert ev["object"]["metadata"]["name"] == "n2"
    finally:
        reader.close()
    ns_reader = await open_watch(api, "/api/v1/namespaces")
    try:
        initial = await ns_reader.take(3)
        assert {e["object"]["metadata"]["name"] for e in initial} == {
            "default",
            "kube-public",
            "kube-system",
        }
    finally:
        ns_reader.close()


async def test_namespace_delete_emits_deleted_events(
    api: client.ApiClient, sandbox: Sandbox
) -> None:
    sandbox.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tmp"}})
    sandbox.create(cm("x", "tmp"))
    sandbox.create(cm("y", "tmp"))
    reader = await open_watch(
        api, "/api/v1/configmaps", [("resourceVersion", str(sandbox.resource_version))]
    )
    try:
        sandbox.delete("", "v1", "namespaces", "", "tmp")
        events = await reader.take(2)
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
            ("DELETED", "x"),
            ("DELETED", "y"),
        ]
    finally:
        reader.close()


async def test_drop_watches_ends_streams(api: client.ApiClient, sandbox: Sandbox) -> None:
    reader = await open_watch(api, CM_PATH, [("resourceVersion", str(sandbox.resource_version))])
    other = await open_watch(api, "/api/v1/nodes")
    try:
        await sandbox.drop_watches()
        assert await reader.next() is None
        assert await other.next() is None
    finally:
        reader.close()
        other.close()


async def test_slow_watcher_gets_410_without_blocking_others(
    api: client.ApiClient, sandbox: Sandbox
) -> None:
    sandbox.watch_queue_limit = 3
    slow = await open_watch(api, CM_PATH, [("resourceVersion", str(sandbox.resource_version))])
    try:
        # Register the watch server-side before flooding it.
        sandbox.create(cm("first"))
        assert (await slow.take(1))[0]["object"]["metadata"]["name"] == "first"
        # Ten writes in one go: the watcher cannot drain between them.
        for i in range(10):
            sandbox.create(cm(f"flood{i}"))
        events = []
        while (event := await slow.next()) is not None:
            events.append(event)
        assert events[-1]["type"] == "ERROR" and events[-1]["object"]["code"] == 410
        # What was queued before the overflow still arrives, then the 410.
        assert names([e["object"] for e in events[:-1]]) == ["flood0", "flood1", "flood2"]
        # Writers were not blocked and a new watch works.
        assert len(sandbox.list(*CM, "default")) == 11
    finally:
        slow.close()


async def test_burst_of_changes_reaches_a_watcher_whole_and_in_order(
    api: client.ApiClient, sandbox: Sandbox
) -> None:
    reader = await open_watch(api, CM_PATH, [("resourceVersion", str(sandbox.resource_version))])
    try:
        sandbox.create(cm("first"))
        assert (await reader.take(1))[0]["object"]["metadata"]["name"] == "first"
        # Written without yielding: all of them wait in the watcher's queue at once.
        for i in range(200):
            sandbox.create(cm(f"b{i:03d}"))
        sandbox.patch(*CM, "default", "b007", {"data": {"k": "patched"}})
        sandbox.delete(*CM, "default", "b100")
        events = await reader.take(202)
        assert [e["type"] for e in events] == ["ADDED"] * 200 + ["MODIFIED", "DELETED"]
        assert names([e["object"] for e in events[:200]]) == [f"b{i:03d}" for i in range(200)]
        assert events[200]["object"]["data"] == {"k": "patched"}
        versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
        assert versions == sorted(versions) and versions[-1] == sandbox.resource_version
    finally:
        reader.close()


async def test_applicationprofile_watch(api: client.ApiClient, sandbox: Sandbox) -> None:
    path = "/apis/spdx.softwarecomposition.kubescape.io/v1beta1/applicationprofiles"
    reader = await open_watch(api, path)
    try:
        sandbox.create(
            {
                "apiVersion": "spdx.softwarecomposition.kubescape.io/v1beta1",
                "kind": "ApplicationProfile",
                "metadata": {"name": "ap", "namespace": "kube-system"},
                "spec": {"containers": []},
            }
        )
        (ev,) = await reader.take(1)
        assert ev["type"] == "ADDED" and ev["object"]["kind"] == "ApplicationProfile"
    finally:
        reader.close()


async def test_kubernetes_asyncio_watch_helper(api: client.ApiClient, sandbox: Sandbox) -> None:
    core = client.CoreV1Api(api)
    listed = await core.list_namespaced_config_map("default")
    rv = listed.metadata.resource_version
    sandbox.create(cm("via-watch"))
    w = watch.Watch()
    seen: list[tuple[str, str]] = []

    async def consume() -> None:
        async for event in w.stream(
            core.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=5
        ):
            seen.append((event["type"], event["object"].metadata.name))
            w.stop()

    async with asyncio.timeout(WAIT):
        await consume()
    assert seen == [("ADDED", "via-watch")]


async def test_list_exact_resource_version(api: client.ApiClient, sandbox: Sandbox) -> None:
    sandbox.create(cm("e1"))
    rv = str(sandbox.resource_version)
    sandbox.create(cm("e2"))
    _, old = await call(
        api, "GET", CM_PATH, query=[("resourceVersion", rv), ("resourceVersionMatch", "Exact")]
    )
    assert names(old["items"]) == ["e1"] and old["metadata"]["resourceVersion"] == rv


async def test_table_output(api: client.ApiClient, sandbox: Sandbox) -> None:
    sandbox.create(cm("tbl"))
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    status, table = await call(api, "GET", CM_PATH, accept=accept)
    assert status == 200 and table["kind"] == "Table"
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Age"]
    row = table["rows"][0]
    assert row["cells"][0] == "tbl"
    assert row["object"]["kind"] == "PartialObjectMetadata"
    assert row["object"]["metadata"]["namespace"] == "default"


async def _pages(
    api: client.ApiClient, path: str, limit: int, extra: list[tuple[str, str]] | None = None
) -> list[dict[str, object]]:
    """Every page of a list, following continue tokens."""
    pages: list[dict[str, object]] = []
    query: list[tuple[str, object]] = [("limit", limit), *(extra or [])]
    while True:
        status, page = await call(api, "GET", path, query=query)
        assert status == 200, page
        pages.append(page)
        token = page["metadata"].get("continue")
        if not token:
            return pages
        query = [("limit", limit), ("continue", token), *(extra or [])]


async def test_paging_in_one_namespace_keeps_its_snapshot(
    api: client.ApiClient, sandbox: Sandbox
) -> None:
    """Pages of one namespace skip the others, count only its objects as remaining, and show
    the snapshot even when objects on both sides of the page boundary change in between."""
    sandbox.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "zz"}})
    for i in range(6):
        sandbox.create(cm(f"a{i}"))
        sandbox.create(cm(f"z{i}", namespace="zz"))
    status, first = await call(api, "GET", "/api/v1/namespaces/zz/configmaps", query=[("limit", 2)])
    assert status == 200
    assert names(first["items"]) == ["z0", "z1"]
    assert first["metadata"]["remainingItemCount"] == 4

    sandbox.delete(*CM, "zz", "z1")  # already served
    sandbox.delete(*CM, "zz", "z2")  # next page: still there at the snapshot
    sandbox.patch(*CM, "zz", "z3", {"data": {"k": "later"}})
    sandbox.create(cm("z25", namespace="zz"))  # created after the snapshot: not shown
    sandbox.create(cm("z45", namespace="zz"))  # nor counted as remaining
    sandbox.delete(*CM, "default", "a0")

    query = [("limit", 2), ("continue", first["metadata"]["continue"])]
    _, second = await call(api, "GET", "/api/v1/namespaces/zz/configmaps", query=query)
    assert names(second["items"]) == ["z2", "z3"]
    assert second["items"][1]["data"] == {"k": "z3"}
    assert second["metadata"]["remainingItemCount"] == 2
    query = [("limit", 2), ("continue", second["metadata"]["continue"])]
    _, third = await call(api, "GET", "/api/v1/namespaces/zz/configmaps", query=query)
    assert names(third["items"]) == ["z4", "z5"]
    assert "continue" not in third["metadata"]

    fresh = await _pages(api, "/api/v1/namespaces/zz/configmaps", 4)
    assert [names(p["items"]) for p in fresh] == [["z0", "z25", "z3", "z4"], ["z45", "z5"]]  # type: ignore[arg-type]


async def test_paging_with_a_label_selector(api: client.ApiClient, sandbox: Sandbox) -> None:
    for i in range(10):
        sandbox.create(cm(f"s{i}", tier="odd" if i % 2 else "even"))
    pages = await _pages(api, CM_PATH, 2, [("labelSelector", "tier=odd")])
    assert [names(p["items"]) for p in pages] == [["s1", "s3"], ["s5", "s7"], ["s9"]]  # type: ignore[arg-type]
    # With a selector the apiserver cannot say how many remain.
    assert all("remainingItemCount" not in p["metadata"] for p in pages)  # type: ignore[operator]


async def test_paged_list_across_many_pages_is_whole_and_ordered(
    api: client.ApiClient, sandbox: Sandbox
) -> None:
    expected = sorted(f"p{i:04d}" for i in range(1200))
    for name in reversed(expected):  # created out of order: the list order is by key
        sandbox.create(cm(name))
    pages = await _pages(api, CM_PATH, 500)
    assert [len(p["items"]) for p in pages] == [500, 500, 200]  # type: ignore[arg-type]
    assert [n for p in pages for n in names(p["items"])] == expected  # type: ignore[arg-type]
    assert [p["metadata"].get("remainingItemCount") for p in pages] == [700, 200, None]  # type: ignore[attr-defined]
