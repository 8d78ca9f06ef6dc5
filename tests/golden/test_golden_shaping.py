"""What kubescape's agent sends of an object (``filterAndMarshal``) and which objects it skips
(``isFiltered``), on every recorded case; the checksum of what we send must be Go's."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from golden_cases import cases, same_document

from clustersync.model import Kind
from clustersync.protocol.checksum import canonical_checksum
from clustersync.protocol.shaping import NamespaceRules, ShapingError, is_filtered, shape

CASES = cases("shaping.json")


def _op(op: str) -> list[Any]:
    return [p for p in CASES if p.values[0]["input"]["op"] == op]


@pytest.mark.parametrize("case", _op("filterAndMarshal"))
def test_filter_and_marshal_matches_go(case: dict[str, Any]) -> None:
    given = case["input"]
    kind = Kind(given["kind"]["group"], given["kind"]["version"], given["kind"]["resource"])
    # orjson reads API-server JSON as Go's shaping does: integers stay integers (also -0 -> 0).
    live = orjson.loads(given["object"])
    if case.get("error"):
        with pytest.raises(ShapingError):
            shape(kind, live)
        return
    shaped = shape(kind, live)
    assert same_document(shaped, case["expected"]["object"])
    assert canonical_checksum(shaped) == case["expected"]["checksum"]


@pytest.mark.parametrize("case", _op("isFiltered"))
def test_is_filtered_matches_go(case: dict[str, Any]) -> None:
    config = case["input"]["config"]
    rules = NamespaceRules(
        operator_namespace=config["operatorNamespace"],
        include=frozenset(config["includeNamespaces"]),
        exclude=frozenset(config["excludeNamespaces"]),
    )
    obj = orjson.loads(case["input"]["object"])
    assert is_filtered(obj, rules) is case["expected"]["filtered"]
