"""A list page's items parsed one at a time (adapters/kube/page_items.py): whatever the page's
shape, the items and the list's fields are exactly those of parsing the page whole, and a page
that is not a list is a KubeError."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from clustersync.adapters.kube.base import KubeError
from clustersync.adapters.kube.page_items import MAX_MISSES, read_page

DEFAULTS = {"apiVersion": "v1", "kind": "Pod"}
META = {"resourceVersion": "77", "continue": "token"}


def pod(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": f"p{i}", "namespace": "ns", "resourceVersion": str(i)},
        "spec": {"containers": [{"name": "a", "env": [{"name": "X", "value": str(i)}]}]},
        **extra,
    }


def custom(i: int, owners: int) -> dict[str, Any]:
    """A custom resource as an API server lists it: ``apiVersion`` first, and owner references
    that are objects starting with ``apiVersion`` too (candidate boundaries inside the item)."""
    refs = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"o{k}"} for k in range(owners)]
    return {
        "apiVersion": "example.io/v1",
        "kind": "Widget",
        "metadata": {"name": f"w{i}", "ownerReferences": refs},
        "spec": {"size": i},
    }


def expected_items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the page's items are, parsed whole by the standard library, with the defaults."""
    parsed = json.loads(json.dumps(items))
    return [{**DEFAULTS, **item} for item in parsed]


def read(body: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    head, items = read_page(body, dict(DEFAULTS), "GET /api/v1/pods")
    return head, list(items)


def page(items: list[dict[str, Any]], *, head_first: bool = True) -> bytes:
    if head_first:
        return orjson.dumps({"kind": "PodList", "metadata": META, "items": items}) + b"\n"
    return orjson.dumps({"items": items, "kind": "PodList", "metadata": META})


PAGES: dict[str, list[dict[str, Any]]] = {
    "pods": [pod(i) for i in range(5)],
    "one pod": [pod(0)],
    "no items": [],
    "custom resources with owner references": [custom(i, owners=i % 4) for i in range(6)],
    "more nested candidates than tried": [custom(0, 1), custom(1, owners=MAX_MISSES + 3)],
    "an item starting with another key": [pod(0), pod(1), {"spec": {}, "metadata": {}}, pod(3)],
    "strings that look like a boundary": [
        pod(0, data={"text": '},{"metadata":{"name":"fake"}'}),
        pod(1, data={"slash": "\\", "quote": '"},{"metadata":'}),
    ],
    "a first key with an escape": [{'a"b': 1, "metadata": {}}, {'a"b': 2, "metadata": {}}],
}


@pytest.mark.parametrize("items", PAGES.values(), ids=PAGES.keys())
@pytest.mark.parametrize("head_first", [True, False], ids=["fields first", "items first"])
def test_items_and_fields_are_those_of_the_whole_page(
    items: list[dict[str, Any]], head_first: bool
) -> None:
    head, read_items = read(page(items, head_first=head_first))
    assert read_items == expected_items(items)
    assert head == {"kind": "PodList", "metadata": META, "items": []}


def test_an_indented_page_reads_the_same() -> None:
    items = [pod(i) for i in range(3)]
    body = json.dumps({"kind": "PodList", "metadata": META, "items": items}, indent=2).encode()
    head, read_items = read(body)
    assert read_items == expected_items(items)
    assert head["metadata"] == META


def test_an_item_missing_its_kind_gets_it_and_one_with_its_own_keeps_it() -> None:
    _, read_items = read(page([pod(0), {**pod(1), "kind": "Other"}]))
    assert [item["kind"] for item in read_items] == ["Pod", "Other"]


@pytest.mark.parametrize(
    "body",
    [
        b"<html>proxy error</html>",
        b'{"kind":"PodList","items":[{"metadata":{}},{"metad',  # cut off
        b'{"kind":"PodList","items":[{"metadata":{}},{"metadata":{}}]}}',  # one brace too many
        b'{"kind":"PodList","items":[{"metadata":{}},7]}',
        b'{"kind":"PodList","items":{"a":1}}',
        b"[1,2]",
    ],
)
def test_a_page_that_is_not_a_list_is_a_kube_error(body: bytes) -> None:
    with pytest.raises(KubeError):
        read(body)


@pytest.mark.parametrize("after", [[pod(2), pod(3)], [pod(2)], []], ids=["two", "one", "none"])
def test_a_list_field_after_the_items_is_read_as_a_whole_parse_reads_it(
    after: list[dict[str, Any]],
) -> None:
    # The page ends in "]}" and its first "items" is its own, so the items are split; the
    # field after them only shows when the last item does not parse. Items: exactly the page's.
    whole = {"metadata": META, "items": [pod(0), pod(1)], "x": after}
    head, items = read(orjson.dumps(whole))
    assert items == [{**DEFAULTS, **item} for item in whole["items"]]
    assert head["metadata"] == META


def test_a_page_without_items_has_none() -> None:
    for body in (b'{"kind":"PodList","metadata":{}}', b'{"kind":"PodList","items":null}'):
        head, read_items = read(body)
        assert read_items == []
        assert head["items"] == []


@pytest.mark.parametrize(
    "items",
    [[pod(0), pod(1)], [custom(0, owners=3), custom(1, owners=2)]],
    ids=["pods", "custom resources with owner references"],
)
def test_items_are_parsed_as_they_are_reached(items: list[dict[str, Any]]) -> None:
    """The items before a damaged one are handed over before the damage is found (each item
    is parsed when the loop reaches it, not the page at once)."""
    damaged = json.loads(json.dumps(items[0]))
    damaged["metadata"]["name"] = "damaged"
    body = page([*items, damaged]).replace(b'"name":"damaged"', b'"name":nope')
    reached = []
    with pytest.raises(KubeError, match="not JSON"):
        for item in read_page(body, dict(DEFAULTS), "GET /api/v1/pods")[1]:
            reached.append(item)
    assert reached == expected_items(items)
