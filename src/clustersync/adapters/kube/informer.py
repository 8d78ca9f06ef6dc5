"""List-then-watch for one kind, with a cache, resume, and relist on 410.

After a 410 the informer relists and diffs the new list against its cache: objects deleted while
the watch was broken exist only as missing keys, so they surface here as DELETED events instead of
being lost (kubescape and lightkube's retry mode lose them).

An informer may start from a saved cache instead (:meth:`Informer.restore`, see
protocol.cache_snapshot): it then watches from the cache's resourceVersion, and the API server
replays what changed meanwhile; on 410, or any error before that watch is open, it lists as
usual, and the list's diff against the restored cache reports what changed.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from clustersync.adapters.kube.base import (
    KubeApi,
    KubeError,
    KubeGoneError,
    KubeNotFoundError,
    Unreadable,
)
from clustersync.adapters.metrics import INFORMER_SNAPSHOT
from clustersync.model import Kind
from clustersync.protocol import cache_entry
from clustersync.protocol.backoff import Backoff
from clustersync.protocol.cache_entry import EntryError, Facts, UnencodableError
from clustersync.protocol.cache_snapshot import CacheSnapshot
from clustersync.protocol.cache_snapshot import sample as snapshot_sample
from clustersync.protocol.compact import Packer, PackError
from clustersync.protocol.shaping import shape

log = logging.getLogger("clustersync.informer")

Key = tuple[str, str]  # namespace, name
EventSink = Callable[[str, dict[str, Any]], None]  # (ADDED|MODIFIED|DELETED, object)


@dataclass(frozen=True, slots=True)
class SkippedObject:
    """An object the informer could not take in; ``reason`` is a metric label."""

    kind: Kind
    namespace: str
    name: str
    reason: str  # too_large, too_deep, undecodable
    detail: str


SkipSink = Callable[[SkippedObject], None]
Pace = Callable[[], Awaitable[None]]
"""Awaited between events: the consumer's backpressure (it returns when there is room)."""

PAGE_SIZE = 500  # objects per list request: kubernetes' own informers' choice
YIELD_EVERY = 200  # objects handled between yields to the event loop during a relist


async def _no_backpressure() -> None:
    return None


def _log_skip(skipped: SkippedObject) -> None:
    log.error(
        "skipping %s %s/%s (%s): %s",
        skipped.kind, skipped.namespace, skipped.name, skipped.reason, skipped.detail,
    )


class ArrivalLog:
    """The keys a first list has put into its (empty) cache so far, in the order it put them:
    what lets a consumer walk the objects "added since position k" while the list goes on (the
    agent reconciles a first sync that way, sending while it lists). Only ever appended to;
    ``abandoned`` once the list fails (it then restarts without a log, as a diff against the
    cache: a consumer falls back to waiting for ``synced``)."""

    def __init__(self) -> None:
        self.keys: list[Key] = []
        self.abandoned = False


class UnusableSnapshotError(ValueError):
    """A saved cache whose sampled entries are not what they claim to be."""


def key_of(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _rv(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


class ObjectCache:
    """The informer's copy of every object, kept compact.

    Objects are held without ``managedFields`` (which nothing downstream reads), deflated
    against a dictionary learned from the first objects of the kind (see protocol.compact): a
    5 KB pod costs about 25 KiB as Python dicts, 5 KB as JSON and a few hundred bytes packed.
    Each entry is one bytes object (protocol.cache_entry): given the kind, the object is shaped
    and hashed as it arrives, so the reconciliation can decide on it (and send it) without
    parsing it again. An object costs its key, one bytes header and one dict slot besides its
    data. Readers get a freshly parsed dict, so they may keep or change it freely.
    """

    def __init__(self, kind: Kind | None = None) -> None:
        """``kind``: shape and hash each object as it is stored (None: hold the JSON only)."""
        self.kind = kind
        self._items: dict[Key, bytes] = {}
        self._packer = Packer()  # one per kind, kept for the cache's life (across relists)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def dictionary(self) -> bytes | None:
        """The packing dictionary learned from the kind's first objects (kept across relists)."""
        return self._packer.dictionary

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[Key]:
        return iter(list(self._items))

    def __getitem__(self, key: Key) -> dict[str, Any]:
        return self._parsed(self._items[key])

    def get(self, key: Key) -> dict[str, Any] | None:
        entry = self._items.get(key)
        return None if entry is None else self._parsed(entry)

    def resource_version(self, key: Key) -> str | None:
        entry = self._items.get(key)
        return None if entry is None else cache_entry.resource_version(entry)

    def put(self, key: Key, obj: dict[str, Any]) -> None:
        self.store(key, self.encoded(obj))

    def encoded(self, obj: dict[str, Any]) -> bytes:
        """The cache entry for ``obj``; raises :class:`UnencodableError` if it has none."""
        return cache_entry.encode(self.kind, obj, self._packer)

    def store(self, key: Key, entry: bytes) -> Key:
        """Hold ``entry`` for ``key``; returns the key as held (its namespace shared)."""
        held = (sys.intern(key[0]), key[1])
        self._items[held] = entry
        return held

    def pop(self, key: Key) -> None:
        self._items.pop(key, None)

    def entry(self, key: Key) -> bytes | None:
        """The entry held for ``key``, unread (see :meth:`facts`), if any."""
        return self._items.get(key)

    def entries(self) -> list[tuple[Key, bytes]]:
        """Every entry as held (immutable bytes): a copy that later changes do not touch."""
        return list(self._items.items())

    def restore(self, dictionary: bytes | None, entries: Iterable[tuple[Key, bytes]]) -> None:
        """Replace the contents with entries a cache packed against ``dictionary``."""
        self._packer = Packer(dictionary=dictionary)
        self._items = {}
        for key, entry in entries:
            self.store(key, entry)

    def items(self) -> Iterator[tuple[Key, dict[str, Any]]]:
        """Every object present when iteration started and still present when reached (callers
        may pause in between while the watch changes the cache)."""
        for key, entry in self.current_entries():
            yield key, self._parsed(entry)

    def current_entries(self) -> Iterator[tuple[Key, bytes]]:
        """Like :meth:`items`, unread: each key with its entry (see :meth:`facts`)."""
        for key in list(self._items):
            entry = self._items.get(key)
            if entry is not None:
                yield key, entry

    def values(self) -> Iterator[dict[str, Any]]:
        for _, obj in self.items():
            yield obj

    def values_with_entries(self) -> Iterator[tuple[dict[str, Any], bytes]]:
        """Like :meth:`values`, each object with its entry (which :meth:`parse` reads back)."""
        for _, entry in self.current_entries():
            yield self._parsed(entry), entry

    def parse(self, entry: bytes) -> dict[str, Any]:
        """The object of an entry this cache held (since its last :meth:`restore`); raises
        PackError, EntryError or orjson.JSONDecodeError (ValueErrors) if it cannot be read."""
        return self._parsed(entry)

    @staticmethod
    def facts(entry: bytes) -> Facts:
        """What the entry's header says of its object (no unpacking); raises EntryError."""
        return cache_entry.facts(entry)

    def shaped(self, entry: bytes) -> dict[str, Any]:
        """The object of an entry this cache held, shaped as the agent sends it (from the JSON
        the entry holds when it does: no parse of the live object, no second shaping); raises
        as :meth:`parse`, and ShapingError where the object cannot be shaped."""
        body = self.shaped_json(entry)
        if body is None:
            if self.kind is None:
                raise EntryError("shaping an entry of a cache that does not know its kind")
            return shape(self.kind, self._parsed(entry))
        parsed: dict[str, Any] = orjson.loads(body)
        return parsed

    def facts_of(self, key: Key) -> Facts | None:
        """The facts of the entry held for ``key``, if any (see :meth:`facts`)."""
        entry = self._items.get(key)
        return None if entry is None else cache_entry.facts(entry)

    def shaped_json(self, entry: bytes, known: Facts | None = None) -> bytes | None:
        """The shaped JSON of an entry this cache held, if it holds it (see cache_entry;
        ``known``: the entry's facts, read already)."""
        return cache_entry.shaped_json(entry, self._packer, known)

    def _parsed(self, entry: bytes) -> dict[str, Any]:
        return cache_entry.live(self.kind, entry, self._packer)


class Informer:
    def __init__(
        self,
        api: KubeApi,
        kind: Kind,
        sink: EventSink,
        *,
        watch_timeout: int = 300,
        backoff: Backoff | None = None,
        on_skip: SkipSink = _log_skip,
        pace: Pace = _no_backpressure,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.api = api
        self.kind = kind
        self.sink = sink
        self.on_skip = on_skip
        self.pace = pace
        self.watch_timeout = watch_timeout
        self.backoff = backoff or Backoff(initial=0.2, ceiling=30.0)
        self.page_size = page_size
        self.cache = ObjectCache(kind)
        self.synced = asyncio.Event()
        # Set on every page of a list, when a list starts, fails or ends, and when ``synced``
        # is set: a consumer of :attr:`arrivals` clears it, looks, and waits on it.
        self.list_progressed = asyncio.Event()
        # While the first list fills the empty cache: its arrival log (see ArrivalLog).
        self.arrivals: ArrivalLog | None = None
        # A first list that failed after its first page: an answer reconciled as it listed is
        # then dropped, and the inventory asked for again once the kind is listed (the agent).
        self.first_list_failed = False
        self.resource_version = ""
        self.lists = 0
        self.relists_after_gone = 0
        self.resumes = 0  # starts from a restored cache whose watch opened
        self.resumes_abandoned = 0  # restored caches dropped for a list (410, an error)
        # True while the cache is exactly the state at ``resource_version`` (what a snapshot
        # must be); False during a list, whose pages arrive newer than the version.
        self._exact = False
        self._resuming = False  # restored, its watch not open yet
        # The resumed watch opened but said nothing yet: a 410 now (the API server accepts the
        # watch, then sends the error as its first event) means the resume failed.
        self._resume_unconfirmed = False

    def restore(self, snapshot: CacheSnapshot) -> None:
        """Start from a saved cache: :meth:`run` then watches from its resourceVersion instead
        of listing. Raises :class:`UnusableSnapshotError` (and keeps nothing) if a sample of
        its entries does not unpack to objects with their key and resourceVersion."""
        cache = ObjectCache(self.kind)
        cache.restore(snapshot.dictionary, snapshot.entries)
        for key, entry in snapshot_sample(snapshot.entries):
            try:
                obj = cache[key]
            except (PackError, EntryError, orjson.JSONDecodeError) as exc:
                raise UnusableSnapshotError(f"{self.kind} {key}: {exc}") from None
            if key_of(obj) != key or not cache_entry.describes(self.kind, entry, obj):
                raise UnusableSnapshotError(f"{self.kind} {key}: holds another object")
        self.cache = cache
        self.resource_version = snapshot.resource_version
        self._exact = True
        self._resuming = True

    def snapshot(self) -> CacheSnapshot | None:
        """The cache as of its resourceVersion, or None while it is not exact (during a list).
        The entries are immutable bytes, so the copy is cheap and consistent."""
        if not self._exact or not self.resource_version:
            return None
        return CacheSnapshot(self.resource_version, self.cache.dictionary, self.cache.entries())

    async def run(self) -> None:
        """List and watch until cancelled; never gives up on a kind (CRDs may appear later).
        A restored cache is watched from its resourceVersion first, without a list."""
        need_list = not self._resuming
        while True:
            try:
                if need_list:
                    await self._relist()
                    need_list = False
                await self._watch_once()
                self._resume_unconfirmed = False
                self.backoff.reset()  # a normal server-side timeout: resume at once
                continue
            except KubeError as exc:
                unconfirmed = self._resume_unconfirmed and isinstance(exc, KubeGoneError)
                self._resume_unconfirmed = False
                if self._resuming or unconfirmed:
                    self._abandon_resume(exc)
                    need_list = True
                    if isinstance(exc, KubeGoneError):
                        continue
                elif isinstance(exc, KubeGoneError):
                    self.relists_after_gone += 1
                    log.info("watch of %s expired (410); relisting", self.kind)
                    need_list = True
                    continue
                elif isinstance(exc, KubeNotFoundError):
                    log.warning("kind %s not served (yet): %s", self.kind, exc)
                    need_list = True
                else:
                    # Transient: keep the resourceVersion and resume the watch after a pause.
                    log.warning("list/watch of %s failed: %s", self.kind, exc)
            await asyncio.sleep(self.backoff.next_delay())

    def _abandon_resume(self, exc: KubeError) -> None:
        """The restored cache cannot be brought up to date by a watch (its resourceVersion is
        too old, or the watch could not open): the list that follows diffs against it, so
        what changed while the agent was down is still reported."""
        self._resuming = False
        self.resumes_abandoned += 1
        INFORMER_SNAPSHOT.labels("relisted").inc()
        log.info("cannot resume %s from the saved cache (%s); listing", self.kind, exc)

    def _opened(self) -> None:
        """The watch's response headers arrived: a restored cache is now followed live."""
        if self._resuming:
            self._resuming = False
            self._resume_unconfirmed = True
            self.resumes += 1
            INFORMER_SNAPSHOT.labels("resumed").inc()
            log.info("%s resumed from the saved cache without a list", self.kind)
            self._mark_synced()

    async def _relist(self) -> None:
        """List the kind a page at a time into the cache, then report what the list lacks.

        Each page goes into the cache as it arrives (at most one page of parsed objects is
        alive, not the whole list), and the sink hears of each change at once. The cache is
        updated in place, so it always matches what the sink was told: a relist that fails
        between two pages (a 410 when the server forgot the list's snapshot) leaves a cache the
        next relist diffs against correctly, with nothing reported twice and no deletion lost.
        """
        seen: set[Key] = set()
        list_rv = ""
        done = 0
        self._exact = False  # pages are newer than resource_version until the list ends
        # A first list into an empty cache logs its arrivals once its first page came (the kind
        # is served); a relist (a cache to diff against) never does.
        logs_arrivals = not self.synced.is_set() and len(self.cache) == 0
        arrivals: ArrivalLog | None = None
        try:
            async for page in self.api.list_pages(self.kind, self.page_size):
                if logs_arrivals and arrivals is None:
                    arrivals = self.arrivals = ArrivalLog()
                list_rv = page.resource_version
                done = await self._take_page(page.items, seen, done, arrivals)
                page.items.clear()  # the cache holds compact copies; the page's text can go
                self.list_progressed.set()
        except BaseException:
            if arrivals is not None:
                arrivals.abandoned = True
                self.first_list_failed = True
            raise
        finally:
            self.arrivals = None
            self.list_progressed.set()
        for key in self.cache:
            if key not in seen:
                gone = self.cache.get(key)
                if gone is not None:
                    self.sink("DELETED", gone)
                    self.cache.pop(key)
        self.lists += 1
        # Resume from the list's own resourceVersion, not the last item's (a kubescape bug).
        self.resource_version = list_rv
        self._exact = True
        self._mark_synced()
        await self.pace()

    def _mark_synced(self) -> None:
        self.synced.set()
        self.list_progressed.set()

    async def _take_page(
        self,
        items: Iterable[dict[str, Any]],
        seen: set[Key],
        done: int,
        arrivals: ArrivalLog | None,
    ) -> int:
        """Take a list page into the cache (see :meth:`_relist`); returns the objects done.
        Each item is parsed as the loop reaches it (adapters.kube.page_items), and freed
        after it, while it is still in the CPU's caches (unless the sink keeps it)."""
        for obj in items:
            done += 1
            if done % YIELD_EVERY == 0:
                # A list of 100k objects takes seconds to cache: let heartbeats and sends run.
                await asyncio.sleep(0)
            key = key_of(obj)
            entry = self._entry(key, obj)
            if entry is None:
                continue  # not seen: an older copy is reported deleted below
            seen.add(key)
            old_rv = self.cache.resource_version(key)
            # The sink first, the cache after (as for watch events): if the sink fails,
            # the next relist finds the change again.
            if old_rv is None:
                self.sink("ADDED", obj)
            elif old_rv != _rv(obj):
                self.sink("MODIFIED", obj)
            held = self.cache.store(key, entry)
            if arrivals is not None:
                arrivals.keys.append(held)  # the cache's own key: a pointer per object
        return done

    def _entry(self, key: Key, obj: dict[str, Any]) -> bytes | None:
        """The object's cache entry, or None (reported skipped): one bad object never stops
        the kind."""
        try:
            return self.cache.encoded(obj)
        except UnencodableError as exc:
            self.on_skip(SkippedObject(self.kind, key[0], key[1], "too_deep", str(exc)))
            return None

    async def _watch_once(self) -> None:
        events = self.api.watch(
            self.kind, self.resource_version, self.watch_timeout, on_open=self._opened
        )
        async for item in events:
            self._resume_unconfirmed = False
            if isinstance(item, Unreadable):
                self.on_skip(
                    SkippedObject(self.kind, item.namespace, item.name, item.reason, item.detail)
                )
                continue
            rv = _rv(item.object)
            if item.type == "BOOKMARK":
                self.resource_version = rv or self.resource_version
                continue
            # Until the cache has the event, it is not the state at any resourceVersion (a
            # failing sink leaves it so, and the informer's restart relists).
            self._exact = False
            self._take(item.type, item.object)
            self.resource_version = rv or self.resource_version
            self._exact = True
            await self.pace()

    def _take(self, event_type: str, obj: dict[str, Any]) -> None:
        key = key_of(obj)
        # The sink first, the cache after: if the sink fails, the informer's restart
        # relists and finds the change again instead of a cache that already has it.
        if event_type == "DELETED":
            self.sink("DELETED", obj)
            self.cache.pop(key)
            return
        try:
            entry = self.cache.encoded(obj)
        except UnencodableError as exc:
            self.on_skip(SkippedObject(self.kind, key[0], key[1], "too_deep", str(exc)))
            # The agent's view must not keep an older copy the backend would then keep too:
            # the object counts as absent (and is on the dead-letter list) until it is fixed.
            if key in self.cache:
                self.sink("DELETED", self.cache[key])
                self.cache.pop(key)
            return
        self.sink(event_type, obj)
        self.cache.store(key, entry)
