"""Pure in-memory object store: one global resourceVersion, retained event
history, snapshot reads for paginated lists, and watcher fan-out.

No HTTP here. Everything runs on one event loop thread, so a mutation,
its history record and its fan-out to watchers happen atomically with respect
to readers; that is what makes list-then-watch and resume-from-RV exact.

Committed objects are held as their encoded JSON bytes, not as dicts: a 5 KB pod costs about
5 KB instead of the tens of KB its Python objects take, which is what lets one sandbox hold
100k pods. Bytes are immutable, so history events, snapshots, list results and watch queues
share them, and lists and watches write them to the wire without re-encoding. Reads that need
the structure (selectors, patches, the direct API) decode a fresh copy.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import random
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson

from . import crds, jsonio, pages
from .errors import (
    SandboxError,
    already_exists,
    bad_request,
    conflict,
    expired,
    invalid,
    not_found,
)
from .names import check_name
from .resources import Registry, ResourceType
from .selectors import Filter

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, name); namespace is "" when cluster-scoped
WatchItem = tuple[str, bytes]  # (event type, the object's encoded JSON)

_T = TypeVar("_T")

_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # same alphabet as the apiserver


def clone(obj: _T) -> _T:
    """Deep copy of JSON data; also rejects values that are not JSON."""
    try:
        copied: _T = jsonio.loads(jsonio.dumps(obj))
        return copied
    except TypeError as exc:
        raise bad_request(f"object is not valid JSON data: {exc}") from exc


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _key(obj: Obj) -> Key:
    meta = obj["metadata"]
    return (meta.get("namespace", ""), meta["name"])


def decode(raw: bytes) -> Obj:
    """A fresh, mutable copy of a stored object."""
    obj: Obj = jsonio.loads(raw)
    return obj


def matches(flt: Filter, key: Key, raw: bytes) -> bool:
    """Whether a stored object is in a filter's selection; decodes it only when a label or
    field selector has to look inside (the namespace is part of the key)."""
    if flt.namespace is not None and key[0] != flt.namespace:
        return False
    return not flt.has_selector or flt.matches(decode(raw))


@dataclass(frozen=True)
class Event:
    rv: int
    rt: ResourceType
    type: str  # ADDED / MODIFIED / DELETED
    key: Key
    raw: bytes  # the object after the change (for DELETED, its last state at the new RV)
    prev: bytes | None  # state before the change; None for ADDED


def translate(ev: Event, flt: Filter) -> WatchItem | None:
    """Project an event through a filter the way the apiserver's watch cache
    does: an update that moves an object into the selection is an ADDED, one
    that moves it out is a DELETED, so clients' caches stay consistent."""
    new_ok = matches(flt, ev.key, ev.raw)
    if ev.type != "MODIFIED":
        return (ev.type, ev.raw) if new_ok else None
    old_ok = ev.prev is not None and matches(flt, ev.key, ev.prev)
    if new_ok:
        return ("MODIFIED" if old_ok else "ADDED", ev.raw)
    return ("DELETED", ev.raw) if old_ok else None


class Watcher:
    """One open watch: replayed events first, then live events via a queue."""

    def __init__(self, rt: ResourceType, flt: Filter, limit: int, min_rv: int) -> None:
        self.rt = rt
        self.filter = flt
        self.limit = limit
        self.min_rv = min_rv  # live events at or below this RV were already covered
        self.initial: list[WatchItem] = []
        self.initial_end_bookmark = False
        self.gone_message: str | None = None  # set when the start RV is compacted
        # The bound is enforced in offer() rather than via maxsize so a close
        # sentinel (None) always fits and wakes the streamer immediately.
        self.queue: asyncio.Queue[WatchItem | None] = asyncio.Queue()
        self.end_reason: str | None = None  # "overflow" or "dropped"
        self.finished = asyncio.Event()

    def offer(self, ev: Event) -> None:
        if self.end_reason is not None or ev.rt != self.rt or ev.rv <= self.min_rv:
            return
        item = translate(ev, self.filter)
        if item is None:
            return
        if self.queue.qsize() >= self.limit:
            # A slow reader must not make writers wait or grow memory without
            # bound; it gets a 410 and relists, exactly like a real apiserver.
            self.close("overflow")
            return
        self.queue.put_nowait(item)

    def close(self, reason: str) -> None:
        if self.end_reason is None:
            self.end_reason = reason
            self.queue.put_nowait(None)


@dataclass
class ListResult:
    raw: list[bytes]  # the selected objects' encoded JSON, in key order
    resource_version: int
    continue_token: str | None
    remaining: int | None

    @property
    def items(self) -> list[Obj]:
        return [decode(r) for r in self.raw]


def _encode_continue(rv: int, key: Key) -> str:
    raw = orjson.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": list(key)})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_continue(token: str) -> tuple[int, Key]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        ns, name = data["start"]
        return int(data["rv"]), (str(ns), str(name))
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise bad_request(f"invalid continue token: {exc}") from exc


def _parse_rv(value: str) -> int:
    try:
        rv = int(value)
    except ValueError:
        raise bad_request(f"invalid resourceVersion {value!r}") from None
    if rv < 0:
        raise bad_request(f"invalid resourceVersion {value!r}")
    return rv


class Store:
    """All objects of all resource types, plus history and watchers."""

    def __init__(self, registry: Registry, history_limit: int = 10_000) -> None:
        self.registry = registry
        self.history_limit = history_limit
        self.watch_queue_limit = 1000
        self.rv = 0
        # Every event with rv > floor is retained; older RVs are "compacted".
        self.floor = 0
        self._objects: dict[ResourceType, dict[Key, bytes]] = {rt: {} for rt in registry.resources}
        self._keys = pages.SortedKeys()  # each type's keys in list order
        self._history: deque[Event] = deque()
        # The RV of each type's last change, kept past compaction: what a watcher of the type
        # has seen everything of once its resourceVersion reaches it.
        self.last_change: dict[ResourceType, int] = {}
        self._watchers: set[Watcher] = set()
        self._ns_rt = registry.find("", "v1", "namespaces")
        self._crd_rt = registry.find(crds.CRD_GROUP, "v1", "customresourcedefinitions")

    # ----- reads -------------------------------------------------------

    def get_raw(self, rt: ResourceType, namespace: str, name: str) -> bytes | None:
        return self._objects.setdefault(rt, {}).get((namespace if rt.namespaced else "", name))

    def get(self, rt: ResourceType, namespace: str, name: str) -> Obj | None:
        raw = self.get_raw(rt, namespace, name)
        return None if raw is None else decode(raw)

    def _exists(self, rt: ResourceType, namespace: str, name: str) -> bool:
        return self.get_raw(rt, namespace, name) is not None

    def list_objects(
        self,
        rt: ResourceType,
        flt: Filter,
        *,
        limit: int | None = None,
        continue_token: str | None = None,
        resource_version: str | None = None,
        rv_match: str | None = None,
    ) -> ListResult:
        start_after: Key | None = None
        if continue_token:
            if resource_version not in (None, "", "0"):
                raise bad_request("specifying resource version is not allowed when using continue")
            snap, start_after = _decode_continue(continue_token)
            if snap < self.floor:
                raise expired(
                    "The provided continue parameter is too old to display a consistent "
                    "list result. You can start a new list without the continue parameter."
                )
        elif rv_match == "Exact" and resource_version:
            snap = _parse_rv(resource_version)
        else:
            snap = self.rv
        before = self._changed_since(rt, snap)
        live = self._objects.setdefault(rt, {})
        page = pages.select(
            pages.Snapshot(self._keys.of(rt, live), live, before), flt,
            lambda raw: flt.matches(decode(raw)), start_after=start_after, limit=limit,
        )  # fmt: skip
        token = _encode_continue(snap, page.last) if page.more and page.last else None
        return ListResult(page.raw, snap, token, page.remaining)

    def _changed_since(self, rt: ResourceType, snap: int) -> pages.Before:
        """For each object of ``rt`` changed after RV ``snap``, its bytes at ``snap`` (None if
        it did not exist then), from the retained history: the overlay that turns the live
        objects into the snapshot (a stand-in for etcd's MVCC reads)."""
        if snap >= self.rv:
            return {}
        if snap < self.floor:
            raise expired(f"too old resource version: {snap} ({self.floor})")
        before: pages.Before = {}
        for ev in reversed(self._history):
            if ev.rv <= snap:
                break
            if ev.rt == rt:
                before[ev.key] = ev.prev  # the earliest change after snap is written last
        return before

    # ----- watches ------------------------------------------------------

    def watch(
        self,
        rt: ResourceType,
        flt: Filter,
        resource_version: str | None,
        *,
        send_initial_events: bool = False,
    ) -> Watcher:
        """Register a watcher; its ``initial`` events and live queue together
        form a gap-free stream because this runs without yielding."""
        start = _parse_rv(resource_version) if resource_version else 0
        w = Watcher(rt, flt, self.watch_queue_limit, start)
        if start == 0 or send_initial_events:
            # Synthetic ADDEDs for the current state, then only newer events
            # ("not older than" the requested RV, as the apiserver serves it).
            objs = self._objects.setdefault(rt, {})
            keys = self._keys.of(rt, objs)
            w.initial = [("ADDED", objs[k]) for k in keys if matches(flt, k, objs[k])]
            w.initial_end_bookmark = send_initial_events
            w.min_rv = self.rv
        elif start < self.floor:
            w.gone_message = f"too old resource version: {start} ({self.floor})"
            return w
        else:
            for ev in self._history:
                if ev.rv > start and ev.rt == rt:
                    item = translate(ev, flt)
                    if item is not None:
                        w.initial.append(item)
        self._watchers.add(w)
        return w

    def unwatch(self, w: Watcher) -> None:
        self._watchers.discard(w)

    def close_watchers(self, reason: str = "dropped") -> list[Watcher]:
        watchers = list(self._watchers)
        for w in watchers:
            w.close(reason)
        return watchers

    def compact(self) -> None:
        self._history.clear()
        self.floor = self.rv

    # ----- writes --------------------------------------------------------

    def _commit(self, rt: ResourceType, etype: str, obj: Obj, prev: bytes | None) -> Obj:
        """Store ``obj`` (encoded; the caller's dict is not kept) at the next RV and return it."""
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        key = _key(obj)
        raw = jsonio.dumps_to_keep(obj)
        if etype == "DELETED":
            self._objects.setdefault(rt, {}).pop(key, None)
            self._keys.removed(rt, key)
        else:
            self._objects.setdefault(rt, {})[key] = raw
            if etype == "ADDED":
                self._keys.added(rt, key)
        ev = Event(self.rv, rt, etype, key, raw, prev)
        self.last_change[rt] = self.rv
        self._history.append(ev)
        while len(self._history) > self.history_limit:
            self.floor = self._history.popleft().rv
        for w in list(self._watchers):
            w.offer(ev)
        return obj

    def _prepare(self, rt: ResourceType, body: Any, *, owned: bool = False) -> Obj:
        """Copy a request body and check it is an object of this type. An ``owned`` body is
        JSON data nobody else holds (a patch result): only the two levels this store writes
        to (the object and its metadata) are copied, not the whole tree."""
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        obj: Obj = dict(body) if owned else clone(body)
        if owned and isinstance(obj.get("metadata"), dict):
            obj["metadata"] = dict(obj["metadata"])
        kind = obj.setdefault("kind", rt.kind)
        api_version = obj.setdefault("apiVersion", rt.api_version)
        if kind != rt.kind or api_version != rt.api_version:
            raise bad_request(
                f"the object's kind {api_version}/{kind} does not match the resource "
                f"{rt.api_version}/{rt.kind} of the request"
            )
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        return obj

    def _namespace_for(self, rt: ResourceType, path_ns: str | None, meta: Obj) -> str:
        if not rt.namespaced:
            meta.pop("namespace", None)  # the apiserver clears it too
            return ""
        body_ns = meta.get("namespace") or ""
        if path_ns and body_ns and body_ns != path_ns:
            raise bad_request(
                "the namespace of the provided object does not match the namespace "
                "sent on the request"
            )
        ns = path_ns or body_ns or "default"
        meta["namespace"] = ns
        return str(ns)

    def create(
        self, rt: ResourceType, namespace: str | None, body: Any, *, dry_run: bool = False
    ) -> Obj:
        obj = self._prepare(rt, body)
        meta = obj["metadata"]
        ns = self._namespace_for(rt, namespace, meta)
        name = meta.get("name")
        if not name:
            prefix = meta.get("generateName")
            if not prefix or not isinstance(prefix, str):
                raise invalid(
                    rt, "", "metadata.name: Required value: name or generateName is required"
                )
            name = self._generate_name(rt, ns, prefix)
        if not isinstance(name, str):
            raise invalid(rt, str(name), "metadata.name: Invalid value: must be a string")
        check_name(rt, name)
        if rt == self._crd_rt:
            crds.check(obj)
            crds.with_status(obj, now_rfc3339())
        if rt.namespaced and self._ns_rt is not None and not self._exists(self._ns_rt, "", ns):
            raise not_found(self._ns_rt, ns)
        if self._exists(rt, ns, name):
            raise already_exists(rt, name)
        meta["name"] = name
        meta.pop("resourceVersion", None)
        meta.pop("deletionTimestamp", None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        meta["generation"] = 1
        if rt == self._ns_rt:
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj["status"] = {"phase": "Active"}
        if dry_run:
            return obj
        committed = self._commit(rt, "ADDED", obj, None)
        if rt == self._crd_rt:
            self._serve_crd(None, committed)
        return committed

    def _generate_name(self, rt: ResourceType, ns: str, prefix: str) -> str:
        while True:
            name = prefix + "".join(random.choices(_NAME_CHARS, k=5))
            if not self._exists(rt, ns, name):
                return name

    def _current(self, rt: ResourceType, namespace: str | None, name: str) -> bytes:
        raw = self.get_raw(rt, namespace or "", name)
        if raw is None:
            raise not_found(rt, name)
        return raw

    def replace(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        body: Any,
        *,
        dry_run: bool = False,
        subresource: str | None = None,
        owned: bool = False,
    ) -> Obj:
        """PUT: ``owned`` as in ``update_with`` (a body parsed from JSON for this request)."""
        return self.update_with(
            rt, namespace, name, lambda _cur: body, dry_run=dry_run, subresource=subresource,
            owned=owned,
        )  # fmt: skip

    def update_with(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        make: Callable[[Obj], Any],
        *,
        dry_run: bool = False,
        subresource: str | None = None,
        owned: bool = False,
    ) -> Obj:
        """Update from ``make(copy of current)``: PUT passes the body through,
        patches compute it. The resulting resourceVersion is a precondition.

        ``make`` must not change its argument (the patch functions return new values). With
        ``owned``, its result is JSON data that shares nothing but that copy, so it is not
        copied again: a PATCH then decodes the stored object once and encodes the result once.
        """
        cur_raw = self._current(rt, namespace if rt.namespaced else "", name)
        cur = decode(cur_raw)
        new = self._prepare(rt, make(cur), owned=owned and rt != self._crd_rt)
        meta = new["metadata"]
        if meta.get("name") not in (None, "", name):
            raise bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on "
                f"the URL ({name})"
            )
        meta["name"] = name
        self._namespace_for(rt, namespace, meta)
        sent_rv = meta.get("resourceVersion")
        if sent_rv and sent_rv != cur["metadata"]["resourceVersion"]:
            raise conflict(rt, name)
        if subresource == "status":
            # The status subresource only ever changes .status.
            new = {**cur, "status": new.get("status")}
            if new["status"] is None:
                del new["status"]
            meta = new["metadata"] = dict(cur["metadata"])
        cmeta = cur["metadata"]
        for field in ("uid", "creationTimestamp", "namespace", "resourceVersion"):
            if field in cmeta:
                meta[field] = cmeta[field]
        generation = int(cmeta.get("generation", 1))
        meta["generation"] = generation + 1 if new.get("spec") != cur.get("spec") else generation
        if rt == self._crd_rt and subresource is None:
            crds.check(new)
            crds.with_status(new, now_rfc3339())
            new["status"]["conditions"] = cur.get("status", {}).get("conditions", [])
        if new == cur:
            # Like the apiserver, a no-op write is not persisted: no new RV, no event.
            return cur
        if dry_run:
            return new
        committed = self._commit(rt, "MODIFIED", new, cur_raw)
        if rt == self._crd_rt:
            self._serve_crd(cur, committed)
        return committed

    def delete(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        *,
        dry_run: bool = False,
        precondition_rv: str | None = None,
    ) -> Obj:
        cur_raw = self._current(rt, namespace if rt.namespaced else "", name)
        cur = decode(cur_raw)
        if precondition_rv and precondition_rv != cur["metadata"]["resourceVersion"]:
            raise conflict(rt, name)
        if dry_run:
            return cur
        if rt == self._ns_rt:
            # Real namespace deletion is asynchronous (Terminating); doing it
            # at once still yields a DELETED event per contained object.
            for other in self.registry.resources:
                if other.namespaced:
                    for key in sorted(k for k in self._objects.get(other, {}) if k[0] == name):
                        self.delete(other, name, key[1])
        if rt == self._crd_rt:
            self._serve_crd(cur, None)
        return self._commit(rt, "DELETED", decode(cur_raw), cur_raw)

    def _serve_crd(self, old: Obj | None, new: Obj | None) -> None:
        """Register the types a CRD now serves and retire those it no longer does; a retired
        type loses its objects (each with a DELETED event) and its watches end."""
        before = set(crds.served_types(old)) if old is not None else set()
        after = set(crds.served_types(new)) if new is not None else set()
        for rt in before - after:
            gone = (rt.group, rt.version, rt.resource)
            if any((t.group, t.version, t.resource) == gone for t in after):
                continue  # same path, new names: replaced below, objects kept
            for namespace, name in sorted(self._objects.get(rt, {})):
                self.delete(rt, namespace or None, name)
            for watcher in [w for w in self._watchers if w.rt == rt]:
                watcher.close("dropped")
            self._objects.pop(rt, None)
            self._keys.forget(rt)
            self.registry.remove(rt)
        for rt in after - before:
            old_rt = self.registry.find(rt.group, rt.version, rt.resource)
            if old_rt is not None and old_rt in self._objects:
                self._objects[rt] = self._objects.pop(old_rt)
                self._keys.forget(old_rt)
                self._keys.forget(rt)
            self.registry.add(rt)


__all__ = [
    "Event", "ListResult", "SandboxError", "Store", "Watcher", "clone", "decode", "translate",
]  # fmt: skip
