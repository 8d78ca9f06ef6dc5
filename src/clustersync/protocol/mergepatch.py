"""RFC 7386 JSON merge patches: create one from two documents, and apply one.

Neither function mutates its inputs: shadows and stored copies are shared across messages.
"""

from __future__ import annotations

from typing import Any

import orjson

MAX_PATCH_NESTING = 64  # deeper documents are refused rather than recursing without bound


class PatchError(ValueError):
    """A patch that cannot be applied (not a JSON object, nested too deeply)."""


def create_patch(old: Any, new: Any) -> Any:
    """The merge patch that turns ``old`` into ``new``.

    Merge patches cannot express a ``null`` value (null means "remove"), so a key whose new value
    is null is removed instead; checksums are therefore computed on the patch *result*.
    """
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {}
    for key in old:
        if key not in new:
            patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
            continue
        before = old[key]
        if _json_equal(before, value):
            continue
        if isinstance(before, dict) and isinstance(value, dict):
            patch[key] = create_patch(before, value)
        else:
            patch[key] = value
    return patch


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality: unlike ``==``, ``true`` is not ``1`` and ``false`` is not ``0``.

    Python's ``==`` runs in C and rejects most differences; only values it calls equal are
    checked again, by their serialised form. ``1`` and ``1.0`` count as different here, which
    merely puts an unchanged number into a patch.
    """
    if type(a) is not type(b) or a != b:
        return False
    if isinstance(a, dict | list):
        return orjson.dumps(a, option=orjson.OPT_SORT_KEYS) == orjson.dumps(
            b, option=orjson.OPT_SORT_KEYS
        )
    return True


def apply_patch(target: Any, patch: Any, _nesting: int = 0) -> Any:
    """Apply a merge patch, returning a new document."""
    if _nesting > MAX_PATCH_NESTING:
        raise PatchError("patch nested too deeply")
    if not isinstance(patch, dict):
        return patch
    result: dict[str, Any] = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_patch(result.get(key), value, _nesting + 1)
    return result


def is_noop_patch(patch: Any) -> bool:
    """True if the patch changes nothing but ``metadata.resourceVersion``.

    kubescape skips such patches (and keeps its shadow): a bare resourceVersion bump carries no
    information the backend needs.
    """
    if not isinstance(patch, dict):
        return False
    if not patch:
        return True
    if set(patch) != {"metadata"}:
        return False
    meta = patch["metadata"]
    return isinstance(meta, dict) and set(meta) <= {"resourceVersion"}
