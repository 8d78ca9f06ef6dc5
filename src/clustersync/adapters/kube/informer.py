"""List-then-watch for one kind, with a cache, resume, and relist on 410.

After a 410 the informer relists and diffs the new list against its cache: objects deleted while
the watch was broken exist only as missing keys, so they surface here as DELETED events instead of
being lost (kubescape and lightkube's retry mode lose them).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from clustersync.adapters.kube.base import KubeApi, KubeError, KubeGoneError, KubeNotFoundError
from clustersync.model import Kind
from clustersync.protocol.backoff import Backoff

log = logging.getLogger("clustersync.informer")

Key = tuple[str, str]  # namespace, name
EventSink = Callable[[str, dict[str, Any]], None]  # (ADDED|MODIFIED|DELETED, object)


def key_of(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _rv(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


class Informer:
    def __init__(
        self,
        api: KubeApi,
        kind: Kind,
        sink: EventSink,
        *,
        watch_timeout: int = 300,
        backoff: Backoff | None = None,
    ) -> None:
        self.api = api
        self.kind = kind
        self.sink = sink
        self.watch_timeout = watch_timeout
        self.backoff = backoff or Backoff(initial=0.2, ceiling=30.0)
        self.cache: dict[Key, dict[str, Any]] = {}
        self.synced = asyncio.Event()
        self.resource_version = ""
        self.lists = 0
        self.relists_after_gone = 0

    async def run(self) -> None:
        """List and watch until cancelled; never gives up on a kind (CRDs may appear later)."""
        need_list = True
        while True:
            try:
                if need_list:
                    await self._relist()
                    need_list = False
                await self._watch_once()
                self.backoff.reset()  # a normal server-side timeout: resume at once
                continue
            except KubeGoneError:
                self.relists_after_gone += 1
                log.info("watch of %s expired (410); relisting", self.kind)
                need_list = True
                continue
            except KubeNotFoundError as exc:
                log.warning("kind %s not served (yet): %s", self.kind, exc)
                need_list = True
            except KubeError as exc:
                # Transient: keep the resourceVersion and resume the watch after a pause.
                log.warning("list/watch of %s failed: %s", self.kind, exc)
            await asyncio.sleep(self.backoff.next_delay())

    async def _relist(self) -> None:
        items, list_rv = await self.api.list(self.kind)
        self.lists += 1
        fresh = {key_of(obj): obj for obj in items}
        for key, obj in fresh.items():
            old = self.cache.get(key)
            if old is None:
                self.sink("ADDED", obj)
            elif _rv(old) != _rv(obj):
                self.sink("MODIFIED", obj)
        for key in self.cache.keys() - fresh.keys():
            self.sink("DELETED", self.cache[key])
        self.cache = fresh
        # Resume from the list's own resourceVersion, not the last item's (a kubescape bug).
        self.resource_version = list_rv
        self.synced.set()

    async def _watch_once(self) -> None:
        async for item in self.api.watch(self.kind, self.resource_version, self.watch_timeout):
            rv = _rv(item.object)
            if rv:
                self.resource_version = rv
            if item.type == "BOOKMARK":
                continue
            key = key_of(item.object)
            if item.type == "DELETED":
                self.cache.pop(key, None)
            else:
                self.cache[key] = item.object
            if item.type in ("ADDED", "MODIFIED", "DELETED"):
                self.sink(item.type, item.object)
