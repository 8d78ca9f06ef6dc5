"""A first sync sends while it lists: the inventory request leaves as soon as the kind's list has
begun, its answer is reconciled page by page, and deletions wait for the complete list."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from clustersync.adapters.kube import KubeApi
from clustersync.adapters.kube.base import KubeError, ListPage
from clustersync.adapters.kube.informer import Informer
from clustersync.model import Kind
from clustersync.runtime.agent import Agent

try:
    from tests.runtime.harness import CLUSTER_A, CONFIGMAPS, World, configmap, eventually
except ImportError:
    from harness import (  # type: ignore[no-redef]
        CLUSTER_A,
        CONFIGMAPS,
        World,
        configmap,
        eventually,
    )

PAGE = 4  # objects per list page: many pages for a few dozen objects
NAMES = [f"cm-{n:02d}" for n in range(40)]
DOOMED = ["doomed-1", "doomed-2", "doomed-3"]


class HeldList:
    """The cluster's real API, whose first list of ``kind`` pauses after ``pages`` pages until
    the test releases it (the page fetch is gated, so no timing decides what the test sees)."""

    def __init__(self, real: KubeApi, kind: Kind, pages: int) -> None:
        self.real = real
        self.kind = kind
        self.pages = pages
        self.holding = asyncio.Event()
        self.released = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    async def list_pages(self, kind: Kind, page_size: int = 500) -> AsyncIterator[ListPage]:
        taken = 0
        async for page in self.real.list_pages(kind, page_size):
            yield page
            taken += 1
            if kind == self.kind and taken == self.pages and not self.released.is_set():
                self.holding.set()
                await self.released.wait()


async def _backend_holds_a_stale_cluster(world: World) -> None:
    """The backend holds every configmap of an earlier sync; since then each changed, some were
    deleted and one was created, while no agent ran."""
    objects = [configmap(name, version="1") for name in NAMES + DOOMED]
    cluster = await world.add_cluster(CLUSTER_A)
    for obj in objects:
        cluster.create(obj)
    world.start_agent(CLUSTER_A)
    await world.wait_synced(CLUSTER_A)
    await world.stop_agent(CLUSTER_A)
    await world.wait_disconnected(CLUSTER_A)
    for name in NAMES:
        cluster.patch(CONFIGMAPS, "shop", name, {"data": {"version": "2"}})
    for name in DOOMED:
        cluster.delete(CONFIGMAPS, "shop", name)
    cluster.create(configmap("newcomer", version="2"))
    assert not await world.in_sync(CLUSTER_A)


def _start_with_small_pages(world: World) -> Agent:
    agent = world.start_agent(CLUSTER_A)  # its tasks start at the next await
    for informer in agent.informers.values():
        informer.page_size = PAGE
    return agent


async def _rows_present(world: World, names: list[str]) -> bool:
    rows = [await world.row(CLUSTER_A, CONFIGMAPS, "shop", name) for name in names]
    return all(row is not None for row in rows)


async def test_a_first_sync_over_many_pages_converges_to_the_cluster(world: World) -> None:
    await _backend_holds_a_stale_cluster(world)
    agent = _start_with_small_pages(world)
    await world.wait_synced(CLUSTER_A)
    assert await world.in_sync(CLUSTER_A)  # the independent checker: rows against the sandbox
    assert not await _rows_present(world, DOOMED[:1])
    assert agent.informers[CONFIGMAPS].lists == 1


async def _hold_the_first_list(world: World, held_type: type[HeldList]) -> tuple[
    Informer, HeldList, list[str]
]:
    """Start the agent on a stale backend, its configmaps list held after two pages, and wait
    until the changed configmaps those pages brought are current in the store (sent while the
    list is still under way). Returns the informer, the held API and those configmaps' names."""
    await _backend_holds_a_stale_cluster(world)
    agent = _start_with_small_pages(world)
    informer = agent.informers[CONFIGMAPS]
    held = held_type(informer.api, CONFIGMAPS, pages=2)
    informer.api = held
    async with asyncio.timeout(10):
        await held.holding.wait()
    arrived = [name for namespace, name in informer.cache if name in NAMES]
    assert arrived, "the first pages hold none of the changed configmaps"

    async def arrived_are_current() -> bool:
        return all(
            [await world.matches_live(CLUSTER_A, CONFIGMAPS, "shop", name) for name in arrived]
        )

    await eventually(arrived_are_current, what="the listed objects to reach the store")
    return informer, held, arrived


async def test_objects_go_out_before_the_list_completes_and_deletions_after(world: World) -> None:
    # While the list is held, the changed objects it brought reach the backend...
    informer, held, _ = await _hold_the_first_list(world, HeldList)
    assert not informer.synced.is_set()
    # ...but nothing is deleted: the rest of the list may still hold any object.
    assert await _rows_present(world, DOOMED)

    held.released.set()
    await world.wait_synced(CLUSTER_A)
    assert await world.in_sync(CLUSTER_A)
    assert not await _rows_present(world, DOOMED[:1])


async def test_a_list_that_fails_midway_restarts_and_still_converges(world: World) -> None:
    informer, held, arrived = await _hold_the_first_list(world, HeldList)
    not_arrived = [name for name in NAMES if name not in arrived]
    # While the list is held the cluster changes, and the server forgets the list's snapshot:
    # the list's next page gets 410 and the informer lists again, diffing against its cache.
    cluster = world.clusters[CLUSTER_A]
    cluster.delete(CONFIGMAPS, "shop", arrived[0])
    cluster.delete(CONFIGMAPS, "shop", not_arrived[-1])
    cluster.patch(CONFIGMAPS, "shop", not_arrived[0], {"data": {"version": "3"}})
    cluster.create(configmap("latecomer", version="3"))
    cluster.sandbox.compact()
    relists = informer.relists_after_gone
    held.released.set()

    await world.wait_synced(CLUSTER_A)
    assert informer.relists_after_gone > relists, "the list never got its 410"
    assert await world.in_sync(CLUSTER_A)
    assert not await _rows_present(world, [arrived[0]])
    assert not await _rows_present(world, [not_arrived[-1]])
    assert await _rows_present(world, ["latecomer"])


class FailingList(HeldList):
    """Like HeldList, but once released the held list fails, and so does every list of the kind
    after it, until ``healed``: a kind that stops being listable midway (a permission revoked)."""

    def __init__(self, real: KubeApi, kind: Kind, pages: int) -> None:
        super().__init__(real, kind, pages)
        self.healed = asyncio.Event()
        self.failures = 0

    def _refuse(self) -> None:
        self.failures += 1
        raise KubeError("forbidden for this test", status=403)

    async def list_pages(self, kind: Kind, page_size: int = 500) -> AsyncIterator[ListPage]:
        failing = kind == self.kind and not self.healed.is_set()
        if failing and self.released.is_set():
            self._refuse()
        async for page in super().list_pages(kind, page_size):
            yield page
            if failing and self.released.is_set() and not self.healed.is_set():
                self._refuse()


async def test_a_first_list_that_keeps_failing_never_holds_back_backend_messages(
    world: World,
) -> None:
    # The answer to the early request is being reconciled as the list goes...
    informer, failing, _ = await _hold_the_first_list(world, FailingList)
    assert isinstance(failing, FailingList)
    failing.released.set()
    await eventually(lambda: failing.failures >= 2, what="the list to fail again")
    # ...and the list now keeps failing: a backend write must still be carried out.
    cluster = world.clusters[CLUSTER_A]
    await world.api_put(CLUSTER_A, configmap("pushed", version="p"))
    await eventually(lambda: cluster.get(CONFIGMAPS, "shop", "pushed") is not None,
                     what="the pushed configmap in the cluster")
    assert not informer.synced.is_set()
    assert await _rows_present(world, DOOMED)  # nothing deleted on a list that never completed

    failing.healed.set()
    await world.wait_synced(CLUSTER_A, timeout=60)
    assert await world.in_sync(CLUSTER_A)
    assert not await _rows_present(world, DOOMED[:1])
