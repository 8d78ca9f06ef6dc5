"""Merge patch creation against evanphx/json-patch v5.9.0 ``CreateMergePatch``, every recorded case.

Documents are compared by value with numbers as IEEE doubles (see golden_cases.as_go), which is
all a Go peer can observe once it decodes our bytes.
"""

from __future__ import annotations

from typing import Any

import pytest
from golden_cases import cases, same_document

from clustersync.protocol import gojson
from clustersync.protocol.mergepatch import PatchError, create_patch


def _parse_or_refuse(text: str) -> Any:
    """Input text as our decoders read it; Go's syntax errors are ours too."""
    return gojson.loads(text)


@pytest.mark.parametrize("case", cases("mergepatch_create.json"))
def test_create_merge_patch_matches_go(case: dict[str, Any]) -> None:
    original = _parse_or_refuse(case["input"]["original"])
    modified = _parse_or_refuse(case["input"]["modified"])
    if case.get("error"):
        with pytest.raises(PatchError):
            create_patch(original, modified)
        return
    assert same_document(create_patch(original, modified), case["expected"]["patch"])
