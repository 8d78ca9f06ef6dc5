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
from .state import Store, Watcher, WatchItem, decode

# Replayed events are written in batches of about this many bytes: one write per event would
# cost a task switch each for the 100k ADDEDs of a large initial state.
_REPLAY_CHUNK = 256 * 1024


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

    def _frame(self, etype: str, raw: bytes) -> bytes:
        """One event line; a stored object's bytes go out as they are unless a Table is due."""
        if self.table is not None and etype in ("ADDED", "MODIFIED", "DELETED"):
            table = to_table([decode(raw)], {}, self.table, with_columns=not self._sent_columns)
            self._sent_columns = True
            raw = jsonio.dumps(table)
        return b'{"type":"' + etype.encode() + b'","object":' + raw + b"}\n"

    async def _send(self, etype: str, raw: bytes) -> None:
        assert self._resp is not None
        await self._resp.write(self._frame(etype, raw))

    async def _send_obj(self, etype: str, obj: dict[str, Any]) -> None:
        await self._send(etype, jsonio.dumps(obj))

    async def _send_bookmark(self, *, initial_end: bool = False) -> None:
        meta: dict[str, Any] = {"resourceVersion": str(self.store.rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        obj = {"kind": self.rt.kind, "apiVersion": self.rt.api_version, "metadata": meta}
        await self._send_obj("BOOKMARK", obj)

    async def _send_gone(self, message: str) -> None:
        await self._send_obj("ERROR", status_object(410, "Expired", message))

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

    async def _replay(self) -> None:
        """Write the watcher's replayed events, batched."""
        assert self._resp is not None
        w = self.watcher
        initial, w.initial = w.initial, []
        batch: list[bytes] = []
        size = 0
        for etype, raw in initial:
            frame = self._frame(etype, raw)
            batch.append(frame)
            size += len(frame)
            if size >= _REPLAY_CHUNK:
                await self._resp.write(b"".join(batch))
                batch, size = [], 0
        if batch:
            await self._resp.write(b"".join(batch))

    async def _pump(self) -> None:
        w = self.watcher
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout if self.timeout else None
        await self._replay()
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
                await self._end()
                return
            frames, closed = self._take_ready(item)
            assert self._resp is not None
            await self._resp.write(b"".join(frames))
            if closed:
                await self._end()
                return

    def _take_ready(self, first: WatchItem) -> tuple[list[bytes], bool]:
        """``first`` and the events already queued behind it, framed, for one write: under a
        burst of changes a watcher costs one TLS record and one send per batch, not per event.
        Also whether the queue's end mark was among them."""
        frames = [self._frame(*first)]
        size = len(frames[0])
        queue = self.watcher.queue
        while size < _REPLAY_CHUNK and not queue.empty():
            item = queue.get_nowait()
            if item is None:
                return frames, True
            frames.append(self._frame(*item))
            size += len(frames[-1])
        return frames, False

    async def _end(self) -> None:
        if self.watcher.end_reason == "overflow":
            await self._send_gone("watch queue overflowed; the client was too slow")
