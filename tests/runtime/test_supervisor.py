"""Background tasks are supervised: a failure is logged, counted and restarted, and a task that
keeps failing stops the process with a non-zero exit. Nothing is swallowed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from clustersync.adapters.store import ObjectKey, StoredObject, Write
from clustersync.adapters.store.sqlite import open_sqlite
from clustersync.cli.common import CommandError
from clustersync.cli.serve import _serve
from clustersync.model import Kind, ObjectRef
from clustersync.runtime.batcher import WriteBatcher
from clustersync.runtime.supervisor import Supervisor


def failures(component: str, task: str) -> float:
    value = REGISTRY.get_sample_value(
        "clustersync_task_failures_total", {"component": component, "task": task}
    )
    return value or 0.0


async def test_a_failing_task_is_logged_counted_and_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = Supervisor("test-restart", restart_delay=0.01)
    runs: list[int] = []
    third_run = asyncio.Event()

    async def flaky() -> None:
        runs.append(len(runs) + 1)
        if len(runs) <= 2:
            raise ValueError(f"boom {len(runs)}")
        third_run.set()
        await asyncio.Event().wait()  # then runs until stopped

    with caplog.at_level(logging.ERROR, "clustersync.supervisor"):
        supervisor.spawn("flaky", flaky)
        async with asyncio.timeout(10):
            await third_run.wait()
    assert runs == [1, 2, 3]
    assert supervisor.running("flaky")
    assert not supervisor.failed.is_set()
    assert failures("test-restart", "flaky") == 2
    logged = [r for r in caplog.records if "task flaky failed" in r.getMessage()]
    assert len(logged) == 2
    assert logged[0].exc_info is not None and "boom 1" in str(logged[0].exc_info[1])
    await supervisor.stop()
    assert not supervisor.running("flaky")


async def test_a_task_that_returns_counts_as_a_failure() -> None:
    supervisor = Supervisor("test-return", restart_delay=0.01, max_failures=2)

    async def quits() -> None:
        return

    supervisor.spawn("quits", quits)
    async with asyncio.timeout(10):
        await supervisor.failed.wait()
    assert failures("test-return", "quits") == 2
    assert supervisor.failure is not None and "should run until stopped" in str(supervisor.failure)
    await supervisor.stop()


async def test_a_task_that_keeps_failing_stops_the_command_with_exit_1() -> None:
    supervisor = Supervisor("test-fatal", restart_delay=0.01, max_failures=3)
    other = Supervisor("test-quiet")

    async def broken() -> None:
        raise OSError("disk on fire")

    supervisor.spawn("broken", broken)
    with pytest.raises(CommandError) as raised:
        async with asyncio.timeout(10):
            await _serve(other, supervisor)
    assert raised.value.code == 1
    assert "broken failed 3 time(s)" in str(raised.value)
    assert "disk on fire" in str(raised.value)
    await supervisor.stop()


def _row(name: str, seq: int) -> StoredObject:
    ref = ObjectRef(Kind("", "v1", "configmaps"), "shop", name)
    return StoredObject(ObjectKey("acme", "east", ref), f"uid-{name}", "1", "c", b"{}", seq)


class DiesOnce(WriteBatcher):
    """A batcher whose loop hits a bug once (the store itself is real)."""

    died = False

    def _take(self) -> list[tuple[Sequence[Write], asyncio.Future[None]]]:
        if not self.died:
            self.died = True
            raise RuntimeError("a bug in the batch loop")
        return super()._take()


async def test_a_dying_write_batcher_fails_its_callers_and_restarts(tmp_path: Path) -> None:
    store = await open_sqlite(f"sqlite:///{tmp_path}/batcher.db")
    batcher = DiesOnce(store, supervisor=Supervisor("test-batcher", restart_delay=0.01))
    batcher.start()
    try:
        with pytest.raises(RuntimeError, match="a bug in the batch loop"):
            async with asyncio.timeout(10):  # before: the caller waited forever
                await batcher.apply([_row("first", 1)])
        async with asyncio.timeout(10):
            await batcher.apply([_row("second", 2)])  # the restarted loop writes it
        stored = [row.key.ref.name for row in await store.list("acme", "east")]
        assert stored == ["second"]
        assert failures("test-batcher", "write-batcher") == 1
    finally:
        await batcher.stop()
        await store.close()
