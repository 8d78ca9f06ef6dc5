"""kubescape's canonical hash (storage ``utils.CanonicalHash``) on every recorded case."""

from __future__ import annotations

from typing import Any

import pytest
from golden_cases import cases

from clustersync.protocol.checksum import GoJSONError, checksum_of_json


@pytest.mark.parametrize("case", cases("canonical_hash.json"))
def test_canonical_hash_matches_go(case: dict[str, Any]) -> None:
    text = case["input"]["json"]
    if case.get("error"):
        with pytest.raises(GoJSONError):
            checksum_of_json(text.encode())
        return
    assert checksum_of_json(text.encode()) == case["expected"]["digest"]
