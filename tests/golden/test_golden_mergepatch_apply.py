"""Merge patch application against evanphx/json-patch v5.9.0 ``MergePatch``, every recorded case.

Documents are compared by value with numbers as IEEE doubles (see golden_cases.as_go), which is
all a Go peer can observe once it decodes our bytes.
"""

from __future__ import annotations

from typing import Any

import pytest
from golden_cases import cases, same_document

from clustersync.protocol import gojson
from clustersync.protocol.mergepatch import PatchError, apply_patch


def _parse_or_refuse(text: str) -> Any:
    """Input text as our decoders read it; Go's syntax errors are ours too."""
    return gojson.loads(text)


@pytest.mark.parametrize("case", cases("mergepatch_apply.json"))
def test_apply_merge_patch_matches_go(case: dict[str, Any]) -> None:
    if case.get("error"):
        with pytest.raises((PatchError, gojson.GoJSONError)):
            apply_patch(
                _parse_or_refuse(case["input"]["document"]),
                _parse_or_refuse(case["input"]["patch"]),
            )
        return
    document = _parse_or_refuse(case["input"]["document"])
    patch = _parse_or_refuse(case["input"]["patch"])
    assert same_document(apply_patch(document, patch), case["expected"]["result"])
