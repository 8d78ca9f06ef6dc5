"""Supervised background tasks: a failure is logged, counted and restarted, never swallowed.

A background task that dies unobserved leaves its work undone with nothing in the log (the
periodic reconciliation, the write batcher whose callers then wait forever, the accept loop).
Each one runs under a :class:`Supervisor`: an exception, or a return from a task meant to run
forever, is logged with its traceback, counted in ``clustersync_task_failures_total``, and the
task starts again after ``restart_delay``. A task that fails ``max_failures`` times within
``window`` seconds is given up on: the supervisor records the failure and sets ``failed``, and
the long-running command waits on that to stop the process with a non-zero exit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from clustersync.adapters.metrics import TASK_FAILURES

log = logging.getLogger("clustersync.supervisor")


Run = Callable[[], Coroutine[Any, Any, None]]


class TaskFailedError(RuntimeError):
    """A supervised task failed too often; the process should stop."""


class Supervisor:
    def __init__(
        self,
        component: str,
        *,
        restart_delay: float = 1.0,
        max_failures: int = 5,
        window: float = 60.0,
    ) -> None:
        self.component = component
        self.restart_delay = restart_delay
        self.max_failures = max_failures
        self.window = window
        self.failure: TaskFailedError | None = None
        self.failed = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def spawn(self, name: str, run: Run, *, restart: bool = True) -> None:
        """Run ``run()`` in the background; with ``restart``, it is meant to run until stopped."""
        if name in self._tasks and not self._tasks[name].done():
            raise RuntimeError(f"{self.component}: task {name} is already running")
        self._tasks[name] = asyncio.create_task(
            self._keep(name, run, restart), name=f"{self.component}:{name}"
        )

    def running(self, name: str) -> bool:
        task = self._tasks.get(name)
        return task is not None and not task.done()

    async def stop(self) -> None:
        """Cancel every task and wait until each has finished."""
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _keep(self, name: str, run: Run, restart: bool) -> None:
        failures: deque[float] = deque()
        while True:
            try:
                await run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error: BaseException = exc
                log.error("%s: task %s failed", self.component, name, exc_info=exc)
            else:
                if not restart:
                    return
                error = RuntimeError("returned, though it should run until stopped")
                log.error("%s: task %s %s", self.component, name, error)
            TASK_FAILURES.labels(self.component, name).inc()
            now = time.monotonic()
            failures.append(now)
            while failures and now - failures[0] > self.window:
                failures.popleft()
            if not restart or len(failures) >= self.max_failures:
                self._give_up(name, error, len(failures))
                return
            log.warning("%s: restarting task %s in %.1f s", self.component, name,
                        self.restart_delay)
            await asyncio.sleep(self.restart_delay)  # a restart backoff, not synchronisation

    def _give_up(self, name: str, error: BaseException, failures: int) -> None:
        reason = f"{self.component}: task {name} failed {failures} time(s), last: {error!r}"
        log.critical("%s; giving up", reason)
        if self.failure is None:
            self.failure = TaskFailedError(reason)
        self.failed.set()


def log_failure(component: str, what: str) -> Callable[[asyncio.Task[Any]], None]:
    """A done-callback for a one-shot task: its exception is logged and counted, not lost."""

    def done(task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            TASK_FAILURES.labels(component, what).inc()
            log.error("%s: %s failed", component, what, exc_info=exc)

    return done


async def wait_for_failure(*supervisors: Supervisor) -> TaskFailedError:
    """Wait until one of ``supervisors`` gives up on a task; returns its failure."""
    waits = [asyncio.create_task(s.failed.wait()) for s in supervisors]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
    failure = next(s.failure for s in supervisors if s.failure is not None)
    return failure
