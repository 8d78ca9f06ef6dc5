"""kubescape's canonical checksum: test vectors, order insensitivity, numbers, exclusions."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from clustersync.protocol.agent_types import checksum_of
from clustersync.protocol.checksum import (
    CHECKSUM_ANNOTATION,
    canonical_checksum,
    checksum_of_json,
    object_checksum,
)

VECTOR_1 = {"kind": "kind", "metadata": {"name": "name", "resourceVersion": "1"}}
VECTOR_1_SUM = "b8e83bb8d6a990924cd950530b53a09485b18ff40b68e8245f648e77cbc3e9f1"
VECTOR_2 = {"kind": "kind", "metadata": {"name": "name", "resourceVersion": "2"}}
VECTOR_2_SUM = "a32626ea7056f8a30220a6a526e7968d2fc33a8ad0d9a1036ca357b56660239b"


def test_reference_vectors() -> None:
    assert canonical_checksum(VECTOR_1) == VECTOR_1_SUM
    assert canonical_checksum(VECTOR_2) == VECTOR_2_SUM


def test_reference_vectors_from_json_text() -> None:
    text = b'{"metadata":{"resourceVersion":"1","name":"name"},"kind":"kind"}'
    assert checksum_of_json(text) == VECTOR_1_SUM
    assert checksum_of_json(text.decode()) == VECTOR_1_SUM
    assert object_checksum(copy.deepcopy(VECTOR_2)) == VECTOR_2_SUM


def test_checksum_is_lowercase_sha256_hex() -> None:
    value = canonical_checksum({"a": [1, "x", None, True, {"b": 2.5}]})
    assert len(value) == 64
    assert value == value.lower()
    int(value, 16)


def test_key_order_does_not_matter() -> None:
    a = {"a": 1, "b": {"c": "x", "d": [1, 2]}, "e": None}
    b = {"e": None, "b": {"d": [1, 2], "c": "x"}, "a": 1}
    assert canonical_checksum(a) == canonical_checksum(b)
    assert checksum_of_json(orjson.dumps(a)) == checksum_of_json(orjson.dumps(b))


def test_array_order_does_not_matter() -> None:
    a = {"items": [{"name": "x", "v": 1}, {"name": "y", "v": 2}, "s", 3]}
    b = {"items": [3, "s", {"v": 2, "name": "y"}, {"name": "x", "v": 1}]}
    assert canonical_checksum(a) == canonical_checksum(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"a": 1}, {"a": 2}),
        ({"a": 1}, {"b": 1}),
        ({"a": "1"}, {"a": 1}),
        ({"a": None}, {}),
        ({"a": True}, {"a": False}),
        ({"a": True}, {"a": 1}),
        ({"a": False}, {"a": 0}),
        ({"a": [1, 1]}, {"a": [1]}),
        ({"a": {"b": 1}}, {"a.b": 1}),
        ({"a": [1, 2]}, {"a": [[1, 2]]}),
    ],
)
def test_different_values_hash_differently(a: Any, b: Any) -> None:
    assert canonical_checksum(a) != canonical_checksum(b)


@pytest.mark.parametrize(("i", "f"), [(1, 1.0), (0, 0.0), (-7, -7.0), (2**40, float(2**40))])
def test_ints_hash_as_doubles(i: int, f: float) -> None:
    assert canonical_checksum({"n": i}) == canonical_checksum({"n": f})
    assert checksum_of_json(f'{{"n": {i}}}') == checksum_of_json(f'{{"n": {f!r}}}')


def test_float_fraction_differs_from_int() -> None:
    assert canonical_checksum({"n": 1}) != canonical_checksum({"n": 1.5})


def test_top_level_status_conditions_are_excluded() -> None:
    base = {"kind": "Node", "status": {"phase": "Running"}}
    with_conditions = copy.deepcopy(base)
    with_conditions["status"]["conditions"] = [{"type": "Ready", "lastHeartbeatTime": "t1"}]
    other_conditions = copy.deepcopy(base)
    other_conditions["status"]["conditions"] = [{"type": "Ready", "lastHeartbeatTime": "t2"}]
    assert canonical_checksum(with_conditions) == canonical_checksum(base)
    assert canonical_checksum(other_conditions) == canonical_checksum(base)
    # The rest of .status still counts.
    changed = copy.deepcopy(with_conditions)
    changed["status"]["phase"] = "Failed"
    assert canonical_checksum(changed) != canonical_checksum(base)


@pytest.mark.parametrize(
    "path",
    [
        ("spec", "status", "conditions"),
        ("conditions",),
        ("metadata", "conditions"),
        ("status", "nested", "conditions"),
    ],
)
def test_only_the_top_level_conditions_are_excluded(path: tuple[str, ...]) -> None:
    def build(value: str) -> dict[str, Any]:
        doc: dict[str, Any] = {"kind": "X"}
        node = doc
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = [{"type": "Ready", "status": value}]
        return doc

    assert canonical_checksum(build("True")) != canonical_checksum(build("False"))


def test_annotation_fast_path() -> None:
    obj = {
        "kind": "SBOMSyft",
        "metadata": {"name": "x", "annotations": {CHECKSUM_ANNOTATION: "precomputed"}},
        "spec": {"big": list(range(10))},
    }
    assert object_checksum(obj) == "precomputed"
    assert checksum_of(obj, {"whatever": 1}) == "precomputed"


@pytest.mark.parametrize("value", ["", None, 17, ["a"]])
def test_unusable_annotation_falls_back_to_canonical(value: Any) -> None:
    obj = {"kind": "X", "metadata": {"name": "x", "annotations": {CHECKSUM_ANNOTATION: value}}}
    assert object_checksum(obj) == canonical_checksum(obj)
    shaped = {"kind": "X", "metadata": {"name": "x"}}
    assert checksum_of(obj, shaped) == canonical_checksum(shaped)


def test_no_metadata_or_annotations() -> None:
    assert object_checksum({"kind": "X"}) == canonical_checksum({"kind": "X"})
    obj = {"kind": "X", "metadata": {"annotations": None}}
    assert object_checksum(obj) == canonical_checksum(obj)


def test_checksum_does_not_mutate() -> None:
    obj = {"b": [3, 1, 2], "a": {"z": 1, "y": 2}, "status": {"conditions": [1]}}
    before = copy.deepcopy(obj)
    canonical_checksum(obj)
    assert obj == before
    assert list(obj) == ["b", "a", "status"]
    assert obj["b"] == [3, 1, 2]


def test_unhashable_value_rejected() -> None:
    with pytest.raises(TypeError):
        canonical_checksum({"a": object()})


def test_exclusion_follows_kubescape_path_joining() -> None:
    # kubescape builds paths by joining keys with dots, so a root key spelled "status.conditions"
    # is excluded as well, and arrays add no level of their own.
    base = {"kind": "x"}
    assert canonical_checksum({**base, "status.conditions": [1]}) == canonical_checksum(base)
    assert canonical_checksum({**base, "status": [{"conditions": 1}]}) == canonical_checksum(
        {**base, "status": [{}]}
    )
    assert canonical_checksum(
        {**base, "spec": {"status": {"conditions": 1}}}
    ) != canonical_checksum({**base, "spec": {"status": {}}})
