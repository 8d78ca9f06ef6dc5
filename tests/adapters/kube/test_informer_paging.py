"""The informer's paged list and compact cache, against a real sandbox."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from clustersync.adapters.kube.client import KubeClient
from clustersync.adapters.kube.informer import ObjectCache, UnencodableError
from clustersync.model import Kind
from clustersync.protocol.shaping import shape
from clustersync.sandbox import Sandbox

from .test_informer import WAIT, Recorder, configmap, running, wait_until


def test_cache_round_trips_objects_without_managed_fields() -> None:
    cache = ObjectCache()
    objects = [configmap(f"cm-{i}", v=str(i) * 40) for i in range(20)]
    for i, obj in enumerate(objects):
        obj["metadata"]["resourceVersion"] = str(100 + i)
        obj["metadata"]["managedFields"] = [{"manager": "kubectl", "operation": "Update"}]
        cache.put(("default", f"cm-{i}"), obj)
    for i, obj in enumerate(objects):
        got = cache[("default", f"cm-{i}")]
        assert "managedFields" not in got["metadata"]
        del obj["metadata"]["managedFields"]
        assert got == obj
        assert cache.resource_version(("default", f"cm-{i}")) == str(100 + i)
    assert cache.dictionary is not None  # learned from the first objects
    assert [key for key, _ in cache.items()] == [("default", f"cm-{i}") for i in range(20)]
    cache.pop(("default", "cm-3"))
    assert cache.get(("default", "cm-3")) is None
    assert len(cache) == 19


def test_cache_refuses_a_resource_version_it_cannot_hold() -> None:
    obj = configmap("odd")
    obj["metadata"]["resourceVersion"] = "9" * 70_000
    with pytest.raises(UnencodableError):
        ObjectCache().put(("default", "odd"), obj)


async def test_a_410_between_pages_relists_without_repeats_or_losses(
    sandbox: Sandbox, kube: KubeClient
) -> None:
    for name in ("a", "b", "c", "d", "e"):
        sandbox.create(configmap(name, v="0"))
    recorder = Recorder()
    broke = False

    def sink(event_type: str, obj: dict[str, Any]) -> None:
        """During the first page, change the cluster and make the server forget the list's
        snapshot: the request for the second page gets a 410."""
        nonlocal broke
        recorder(event_type, obj)
        if not broke:
            broke = True
            sandbox.delete("", "v1", "configmaps", "default", "e")
            sandbox.patch("", "v1", "configmaps", "default", "d", {"data": {"v": "1"}})
            sandbox.create(configmap("f", v="1"))
            sandbox.compact()

    async with running(kube, page_size=2) as r:
        r.informer.sink = sink
        async with asyncio.timeout(WAIT):
            await r.informer.synced.wait()
        assert r.informer.relists_after_gone == 1
        assert r.informer.lists == 1  # the one that finished
        names = [(t, n) for t, n, _ in recorder.events]
        # Each object once, as the second list found it; "e" was never listed.
        assert sorted(names) == [
            ("ADDED", f"default/{n}") for n in ("a", "b", "c", "d", "f")
        ]
        assert r.informer.cache[("default", "d")]["data"] == {"v": "1"}
        assert {key[1] for key in r.informer.cache} == {"a", "b", "c", "d", "f"}
        # The watch resumes from the finished list.
        sandbox.create(configmap("g"))
        await wait_until(lambda: recorder.has("ADDED", "default/g"), "a live event")


async def test_relist_keeps_the_dictionary_and_reports_deletions(
    sandbox: Sandbox, kube: KubeClient
) -> None:
    for i in range(12):
        sandbox.create(configmap(f"cm-{i:02d}", v=str(i)))
    async with running(kube, page_size=5) as r:
        async with asyncio.timeout(WAIT):
            await r.informer.synced.wait()
        dictionary = r.informer.cache.dictionary
        assert dictionary is not None
        mark = len(r.sink.events)
        await sandbox.drop_watches()
        sandbox.delete("", "v1", "configmaps", "default", "cm-07")
        sandbox.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}})
        sandbox.compact()
        await sandbox.drop_watches()
        await wait_until(lambda: r.informer.lists >= 2, "the relist")
        assert r.sink.since(mark) == [("DELETED", "default/cm-07")]
        assert r.informer.cache.dictionary is dictionary
        assert r.informer.cache[("default", "cm-03")]["data"] == {"v": "3"}
        assert len(r.informer.cache) == 11


def test_a_cache_of_a_kind_reads_entries_back_shaped() -> None:
    pods = Kind("", "v1", "pods")
    nodes = Kind("", "v1", "nodes")
    pod = {
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default", "uid": "u", "resourceVersion": "3"},
        "spec": {"containers": [{"name": "a", "env": [{"name": "T", "value": "secret"}]}]},
    }
    node = {"kind": "Node", "metadata": {"name": "n", "uid": "u", "resourceVersion": "4"}}
    for kind, obj in ((pods, pod), (nodes, node)):
        cache = ObjectCache(kind)
        cache.put(("default", "x"), obj)
        (entry,) = [entry for _, entry in cache.entries()]
        assert cache.shaped(entry) == shape(kind, obj)
        assert cache.parse(entry) == obj
    assert cache.shaped(entry)["status"] == {"conditions": None}  # the node: nulled by shaping


async def test_a_first_list_logs_its_arrivals_in_order_and_drops_the_log_when_done(
    sandbox: Sandbox, kube: KubeClient
) -> None:
    names = [f"cm-{n}" for n in range(7)]
    for name in names:
        sandbox.create(configmap(name))
    logs: list[tuple[int, int]] = []  # (log id, keys logged) as each object is reported
    seen: list[Any] = []

    async with running(kube, page_size=2) as r:
        informer = r.informer

        def sink(event_type: str, obj: dict[str, Any]) -> None:
            arrivals = informer.arrivals
            assert arrivals is not None, "a first list logs from its first page on"
            if not seen or seen[-1] is not arrivals:
                seen.append(arrivals)
            logs.append((id(arrivals), len(arrivals.keys)))

        informer.sink = sink
        async with asyncio.timeout(WAIT):
            await informer.synced.wait()
        assert informer.arrivals is None  # dropped once the list is complete
        (log,) = seen
        assert log.keys == [("default", name) for name in names]  # the list's order
        assert not log.abandoned
        # Each object is logged after its sink call: a reader never meets an unreported one.
        assert [count for _, count in logs] == list(range(7))


async def test_a_list_that_fails_midway_abandons_its_log_and_relists_without_one(
    sandbox: Sandbox, kube: KubeClient
) -> None:
    for name in ("a", "b", "c", "d", "e"):
        sandbox.create(configmap(name, v="0"))
    seen: list[Any] = []
    broke = False

    async with running(kube, page_size=2) as r:
        informer = r.informer

        def sink(event_type: str, obj: dict[str, Any]) -> None:
            nonlocal broke
            seen.append(informer.arrivals)
            if not broke:  # the next page request gets a 410 (see the test above)
                broke = True
                sandbox.create(configmap("f", v="1"))
                sandbox.compact()

        informer.sink = sink
        async with asyncio.timeout(WAIT):
            await informer.synced.wait()
        assert informer.relists_after_gone == 1
        first = seen[0]
        assert first is not None and first.abandoned
        # The relist diffs against a cache that is not empty: no log, whatever it reports.
        assert seen[-1] is None
        assert len(seen) > len(first.keys)
