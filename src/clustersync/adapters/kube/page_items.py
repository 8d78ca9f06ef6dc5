"""The items of a list page, parsed one at a time as they are taken in.

One ``orjson.loads`` of a 2.6 MB page of 500 pods builds every object (about 12 MB of dicts)
before the first is used: the allocation of one large tree is slow, and by the time the informer
reaches an object to shape, encode and free it, the object has left the CPU's caches. Parsed one
by one, each right before it is taken in, the same pods cost about half as much to parse and
free (docs/benchmarks.md, "The agent's list path").

Finding the items without a JSON scanner in Python: an API server writes a list compactly as
``{...,"items":[ITEM,ITEM,...]}``, and every item of a kind starts with the same key
(``metadata`` for built-in kinds, ``apiVersion`` for custom resources). So each ``},{"KEY":``
(KEY being the first item's first key) is a candidate boundary, and the text from an item's
start up to a candidate is parsed: it is valid JSON exactly when it ends where the item does
(any shorter prefix leaves the item's brace open; an item never contains an unescaped quote
inside a string, so the pattern is always structure). A candidate inside an item (a nested
array of objects that also start with KEY, e.g. several ownerReferences) fails to parse and the
next one is tried. Whatever does not fit (other spacing, items with another first key, too many
nested candidates) is parsed whole, as before: the result is the same, only slower.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from clustersync.adapters.kube.base import KubeError

_ITEMS = b'"items":['
_CLOSING = b"]}"
_WHITESPACE = b" \t\r\n"
# Candidates that fail in a row before the rest of the page is parsed whole: each failure
# parses the item's text so far again.
MAX_MISSES = 8


class PageError(KubeError):
    """A page that is not a JSON object with an ``items`` list (the message says why)."""


class PageItems:
    """The items of one page, parsed as they are iterated (iterate once). Each item gets
    ``defaults`` for keys it lacks (list items carry no kind). :meth:`clear` drops the page."""

    def __init__(
        self,
        body: bytes,
        head: dict[str, Any],
        span: tuple[int, int],
        defaults: dict[str, str],
        what: str,
        *,
        parsed: list[Any] | None = None,
    ) -> None:
        self._what = what  # the request, for error messages
        self._body = body
        self._head = head  # the page without its items (see read_page)
        self._begin, self._stop = span  # the items are body[begin:stop]
        self._defaults = defaults
        self._parsed = parsed  # the items, where the page was parsed whole

    def clear(self) -> None:
        self._body = b""
        self._parsed = None
        self._begin = self._stop = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for item in self._items():
            if not isinstance(item, dict):
                shown = str(item)[:100]
                raise PageError(f"{self._what}: a list item that is not an object: {shown}")
            for key, value in self._defaults.items():
                item.setdefault(key, value)
            yield item

    def _items(self) -> Iterator[Any]:
        if self._parsed is not None:
            yield from self._parsed
            return
        body, start, stop = self._body, self._begin, self._stop
        view = memoryview(body)
        taken = 0
        marker = _marker(body, start, stop)
        found = -1 if marker is None else body.find(marker, start, stop)
        misses = 0
        while marker is not None and found >= 0 and misses <= MAX_MISSES:
            try:
                item = orjson.loads(view[start : found + 1])
            except orjson.JSONDecodeError:
                misses += 1  # a boundary inside the item: try the next one
                found = body.find(marker, found + 1, stop)
                continue
            yield item
            taken += 1
            start = found + 2  # past the "}," the item ends with
            misses = 0
            found = body.find(marker, start, stop)
        if start < stop:
            yield from self._rest(view[start:stop], taken)

    def _rest(self, text: memoryview, taken: int) -> list[Any]:
        """The last item; or, where the split did not fit (other spacing, another first key,
        many nested candidates), the rest of the items, from a parse of the whole page."""
        try:
            return [orjson.loads(text)]
        except orjson.JSONDecodeError:
            pass
        # Every item handed over so far was one of the page's items, in order (a piece is taken
        # only where it parses whole, and the next piece starts right after it), so the rest
        # is the whole parse's items after them. That holds even where the page has fields
        # after its items (the head read first lacks them; the list's metadata comes before).
        _, whole = _read_whole(self._body, self._what)
        return whole[taken:]


def read_page(
    body: bytes, defaults: dict[str, str], what: str
) -> tuple[dict[str, Any], PageItems]:
    """The list's own fields (``items`` empty) and its items, still unparsed where the page
    has the usual shape. Raises :class:`PageError` (``what``: the request, for its message);
    so may the iteration of the items."""
    end = len(body)
    while end and body[end - 1] in _WHITESPACE:
        end -= 1
    at = body.find(_ITEMS)
    begin, stop = at + len(_ITEMS), end - len(_CLOSING)
    if at >= 0 and begin <= stop and body.endswith(_CLOSING, 0, end):
        try:
            head = orjson.loads(b"".join((body[:begin], _CLOSING)))
        except orjson.JSONDecodeError:
            head = None  # the first "items" is not the page's own: parse it whole
        if isinstance(head, dict) and head.get("items") == []:
            return head, PageItems(body, head, (begin, stop), defaults, what)
    doc, items = _read_whole(body, what)
    return doc, PageItems(b"", doc, (0, 0), defaults, what, parsed=items)


def _marker(body: bytes, begin: int, stop: int) -> bytes | None:
    """``},{"KEY":`` for the first item's first key, or None if it has none to rely on."""
    if not body.startswith(b'{"', begin, stop):
        return None
    close = body.find(b'"', begin + 2, stop)
    key = body[begin + 2 : close]
    if close < 0 or b"\\" in key:
        return None
    return b'},{"' + key + b'":'


def _read_whole(body: bytes, what: str) -> tuple[dict[str, Any], list[Any]]:
    """The page parsed at once: its fields (``items`` empty) and its items."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # Not JSON at all: a proxy's HTML page, a cut-off body.
        raise PageError(f"{what}: the answer is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise PageError(f"{what}: the answer is not a JSON object")
    items = doc.get("items") or []
    if not isinstance(items, list):
        raise PageError(f"{what}: the list's items are not a list")
    doc["items"] = []
    return doc, items
