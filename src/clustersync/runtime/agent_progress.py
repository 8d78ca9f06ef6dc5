"""The agent's sync progress after each connect: a log line per kind every few seconds while it
runs, ``initial sync done: N objects in T s`` at the end, and (to a clustersync server) the same
counts as SyncProgress reports, which the fleet status shows (see protocol/progress.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

import aiohttp

from clustersync.adapters.kube.informer import Informer
from clustersync.link.frames import WebSocket, send
from clustersync.model import Kind
from clustersync.protocol.messages import Frame
from clustersync.protocol.progress import InitialSync, Listing

log = logging.getLogger("clustersync.agent")

PROGRESS_LOG_INTERVAL = 5.0  # seconds between progress lines (and reports) while syncing
CHECK_INTERVAL = 0.2  # seconds between checks whether the sync is done


class SyncProgressLog:
    def __init__(
        self, informers: Mapping[Kind, Informer], log_interval: float = PROGRESS_LOG_INTERVAL
    ) -> None:
        self.informers = informers
        self.log_interval = log_interval
        self.current: InitialSync | None = None
        self.syncs = 0  # completed syncs since start: the first is the initial one

    def listings(self) -> dict[Kind, Listing]:
        return {
            kind: Listing(len(informer.cache), informer.synced.is_set())
            for kind, informer in self.informers.items()
        }

    def begin(self, answers: bool) -> None:
        """A new connection: its sync starts from nothing sent."""
        self.current = InitialSync(tuple(self.informers), time.monotonic(), answers)

    def on_sent(self, frame: Frame) -> None:
        if self.current is not None and self.current.finished_at is None:
            self.current.on_sent(frame)

    def on_answer(self, kind: Kind) -> None:
        if self.current is not None and kind in self.informers:
            self.current.on_answer(kind, len(self.informers[kind].cache))

    async def run(self, ws: WebSocket, queued: Callable[[], int], reports: bool) -> None:
        """Until the sync is done: progress lines and, with ``reports``, SyncProgress frames."""
        sync = self.current
        if sync is None:
            return
        next_line = time.monotonic() + self.log_interval
        while not sync.done(self.listings(), queued()):
            await asyncio.sleep(CHECK_INTERVAL)  # a timer, not synchronisation
            if time.monotonic() >= next_line:
                next_line += self.log_interval
                listings = self.listings()
                for line in sync.lines(listings):
                    log.info("%s", line)
                if reports:
                    await self._report(ws, sync)
        sync.finished_at = time.monotonic()
        summary = sync.summary(self.listings(), sync.finished_at)
        self.syncs += 1
        if self.syncs == 1:
            log.info("%s", summary)
        else:
            log.info("resync after reconnect done: %s", summary.removeprefix("initial sync done: "))
        if reports:
            await self._report(ws, sync)

    async def _report(self, ws: WebSocket, sync: InitialSync) -> None:
        try:
            await send(ws, sync.report(self.listings()), "agent")
        except (ConnectionError, aiohttp.ClientError):
            return  # the connection is ending; the next one reports afresh
