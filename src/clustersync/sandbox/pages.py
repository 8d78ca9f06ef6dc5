"""One page of a list at a snapshot, in key order, costing the page rather than the whole type.

An informer lists 100k pods in pages of 500: 200 requests. Sorting every key and copying the
type to rebuild the snapshot on each request made a page cost O(objects) and the whole list
O(objects x pages). Here the keys of a type are kept sorted (a create or delete moves one
pointer range, a change of an object moves nothing), a continue token is a bisection, and the
snapshot is the live objects with the few changed since it overlaid (``before``, from the
retained history). Objects are only decoded when a label or field selector must look inside.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from heapq import merge

from .selectors import Filter

Key = tuple[str, str]  # (namespace, name); namespace is "" when cluster-scoped
Before = dict[Key, bytes | None]  # an object's bytes at the snapshot; None: it did not exist


@dataclass
class Page:
    raw: list[bytes]  # the selected objects' encoded JSON, in key order
    last: Key | None  # the key of the last item, where a continue token resumes
    more: bool  # a later object is in the selection
    remaining: int | None  # how many objects follow the page (only without selectors)


def _namespace_bounds(keys: list[Key], namespace: str | None) -> tuple[int, int]:
    """The slice of ``keys`` in one namespace (all of them when ``namespace`` is None)."""
    if namespace is None:
        return 0, len(keys)
    # (ns, "") sorts before every key of the namespace; (ns + "\0", "") after all of them.
    return bisect_left(keys, (namespace, "")), bisect_left(keys, (namespace + "\0", ""))


@dataclass(frozen=True)
class Snapshot:
    """A resource type as of one resourceVersion: the live objects with ``before`` overlaid."""

    keys: list[Key]  # the live keys, sorted
    live: dict[Key, bytes]
    before: Before

    def objects(
        self, lo: int, hi: int, namespace: str | None, start_after: Key | None
    ) -> Iterator[tuple[Key, bytes]]:
        """(key, bytes) of every object of the snapshot in ``keys[lo:hi]`` and the deleted
        ones after ``start_after`` (in the namespace), in key order."""
        deleted = sorted(
            key for key, raw in self.before.items()
            if raw is not None and key not in self.live
            and (namespace is None or key[0] == namespace)
            and (start_after is None or key > start_after)
        )  # fmt: skip
        # An index range, not islice: islice would walk the skipped keys one by one.
        later = (self.keys[i] for i in range(lo, hi))
        for key in merge(later, deleted):
            raw = self.before[key] if key in self.before else self.live[key]
            if raw is not None:
                yield key, raw

    def count_after(self, last: Key, hi: int, namespace: str | None) -> int:
        """Objects of the snapshot after ``last``, up to the namespace's end ``hi``."""
        count = max(0, hi - bisect_right(self.keys, last))
        for key, raw in self.before.items():
            if key > last and (namespace is None or key[0] == namespace):
                count += (raw is not None) - (key in self.live)
        return count


def select(
    snap: Snapshot, flt: Filter, matches: Callable[[bytes], bool], *,
    start_after: Key | None, limit: int | None,
) -> Page:  # fmt: skip
    """The page of objects in ``flt`` after ``start_after``, at most ``limit`` of them (all
    when ``limit`` is None or 0). ``matches`` tells whether an object's bytes pass the
    selectors; it is only called when the filter has some."""
    lo, hi = _namespace_bounds(snap.keys, flt.namespace)
    if start_after is not None:
        lo = max(lo, bisect_right(snap.keys, start_after))
    raws: list[bytes] = []
    last: Key | None = None
    more = False
    for key, raw in snap.objects(lo, hi, flt.namespace, start_after):
        if flt.has_selector and not matches(raw):
            continue
        if limit and len(raws) >= limit:
            more = True
            break
        raws.append(raw)
        last = key
    remaining: int | None = None
    if more and last is not None and not flt.has_selector:
        remaining = snap.count_after(last, hi, flt.namespace)
    return Page(raws, last, more, remaining)


class SortedKeys:
    """The keys of every resource type in order; a type's order is built on its first list
    and then kept by each create and delete, so steady writes never re-sort."""

    def __init__(self) -> None:
        self._by_type: dict[object, list[Key]] = {}

    def of(self, rt: object, live: dict[Key, bytes]) -> list[Key]:
        keys = self._by_type.get(rt)
        if keys is None:
            keys = self._by_type[rt] = sorted(live)
        return keys

    def added(self, rt: object, key: Key) -> None:
        keys = self._by_type.get(rt)
        if keys is not None:
            at = bisect_left(keys, key)
            if at == len(keys) or keys[at] != key:
                keys.insert(at, key)

    def removed(self, rt: object, key: Key) -> None:
        keys = self._by_type.get(rt)
        if keys is not None:
            at = bisect_left(keys, key)
            if at < len(keys) and keys[at] == key:
                del keys[at]

    def forget(self, rt: object) -> None:
        """The type's objects were moved or dropped wholesale: rebuild on the next list."""
        self._by_type.pop(rt, None)
