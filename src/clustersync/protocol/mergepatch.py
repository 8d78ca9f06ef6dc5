"""JSON merge patches exactly as kubescape's Go peers make and apply them.

kubescape creates and applies merge patches with evanphx/json-patch v5.9.0 (root package,
``CreateMergePatch`` and ``MergePatch``), and both sides hash the *result* of an application. So
a patch must turn a document into the very value the Go library computes, or a Go peer's checksum
never verifies. That library is RFC 7386 except where nulls sit inside arrays (reference 3.8,
vectors in tests/golden/):

* a patch value that lands where the document has no value, ``null`` or a non-object value is
  copied with every null-valued key removed, recursively, including inside objects that are array
  elements (``null`` array elements themselves stay);
* a patch value that is not an object but replaces an object is copied as it is (no pruning);
* objects merge key by key; a ``null`` patch value deletes the key;
* a patch that is not an object or array (``null``, a string, a number) is refused, as is a
  ``null`` document; an array patch replaces the whole document (pruned).

Creating compares numbers as float64 (``1`` and ``1.0`` are equal, ``true`` is not ``1``) and
replaces arrays whole when any element differs.

Neither function mutates its inputs: shadows and stored copies are shared across messages.
"""

from __future__ import annotations

from typing import Any

import orjson

MAX_PATCH_NESTING = 64  # deeper documents are refused rather than recursing without bound


class PatchError(ValueError):
    """A patch that cannot be made or applied (a kind of document Go refuses, nested too deeply)."""


def create_patch(old: Any, new: Any) -> Any:
    """The merge patch that turns ``old`` into ``new``, as Go's ``CreateMergePatch`` makes it.

    Two objects give an object patch (``null`` reads as an empty object, as in Go). Two arrays of
    equal length give an array of per-element object patches (Go's behaviour; the synchronizer
    only ever diffs objects). Anything else is refused. A key whose new value is null appears as
    ``null`` (a removal), so checksums are computed on the patch *result*.
    """
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            raise PatchError("cannot diff arrays of different lengths")
        return [
            _object_diff(_as_object(before), _as_object(after), 0)
            for before, after in zip(old, new, strict=True)
        ]
    if isinstance(old, list) or isinstance(new, list):
        raise PatchError("cannot diff an array against an object")
    return _object_diff(_as_object(old), _as_object(new), 0)


def _as_object(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PatchError("a merge patch is made from two objects")
    return value


def _object_diff(old: dict[str, Any], new: dict[str, Any], nesting: int) -> dict[str, Any]:
    if nesting > MAX_PATCH_NESTING:
        raise PatchError("document nested too deeply")
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        if key not in old:
            patch[key] = value  # copied with any nulls inside it, as Go does
            continue
        before = old[key]
        if _go_equal(before, value):
            continue  # most of an object is unchanged: one comparison in C, no walk
        if isinstance(before, dict) and isinstance(value, dict):
            nested = _object_diff(before, value, nesting + 1)
            if nested:  # numbers that differ only past float64 precision make no patch
                patch[key] = nested
        else:
            patch[key] = value
    return patch


def _is_number(value: Any) -> bool:
    return type(value) in _NUMBER_TYPES  # bool is not a number here, unlike in isinstance


_NUMBER_TYPES = (int, float)


def _go_equal(a: Any, b: Any) -> bool:
    """Value equality of two decoded JSON values as Go's decoder sees them (float64 numbers).

    Python's ``==`` runs in C and agrees with Go except that ``true == 1`` and that integers past
    2**53 compare exactly: values it calls equal are confirmed by their serialised form, and
    only the rare ones that still differ there (``1`` and ``1.0``, a bool for a number) are
    walked. Containers it calls different are taken as different; for integers that differ but
    round to the same double, that costs an unneeded patch entry, never a lost change.
    """
    kind_a, kind_b = type(a), type(b)
    if kind_a in _NUMBER_TYPES or kind_b in _NUMBER_TYPES:
        return kind_a in _NUMBER_TYPES and kind_b in _NUMBER_TYPES and float(a) == float(b)
    if a != b:
        return False
    if kind_a is not dict and kind_a is not list:
        return kind_a is kind_b
    if orjson.dumps(a, option=orjson.OPT_SORT_KEYS) == orjson.dumps(b, option=orjson.OPT_SORT_KEYS):
        return True
    return _go_equal_walk(a, b)


def _go_equal_walk(a: Any, b: Any) -> bool:
    if _is_number(a) or _is_number(b):
        return _is_number(a) and _is_number(b) and float(a) == float(b)
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_go_equal_walk(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_go_equal_walk(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def apply_patch(target: Any, patch: Any) -> Any:
    """Apply a merge patch as Go's ``MergePatch`` does, returning a new document."""
    if isinstance(patch, list):
        return _pruned(patch, 0)
    if not isinstance(patch, dict):
        raise PatchError("a merge patch must be a JSON object or array")
    if target is None:
        raise PatchError("cannot patch a null document")
    if not isinstance(target, dict):
        return _pruned(patch, 0)
    return _merged(target, patch, 0)


def _merged(target: dict[str, Any], patch: dict[str, Any], nesting: int) -> dict[str, Any]:
    if nesting > MAX_PATCH_NESTING:
        raise PatchError("patch nested too deeply")
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
            continue
        current = result.get(key)
        if isinstance(current, dict):
            # An object is merged into; anything else replaces it unpruned (Go's asymmetry).
            result[key] = _merged(current, value, nesting + 1) if isinstance(value, dict) else value
        else:
            result[key] = _pruned(value, nesting + 1)
    return result


def _pruned(value: Any, nesting: int) -> Any:
    """``value`` without null-valued object keys at any depth, also inside arrays."""
    if nesting > MAX_PATCH_NESTING:
        raise PatchError("patch nested too deeply")
    if isinstance(value, dict):
        return {k: _pruned(v, nesting + 1) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_pruned(item, nesting + 1) for item in value]
    return value


def is_noop_patch(patch: Any) -> bool:
    """True if the patch changes nothing but ``metadata.resourceVersion``.

    kubescape skips such patches (and keeps its shadow): a bare resourceVersion bump carries no
    information the backend needs. We also skip the empty patch, which kubescape sends.
    """
    if not isinstance(patch, dict):
        return False
    if not patch:
        return True
    if set(patch) != {"metadata"}:
        return False
    meta = patch["metadata"]
    return isinstance(meta, dict) and set(meta) <= {"resourceVersion"}
