"""An informer started from a saved cache watches from its resourceVersion instead of listing;
the sandbox replays what changed meanwhile, or answers 410 and the informer lists."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from clustersync.adapters.kube.client import KubeClient
from clustersync.adapters.kube.informer import Informer, UnusableSnapshotError
from clustersync.protocol import cache_entry
from clustersync.protocol.cache_snapshot import CacheSnapshot
from clustersync.sandbox import Sandbox

from .test_informer import CONFIGMAPS, WAIT, Recorder, configmap, wait_until


@contextlib.asynccontextmanager
async def started(informer: Informer) -> AsyncIterator[Informer]:
    task = asyncio.create_task(informer.run())
    try:
        yield informer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def served(sandbox: Sandbox) -> dict[str, str]:
    """name -> resourceVersion of the configmaps the sandbox serves in "default"."""
    return {
        o["metadata"]["name"]: o["metadata"]["resourceVersion"]
        for o in sandbox.list("", "v1", "configmaps", "default")
    }


def cached(informer: Informer) -> dict[str, str]:
    return {
        name: informer.cache.resource_version((ns, name)) or ""
        for ns, name in informer.cache
        if ns == "default"
    }


async def saved_cache(sandbox: Sandbox, kube: KubeClient, count: int = 20) -> CacheSnapshot:
    """A first informer's cache of ``count`` configmaps, as the agent saves it at shutdown."""
    for i in range(count):
        sandbox.create(configmap(f"cm-{i}", n=str(i)))
    first = Informer(kube, CONFIGMAPS, Recorder())
    async with started(first):
        await wait_until(first.synced.is_set, "the first list")
    snapshot = first.snapshot()
    assert snapshot is not None
    assert len([key for key, _ in snapshot.entries if key[0] == "default"]) == count
    return snapshot


def change_while_down(sandbox: Sandbox) -> None:
    sandbox.patch("", "v1", "configmaps", "default", "cm-1", {"data": {"n": "changed"}})
    sandbox.delete("", "v1", "configmaps", "default", "cm-2")
    sandbox.create(configmap("born-while-down", n="new"))


async def test_a_restored_cache_is_watched_without_a_list_and_catches_up(
    sandbox: Sandbox, kube: KubeClient
) -> None:
    snapshot = await saved_cache(sandbox, kube)
    change_while_down(sandbox)
    sink = Recorder()
    second = Informer(kube, CONFIGMAPS, sink)
    second.restore(snapshot)
    async with started(second):
        await wait_until(second.synced.is_set, "the resumed watch to open")
        await wait_until(lambda: cached(second) == served(sandbox), "the cache to catch up")
        assert second.lists == 0
        assert second.resumes == 1
        assert sorted(sink.since(0)) == [
            ("ADDED", "default/born-while-down"),
            ("DELETED", "default/cm-2"),
            ("MODIFIED", "default/cm-1"),
        ]
        # Followed live afterwards, like any watch.
        sandbox.patch("", "v1", "configmaps", "default", "cm-3", {"data": {"n": "later"}})
        await wait_until(lambda: sink.has("MODIFIED", "default/cm-3"), "a live change")
        assert second.lists == 0


async def test_a_cache_older_than_the_history_is_listed_and_diffed(
    sandbox: Sandbox, kube: KubeClient
) -> None:
    snapshot = await saved_cache(sandbox, kube)
    change_while_down(sandbox)
    sandbox.compact()  # the snapshot's resourceVersion is gone: the watch answers 410
    sink = Recorder()
    second = Informer(kube, CONFIGMAPS, sink)
    second.restore(snapshot)
    async with started(second):
        await wait_until(lambda: second.lists == 1, "the list after 410", WAIT)
        assert second.resumes_abandoned == 1
        await wait_until(lambda: cached(second) == served(sandbox), "the cache to match")
        # The list's diff against the restored cache: exactly what changed, nothing else.
        assert sorted(sink.since(0)) == [
            ("ADDED", "default/born-while-down"),
            ("DELETED", "default/cm-2"),
            ("MODIFIED", "default/cm-1"),
        ]


async def test_an_error_before_the_watch_opens_drops_the_cache_for_a_list(
    sandbox: Sandbox, kube: KubeClient
) -> None:
    snapshot = await saved_cache(sandbox, kube, count=3)
    sandbox.fail_requests(500, 1)  # the resumed watch's request
    second = Informer(kube, CONFIGMAPS, Recorder())
    second.backoff.initial = 0.01
    second.restore(snapshot)
    async with started(second):
        await wait_until(lambda: second.lists == 1, "the list after the failed watch")
        assert (second.resumes, second.resumes_abandoned) == (0, 1)
        await wait_until(lambda: cached(second) == served(sandbox), "the cache to match")


def _swapped(snapshot: CacheSnapshot) -> CacheSnapshot:
    """Entries under each other's keys: well-formed bytes that lie about what they hold."""
    keys = [key for key, _ in snapshot.entries]
    entries = [e for _, e in snapshot.entries]
    return CacheSnapshot(snapshot.resource_version, snapshot.dictionary, list(zip(
        keys, entries[1:] + entries[:1], strict=True
    )))


def _lying_digests(snapshot: CacheSnapshot) -> CacheSnapshot:
    """Entries whose header's digest is not the digest of the object they hold."""
    entries = []
    for key, entry in snapshot.entries:
        facts = cache_entry.facts(entry)
        assert facts.digest is not None
        at = 2 + len(facts.resource_version) + 2 + len(facts.uid)  # the digest's first byte
        entries.append((key, entry[:at] + bytes([entry[at] ^ 0xFF]) + entry[at + 1 :]))
    return CacheSnapshot(snapshot.resource_version, snapshot.dictionary, entries)


@pytest.mark.parametrize("damage", ["swapped", "garbled", "lying digests"])
async def test_entries_that_are_not_what_they_claim_are_refused(
    sandbox: Sandbox, kube: KubeClient, damage: str
) -> None:
    snapshot = await saved_cache(sandbox, kube, count=5)
    if damage == "swapped":
        bad = _swapped(snapshot)
    elif damage == "lying digests":
        bad = _lying_digests(snapshot)
    else:
        bad = CacheSnapshot(
            snapshot.resource_version,
            snapshot.dictionary,
            [(key, entry[:-3]) for key, entry in snapshot.entries],
        )
    informer = Informer(kube, CONFIGMAPS, Recorder())
    with pytest.raises(UnusableSnapshotError):
        informer.restore(bad)
    assert len(informer.cache) == 0 and informer.resource_version == ""
    async with started(informer):  # and it lists as if nothing had been restored
        await wait_until(lambda: informer.lists == 1, "the list")


async def test_no_snapshot_is_offered_while_the_cache_is_between_two_versions(
    sandbox: Sandbox, kube: KubeClient
) -> None:
    """A snapshot is the cache exactly as of its resourceVersion: none is offered in the middle
    of a list (pages are newer than the version) or of an event (the sink hears it first)."""
    for i in range(30):
        sandbox.create(configmap(f"cm-{i}"))
    offered: list[tuple[str, CacheSnapshot | None]] = []

    def sink(event_type: str, obj: dict[str, Any]) -> None:
        offered.append((event_type, informer.snapshot()))

    informer = Informer(kube, CONFIGMAPS, sink, page_size=10)
    assert informer.snapshot() is None  # nothing listed yet
    async with started(informer):
        await wait_until(informer.synced.is_set, "the list")
        listed = informer.snapshot()
        assert listed is not None and len(listed.entries) == len(informer.cache)
        sandbox.patch("", "v1", "configmaps", "default", "cm-3", {"data": {"n": "x"}})
        await wait_until(lambda: offered[-1][0] == "MODIFIED", "the change")
        after = informer.snapshot()
    assert len(offered) > 30
    assert all(snapshot is None for _, snapshot in offered)
    assert after is not None and int(after.resource_version) > int(listed.resource_version)
    assert dict(after.entries)[("default", "cm-3")] != dict(listed.entries)[("default", "cm-3")]
