"""RFC 7386 merge patches: the RFC's examples, create/apply round trips, no mutation."""

from __future__ import annotations

import copy
import random
from typing import Any

import orjson
import pytest

from clustersync.protocol.mergepatch import (
    MAX_PATCH_NESTING,
    PatchError,
    apply_patch,
    create_patch,
    is_noop_patch,
)


def _same(a: Any, b: Any) -> bool:
    """Strict JSON equality: unlike ==, true is not 1 and 1 is not 1.0."""
    opts = orjson.OPT_SORT_KEYS
    return orjson.dumps(a, option=opts) == orjson.dumps(b, option=opts)


# RFC 7386 appendix A examples the recorded Go vectors (tests/golden/) do not include:
# (original, patch, result). The rest of the appendix is among the vectors.
RFC_EXAMPLES = [
    ('{"a":["b"]}', '{"a":"c"}', '{"a":"c"}'),
    ('{"a":[{"b":"c"}]}', '{"a":[1]}', '{"a":[1]}'),
    ('{"e":null}', '{"a":1}', '{"e":null,"a":1}'),
]


@pytest.mark.parametrize(("original", "patch", "result"), RFC_EXAMPLES)
def test_rfc7386_appendix_a(original: str, patch: str, result: str) -> None:
    target, doc = orjson.loads(original), orjson.loads(patch)
    target_before, doc_before = copy.deepcopy(target), copy.deepcopy(doc)
    assert _same(apply_patch(target, doc), orjson.loads(result))
    assert _same(target, target_before)
    assert _same(doc, doc_before)


@pytest.mark.parametrize("patch", ['"bar"', "42", "true", "null"])
def test_patches_go_refuses(patch: str) -> None:
    # evanphx/json-patch answers "Invalid JSON Patch" where strict RFC 7386 would replace.
    with pytest.raises(PatchError):
        apply_patch({"a": "foo"}, orjson.loads(patch))


def test_null_document_is_refused() -> None:
    with pytest.raises(PatchError):
        apply_patch(None, {"a": 1})


def test_rfc7386_main_example() -> None:
    target = {
        "title": "Goodbye!",
        "author": {"givenName": "John", "familyName": "Doe"},
        "tags": ["example", "sample"],
        "content": "This will be unchanged",
    }
    patch = {
        "title": "Hello!",
        "phoneNumber": "+01-123-456-7890",
        "author": {"familyName": None},
        "tags": ["example"],
    }
    expected = {
        "title": "Hello!",
        "author": {"givenName": "John"},
        "tags": ["example"],
        "content": "This will be unchanged",
        "phoneNumber": "+01-123-456-7890",
    }
    assert _same(apply_patch(target, patch), expected)


CREATE_CASES = [
    ({}, {}, {}),
    ({"a": 1}, {"a": 1}, {}),
    ({"a": 1}, {"a": 2}, {"a": 2}),
    ({"a": 1}, {}, {"a": None}),
    ({}, {"a": {"b": 1}}, {"a": {"b": 1}}),
    ({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}}, {"a": {"c": 3}}),
    ({"a": {"b": 1}}, {"a": [1]}, {"a": [1]}),
    ({"a": [1, 2]}, {"a": [2, 1]}, {"a": [2, 1]}),
    ({"a": "x"}, {"a": {"b": 1}}, {"a": {"b": 1}}),
    ({"a": 1}, {"a": True}, {"a": True}),
    ({"a": 0}, {"a": False}, {"a": False}),
    ({"a": {"b": [0]}}, {"a": {"b": [False]}}, {"a": {"b": [False]}}),
    ({"a": 1}, {"a": 1.0}, {}),  # numbers compare as float64
    ({"a": [1, {"b": 2}]}, {"a": [1.0, {"b": 2.0}]}, {}),
    ([{"a": 1}, {"b": 1}], [{"a": 2}, {"b": 1}], [{"a": 2}, {}]),
    # evanphx/json-patch v5.9.0 (checked in its source): array elements match only with the same
    # keys, so a key that became absent from an element object is a change, even from null.
    ({"a": [{"b": None}]}, {"a": [{}]}, {"a": [{}]}),
    # Go decodes null into an empty map.
    (None, {"a": 1}, {"a": 1}),
    ([None], [{"a": 1}], [{"a": 1}]),
]


@pytest.mark.parametrize(
    ("old", "new"),
    [([1], {"a": 1}), ({"a": 1}, [1]), ([{}], [{}, {}]), ([1], [2]), ("x", {}), ({}, 5)],
)
def test_create_patch_refuses_what_go_refuses(old: Any, new: Any) -> None:
    with pytest.raises(PatchError):
        create_patch(old, new)


@pytest.mark.parametrize(("old", "new", "patch"), CREATE_CASES)
def test_create_patch(old: Any, new: Any, patch: Any) -> None:
    assert _same(create_patch(old, new), patch)


def test_null_values_cannot_travel() -> None:
    # A key whose new value is null is removed: the result differs from ``new`` there.
    old = {"a": 1, "b": 2}
    new = {"a": None, "b": 2, "c": None}
    patch = create_patch(old, new)
    assert _same(apply_patch(old, patch), {"b": 2})


def _value(rng: random.Random, depth: int) -> Any:
    roll = rng.random()
    if depth > 3 or roll < 0.45:
        return rng.choice([0, 1, 2, 1.5, -3, True, False, "", "x", "y", "1", 10**12])
    if roll < 0.6:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return _document(rng, depth + 1)


def _document(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    keys = rng.sample(["a", "b", "c", "d", "metadata", "spec"], rng.randint(0, 4))
    return {key: _value(rng, depth) for key in keys}


def _mutate(rng: random.Random, doc: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    for _ in range(rng.randint(0, 3)):
        node = out
        while True:
            children = [k for k, v in node.items() if isinstance(v, dict)]
            if not children or rng.random() < 0.4:
                break
            node = node[rng.choice(children)]
        action = rng.random()
        if action < 0.3 and node:
            del node[rng.choice(list(node))]
        else:
            node[rng.choice(["a", "b", "e", "spec"])] = _value(rng, 2)
    return out


@pytest.mark.parametrize("seed", range(20))
def test_create_apply_round_trip(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(100):
        old = _document(rng)
        new = _mutate(rng, old) if rng.random() < 0.7 else _document(rng)
        old_before, new_before = copy.deepcopy(old), copy.deepcopy(new)
        patch = create_patch(old, new)
        patch_before = copy.deepcopy(patch)
        result = apply_patch(old, patch)
        assert _same(result, new), (old, new, patch)
        assert _same(old, old_before)
        assert _same(new, new_before)
        assert _same(patch, patch_before)
        # Applying the same patch again changes nothing more (merge patches are idempotent).
        assert _same(apply_patch(result, patch), new)
        # The empty patch is exactly "no difference".
        assert (patch == {}) == _same(old, new)


def test_result_does_not_alias_into_inputs_when_mutated() -> None:
    target = {"a": {"b": {"c": 1}}, "keep": {"x": [1]}}
    patch = {"a": {"b": {"d": 2}}}
    result = apply_patch(target, patch)
    result["a"]["b"]["c"] = 99
    result["a"]["new"] = 1
    assert target == {"a": {"b": {"c": 1}}, "keep": {"x": [1]}}
    assert patch == {"a": {"b": {"d": 2}}}


def test_apply_to_non_object_target() -> None:
    assert apply_patch("text", {"a": {"b": None}}) == {"a": {}}
    assert apply_patch([1], {"a": [{"b": None}]}) == {"a": [{}]}


def test_patch_nesting_limit() -> None:
    ok: Any = {"leaf": 1}
    for _ in range(MAX_PATCH_NESTING - 1):
        ok = {"n": ok}
    apply_patch({}, ok)
    too_deep: Any = {"leaf": 1}
    for _ in range(MAX_PATCH_NESTING + 5):
        too_deep = {"n": too_deep}
    with pytest.raises(PatchError):
        apply_patch({}, too_deep)
    assert issubclass(PatchError, ValueError)


@pytest.mark.parametrize("patch", [{}, {"metadata": {"resourceVersion": "7"}}])
def test_noop_patches(patch: Any) -> None:
    assert is_noop_patch(patch)


@pytest.mark.parametrize(
    "patch",
    [
        None,
        [],
        "x",
        0,
        {"spec": {}},
        {"metadata": None},
        {"metadata": "x"},
        {"metadata": {"resourceVersion": "7", "generation": 2}},
        {"metadata": {"labels": {"a": "b"}}},
        {"metadata": {"resourceVersion": "7"}, "status": {"phase": "Running"}},
        {"metadata": {"managedFields": None}},
        {"resourceVersion": "7"},
    ],
)
def test_not_noop_patches(patch: Any) -> None:
    assert not is_noop_patch(patch)


def test_rv_only_change_creates_noop_patch() -> None:
    old = {"metadata": {"name": "x", "resourceVersion": "6"}, "spec": {"a": 1}}
    new = {"metadata": {"name": "x", "resourceVersion": "7"}, "spec": {"a": 1}}
    assert is_noop_patch(create_patch(old, new))
    new["spec"]["a"] = 2
    assert not is_noop_patch(create_patch(old, new))
