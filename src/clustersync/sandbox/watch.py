"""Streaming of watch responses (newline-delimited JSON over chunked HTTP)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from aiohttp import web

from . import jsonio
from .discovery import to_table
from .errors import status_object
from .resources import ResourceType
from .state import Store, Watcher, WatchItem


class WatchStream:
    """Writes one watcher's events to one HTTP response."""

    def __init__(
        self,
        store: Store,
        rt: ResourceType,
        watcher: Watcher,
        *,
        bookmarks: bool,
        bookmark_interval: Callable[[], float],
        timeout: float | None,
        table: str | None,  # includeObject mode when the client asked for Tables
    ) -> None:
        self.store = store
        self.rt = rt
        self.watcher = watcher
        self.bookmarks = bookmarks
        self.bookmark_interval = bookmark_interval
        self.timeout = timeout
        self.table = table
        self._sent_columns = False
        self._resp: web.StreamResponse | None = None

    async def _send(self, etype: str, obj: dict[str, Any]) -> None:
        assert self._resp is not None
        if self.table is not None and etype in ("ADDED", "MODIFIED", "DELETED"):
            obj = to_table([obj], {}, self.table, with_columns=not self._sent_columns)
            self._sent_columns = True
        await self._resp.write(jsonio.dumps({"type": etype, "object": obj}) + b"\n")

    async def _send_bookmark(self, *, initial_end: bool = False) -> None:
        meta: dict[str, Any] = {"resourceVersion": str(self.store.rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        obj = {"kind": self.rt.kind, "apiVersion": self.rt.api_version, "metadata": meta}
        await self._send("BOOKMARK", obj)

    async def _send_gone(self, message: str) -> None:
        await self._send("ERROR", status_object(410, "Expired", message))

    async def run(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            status=200,
            headers={"Content-Type": "application/json", "Cache-Control": "no-cache, private"},
        )
        resp.enable_chunked_encoding()
        self._resp = resp
        w = self.watcher
        try:
            await resp.prepare(request)
            if w.gone_message is not None:
                await self._send_gone(w.gone_message)
            else:
                await self._pump()
            with contextlib.suppress(ConnectionError):
                await resp.write_eof()
        except ConnectionError:
            pass  # the client went away; nothing left to tell it
        finally:
            self.store.unwatch(w)
            w.finished.set()
        return resp

    async def _pump(self) -> None:
        w = self.watcher
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout if self.timeout else None
        for etype, obj in w.initial:
            await self._send(etype, obj)
        w.initial = []
        if w.initial_end_bookmark and self.bookmarks:
            await self._send_bookmark(initial_end=True)
        next_bookmark = loop.time() + self.bookmark_interval()
        while True:
            now = loop.time()
            waits = [] if deadline is None else [deadline - now]
            if self.bookmarks:
                waits.append(next_bookmark - now)
            wait = max(0.0, min(waits)) if waits else None
            item: WatchItem | None
            try:
                # Not wait_for: on Python 3.11 it can swallow a cancellation (or drop an item)
                # when the queue yields at the moment the wait is cancelled.
                async with asyncio.timeout(wait):
                    item = await w.queue.get()
            except TimeoutError:
                if deadline is not None and loop.time() >= deadline:
                    return
                # Only bookmark when everything queued was written, so the
                # bookmark RV never runs ahead of what the client has seen.
                if w.queue.empty():
                    await self._send_bookmark()
                next_bookmark = loop.time() + self.bookmark_interval()
                continue
            if item is None:
                if w.end_reason == "overflow":
                    await self._send_gone("watch queue overflowed; the client was too slow")
                return
            await self._send(*item)
