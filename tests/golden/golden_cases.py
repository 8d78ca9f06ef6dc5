"""Loading the recorded kubescape vectors, and comparing documents the way the vectors ask.

See PROVENANCE.md: every ``expected`` value was produced by kubescape's Go code, never by ours.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent


def cases(file: str) -> list[Any]:
    """The cases of one vector file as pytest params, each with its recorded name as id."""
    loaded = json.loads((HERE / file).read_text(encoding="utf-8"))
    return [pytest.param(case, id=case["name"]) for case in loaded]


def go_json(text: str) -> Any:
    """Parse JSON text as Go's ``interface{}`` decoding sees it: every number a float64.

    Python's own parser is used on purpose: it is independent of the orjson the code under test
    uses, and it accepts any integer size, which we then read as Go does (a double).
    """
    return json.loads(text, parse_int=float, parse_float=float, parse_constant=_refuse)


def _refuse(name: str) -> Any:
    raise ValueError(f"not JSON: {name}")


def as_go(value: Any) -> Any:
    """A decoded value in a form where ``==`` is Go's value equality: numbers compare as IEEE
    doubles, and booleans never equal numbers (Python's ``True == 1`` would hide a bug)."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        number = float(value)
        # -0 and 0 are one value to Go's == but not to the hash: keep the sign visible.
        return ("number", number, math.copysign(1.0, number))
    if isinstance(value, dict):
        return {key: as_go(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_go(item) for item in value]
    return value


def same_document(ours: Any, recorded_text: str) -> bool:
    return as_go(ours) == as_go(go_json(recorded_text))
