"""Handlers running at once keep per-object order (runtime/object_order.py), and concurrent
reads share queries (ReadBatcher)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

import pytest

from clustersync.adapters.store import ObjectKey, StoredObject
from clustersync.adapters.store.sqlite import open_sqlite
from clustersync.model import Kind, ObjectRef
from clustersync.runtime.batcher import ReadBatcher
from clustersync.runtime.object_order import ObjectOrder

CLUSTER = ("acct", "c1")


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.001)


class Steps:
    """Handlers that log when they start and finish their block, and finish when told."""

    def __init__(self, order: ObjectOrder) -> None:
        self.order = order
        self.log: list[str] = []
        self.go: dict[str, asyncio.Event] = {}

    def start(
        self, name: str, objects: Sequence[Hashable] | None, cluster: tuple[str, str] = CLUSTER
    ) -> asyncio.Task[None]:
        self.go[name] = asyncio.Event()

        async def handler() -> None:
            async with self.order.turn(cluster, objects, retry_key=name):
                self.log.append(f"{name} in")
                await self.go[name].wait()
                self.log.append(f"{name} out")

        return asyncio.create_task(handler())

    def entered(self, name: str) -> bool:
        return f"{name} in" in self.log


async def test_messages_about_one_object_take_turns_others_run_at_once() -> None:
    steps = Steps(ObjectOrder())
    first = steps.start("first", ["x", "y"])
    second = steps.start("second", ["y"])  # shares y with first: waits
    other = steps.start("other", ["z"])
    twice = steps.start("twice", ["z", "z"])  # waits for "other" only, not for itself
    await until(lambda: steps.entered("first") and steps.entered("other"))
    assert not steps.entered("second") and not steps.entered("twice")
    steps.go["other"].set()
    await until(lambda: steps.entered("twice"))
    assert not steps.entered("second")
    steps.go["first"].set()
    await until(lambda: steps.entered("second"))
    for name in ("second", "twice"):
        steps.go[name].set()
    await asyncio.gather(first, second, other, twice)
    assert steps.log.index("first out") < steps.log.index("second in")
    assert steps.order.busy() == 0


async def test_a_whole_cluster_message_waits_for_all_before_it_and_holds_all_after() -> None:
    steps = Steps(ObjectOrder())
    tasks = [
        steps.start("a", ["x"]),
        steps.start("inventory", None),
        steps.start("b", ["y"]),  # a different object, but after the inventory
        steps.start("elsewhere", ["x"], cluster=("acct", "c2")),  # another cluster: free
    ]
    await until(lambda: steps.entered("a") and steps.entered("elsewhere"))
    assert not steps.entered("inventory") and not steps.entered("b")
    steps.go["a"].set()
    await until(lambda: steps.entered("inventory"))
    assert not steps.entered("b")
    steps.go["inventory"].set()
    await until(lambda: steps.entered("b"))
    steps.go["b"].set()
    steps.go["elsewhere"].set()
    await asyncio.gather(*tasks)
    assert steps.order.busy() == 0


async def test_a_failed_turn_is_kept_for_its_retry_and_then_given_back() -> None:
    order = ObjectOrder(keep_for=30)
    log: list[str] = []

    async def failing() -> None:
        async with order.turn(CLUSTER, ["x"], retry_key=7):
            log.append("first try")
            raise RuntimeError("store away")

    with pytest.raises(RuntimeError):
        await failing()

    async def later() -> None:
        async with order.turn(CLUSTER, ["x"], retry_key=8):
            log.append("later")

    waiting = asyncio.create_task(later())
    # It has taken its turn (busy 2) and waits behind the kept one; had the failed turn been
    # given back, it would have run to its end instead.
    await until(lambda: order.busy() == 2 or waiting.done())
    assert log == ["first try"] and order.busy() == 2
    async with order.turn(CLUSTER, ["x"], retry_key=7):  # the retry goes first, at once
        log.append("retry")
    await waiting
    assert log == ["first try", "retry", "later"]
    assert order.busy() == 0


async def test_a_kept_turn_whose_retry_never_comes_is_given_back() -> None:
    order = ObjectOrder(keep_for=0.05)
    with pytest.raises(RuntimeError):
        async with order.turn(CLUSTER, ["x"], retry_key=1):
            raise RuntimeError("handed to another process")
    async with asyncio.timeout(5):
        async with order.turn(CLUSTER, ["x"], retry_key=2):
            pass
    assert order.busy() == 0


def _key(name: str) -> ObjectKey:
    return ObjectKey("acct", "c1", ObjectRef(Kind("", "v1", "pods"), "default", name))


async def test_concurrent_reads_share_queries(tmp_path: Path) -> None:
    store = await open_sqlite(f"sqlite:///{tmp_path}/s.db")
    try:
        rows = [StoredObject(_key(f"p{i}"), "u", "1", f"sum{i}", b"{}", i + 1) for i in range(6)]
        assert await store.apply(rows) == 6
        reader = ReadBatcher(store)
        asked = [[_key("p0"), _key("p1")], [_key("p2"), _key("missing")], [_key("p1")]]
        answers = await asyncio.gather(*(reader.get_many(keys) for keys in asked))
        assert [sorted(a) for a in answers] == [
            sorted([_key("p0"), _key("p1")]), [_key("p2")], [_key("p1")]
        ]
        assert answers[0][_key("p1")].checksum == "sum1"
        assert reader.reads == 1  # all three asked before the reader ran: one query
        await reader.stop()
    finally:
        await store.close()


async def test_a_failed_read_fails_the_calls_it_served(tmp_path: Path) -> None:
    store = await open_sqlite(f"sqlite:///{tmp_path}/s.db")
    reader = ReadBatcher(store)
    await store.close()  # every read fails now
    results = await asyncio.gather(
        reader.get_many([_key("a")]), reader.get_many([_key("b")]), return_exceptions=True
    )
    assert all(isinstance(r, Exception) for r in results)
    await reader.stop()
