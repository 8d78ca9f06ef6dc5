"""The informer against a real sandbox: initial list, live events, resume, relist after 410."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from clustersync.adapters.kube.client import KubeClient
from clustersync.adapters.kube.informer import Informer
from clustersync.model import Kind
from clustersync.protocol.backoff import Backoff
from clustersync.sandbox import Sandbox

CONFIGMAPS = Kind("", "v1", "configmaps")
WIDGETS = Kind("example.com", "v1", "widgets")
WAIT = 10.0


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Poll ``condition`` (yielding to the loop between checks) until true or fail."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def configmap(name: str, namespace: str = "default", **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": dict(data),
    }


@dataclass
class Recorder:
    events: list[tuple[str, str, str]] = field(default_factory=list)  # type, ns/name, rv
    objects: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, event_type: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        self.events.append(
            (event_type, f"{meta['namespace']}/{meta['name']}", meta["resourceVersion"])
        )
        self.objects.append(obj)

    def since(self, start: int) -> list[tuple[str, str]]:
        return [(t, name) for t, name, _ in self.events[start:]]

    def has(self, event_type: str, name: str) -> bool:
        return any(t == event_type and n == name for t, n, _ in self.events)


@dataclass
class Running:
    informer: Informer
    sink: Recorder
    task: asyncio.Task[None]


@contextlib.asynccontextmanager
async def running(
    kube: KubeClient, kind: Kind = CONFIGMAPS, **kwargs: Any
) -> AsyncIterator[Running]:
    sink = Recorder()
    informer = Informer(kube, kind, sink, **kwargs)
    task = asyncio.create_task(informer.run())
    try:
        yield Running(informer, sink, task)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def cache_names(informer: Informer) -> set[str]:
    return {f"{ns}/{name}" for ns, name in informer.cache}


async def test_initial_list_then_live_events(sandbox: Sandbox, kube: KubeClient) -> None:
    for i in range(3):
        sandbox.create(configmap(f"cm-{i}", n=str(i)))
    async with running(kube) as r:
        async with asyncio.timeout(WAIT):
            await r.informer.synced.wait()
        assert sorted(r.sink.since(0)) == [
            ("ADDED", "default/cm-0"),
            ("ADDED", "default/cm-1"),
            ("ADDED", "default/cm-2"),
        ]
        assert r.informer.lists == 1
        assert all(o["kind"] == "ConfigMap" and o["apiVersion"] == "v1" for o in r.sink.objects)
        assert r.informer.resource_version == str(sandbox.resource_version)

        mark = len(r.sink.events)
        sandbox.create(configmap("cm-new"))
        sandbox.patch("", "v1", "configmaps", "default", "cm-0", {"data": {"n": "changed"}})
        sandbox.delete("", "v1", "configmaps", "default", "cm-1")
        await wait_until(lambda: len(r.sink.events) >= mark + 3, "three live events")
        assert r.sink.since(mark) == [
            ("ADDED", "default/cm-new"),
            ("MODIFIED", "default/cm-0"),
            ("DELETED", "default/cm-1"),
        ]
        assert r.sink.objects[mark + 1]["data"] == {"n": "changed"}
        assert cache_names(r.informer) == {"default/cm-0", "default/cm-2", "default/cm-new"}
        assert r.informer.cache[("default", "cm-0")]["data"] == {"n": "changed"}
        assert r.informer.lists == 1
        assert not r.task.done()


async def test_empty_kind_syncs(sandbox: Sandbox, kube: KubeClient) -> None:
    async with running(kube) as r:
        async with asyncio.timeout(WAIT):
            await r.informer.synced.wait()
        assert r.sink.events == []
        sandbox.create(configmap("first"))
        await wait_until(lambda: r.sink.has("ADDED", "default/first"), "the first object")


async def test_resumes_after_dropped_watches_without_relisting(
    sandbox: Sandbox, kube: KubeClient
) -> None:
    sandbox.create(configmap("keep"))
    sandbox.create(configmap("gone"))
    async with running(kube) as r:
        async with asyncio.timeout(WAIT):
            await r.informer.synced.wait()
        for round_ in range(3):
            mark = len(r.sink.events)
            await sandbox.drop_watches()
            # Changes right after the drop: made while the informer reconnects, or just after.
            sandbox.create(configmap(f"new-{round_}"))
            sandbox.patch("", "v1", "configmaps", "default", "keep", {"data": {"r": str(round_)}})
            if round_ == 0:
                sandbox.delete("", "v1", "configmaps", "default", "gone")
            expected = [("ADDED", f"default/new-{round_}"), ("MODIFIED", "default/keep")]
            if round_ == 0:
                expected.append(("DELETED", "default/gone"))
            target = mark + len(expected)
            await wait_until(
                lambda target=target: len(r.sink.events) >= target,  # type: ignore[misc]
                f"the events of round {round_}",
            )
            assert r.sink.since(mark) == expected
        assert r.informer.lists == 1
        assert r.informer.relists_after_gone == 0
        assert cache_names(r.informer) == {"default/keep", "default/new-0", "default/new-1",
                                           "default/new-2"}
        assert r.informer.cache[("default", "keep")]["data"] == {"r": "2"}
        # Nothing was duplicated by the resumes.
        assert len(r.sink.events) == len(set(r.sink.events))


async def test_relists_after_410_and_reports_what_changed_meanwhile(
    sandbox: Sandbox, kube: KubeClient
) -> None:
    for name in ("stays", "deleted-meanwhile", "modified-meanwhile"):
        sandbox.create(configmap(name, v="0"))
    async with running(kube) as r:
        async with asyncio.timeout(WAIT):
            await r.informer.synced.wait()
        mark = len(r.sink.events)
        await sandbox.drop_watches()
        # No await from here to the second drop: the informer cannot act in between. Whether or
        # not it re-opened its watch during the first drop, it resumes from a resourceVersion the
        # compaction forgot (the namespace is created last), so it must relist.
        sandbox.delete("", "v1", "configmaps", "default", "deleted-meanwhile")
        sandbox.create(configmap("created-meanwhile", v="1"))
        sandbox.patch("", "v1", "configmaps", "default", "modified-meanwhile", {"data": {"v": "1"}})
        sandbox.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}})
        sandbox.compact()
        await sandbox.drop_watches()

        await wait_until(lambda: r.informer.relists_after_gone >= 1, "a relist after 410")
        await wait_until(lambda: r.informer.lists >= 2, "the relist")
        await wait_until(lambda: len(r.sink.events) >= mark + 3, "the changes")
        assert sorted(r.sink.since(mark)) == [
            ("ADDED", "default/created-meanwhile"),
            ("DELETED", "default/deleted-meanwhile"),
            ("MODIFIED", "default/modified-meanwhile"),
        ]
        assert cache_names(r.informer) == {
            "default/stays",
            "default/created-meanwhile",
            "default/modified-meanwhile",
        }
        assert r.informer.cache[("default", "modified-meanwhile")]["data"] == {"v": "1"}
        # The watch works again after the relist.
        mark = len(r.sink.events)
        sandbox.delete("", "v1", "configmaps", "default", "stays")
        await wait_until(lambda: len(r.sink.events) > mark, "a live event after the relist")
        assert r.sink.since(mark) == [("DELETED", "default/stays")]


async def test_relist_emits_nothing_for_unchanged_objects(
    sandbox: Sandbox, kube: KubeClient
) -> None:
    for i in range(4):
        sandbox.create(configmap(f"cm-{i}"))
    async with running(kube) as r:
        async with asyncio.timeout(WAIT):
            await r.informer.synced.wait()
        mark = len(r.sink.events)
        await sandbox.drop_watches()
        sandbox.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}})
        sandbox.compact()
        await sandbox.drop_watches()
        await wait_until(lambda: r.informer.lists >= 2, "the relist")
        # Prove the informer is watching again before checking that nothing was emitted.
        sandbox.create(configmap("probe"))
        await wait_until(lambda: r.sink.has("ADDED", "default/probe"), "the probe event")
        assert r.sink.since(mark) == [("ADDED", "default/probe")]
        assert r.informer.relists_after_gone >= 1


async def test_unserved_kind_keeps_retrying(
    sandbox: Sandbox, kube: KubeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="clustersync.informer")
    fast = Backoff(initial=0.01, multiplier=1.0, ceiling=0.01, jitter=0.0)

    def attempts() -> int:
        return sum("not served" in rec.getMessage() for rec in caplog.records)

    async with running(kube, WIDGETS, backoff=fast) as r:
        await wait_until(lambda: attempts() >= 3, "three failed attempts")
        assert not r.task.done()  # it did not crash and did not give up
        assert not r.informer.synced.is_set()
        assert r.informer.lists == 0
        assert r.sink.events == []
    assert r.task.cancelled()


async def test_survives_a_server_restart(sandbox: Sandbox, kube: KubeClient) -> None:
    """A transient failure (connection refused) does not end the informer either."""
    sandbox.create(configmap("before"))
    async with running(kube, backoff=Backoff(initial=0.05, ceiling=0.2)) as r:
        async with asyncio.timeout(WAIT):
            await r.informer.synced.wait()
        port = int(sandbox.url.rsplit(":", 1)[1])
        await sandbox.stop()
        sandbox.create(configmap("while-down"))
        await sandbox.start(port=port)
        await wait_until(lambda: r.sink.has("ADDED", "default/while-down"), "the missed object")
        assert not r.task.done()
        assert cache_names(r.informer) == {"default/before", "default/while-down"}


async def test_relist_diff_reports_deletions_made_while_the_server_was_down(
    sandbox: Sandbox, kube: KubeClient
) -> None:
    """The server is down (not just the watch), so every change below is seen only by the relist
    diff: a deletion exists only as a missing key in the new list."""
    for name in ("stays", "deleted-meanwhile", "modified-meanwhile"):
        sandbox.create(configmap(name, v="0"))
    async with running(kube, backoff=Backoff(initial=0.05, ceiling=0.2)) as r:
        async with asyncio.timeout(WAIT):
            await r.informer.synced.wait()
        mark = len(r.sink.events)
        port = int(sandbox.url.rsplit(":", 1)[1])
        await sandbox.stop()
        sandbox.delete("", "v1", "configmaps", "default", "deleted-meanwhile")
        sandbox.create(configmap("created-meanwhile", v="1"))
        sandbox.patch("", "v1", "configmaps", "default", "modified-meanwhile", {"data": {"v": "1"}})
        sandbox.compact()
        await sandbox.start(port=port)
        await wait_until(lambda: r.informer.relists_after_gone >= 1, "a relist after 410")
        await wait_until(lambda: len(r.sink.events) >= mark + 3, "the changes")
        assert r.informer.lists == 2
        assert sorted(r.sink.since(mark)) == [
            ("ADDED", "default/created-meanwhile"),
            ("DELETED", "default/deleted-meanwhile"),
            ("MODIFIED", "default/modified-meanwhile"),
        ]
        deleted = r.sink.objects[mark:][[t for t, _ in r.sink.since(mark)].index("DELETED")]
        assert deleted["metadata"]["name"] == "deleted-meanwhile"  # the last known object
        assert cache_names(r.informer) == {
            "default/stays",
            "default/created-meanwhile",
            "default/modified-meanwhile",
        }
