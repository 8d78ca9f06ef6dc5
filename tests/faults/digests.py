"""clustersync's fast digest computed from its definition, without the project's code: a bug in
``protocol/digest.py`` must be able to fail the tests that compare with it.

Definition (docs/architecture.md, "Checksums"): ``cs1:`` and the lowercase hex SHA-256 of the
object's JSON with ``.status.conditions`` removed, keys sorted, no whitespace.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

KUBESCAPE_FORM = re.compile(r"^[0-9a-f]{64}$")
FAST_FORM = re.compile(r"^cs1:[0-9a-f]{64}$")


def expected_fast_digest(obj: Any) -> str:
    """The fast digest of a decoded object (strings, integers, lists and objects only: the
    standard library writes floats differently from orjson)."""
    doc = json.loads(json.dumps(obj))  # a deep copy
    if isinstance(doc, dict) and isinstance(doc.get("status"), dict):
        doc["status"].pop("conditions", None)
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "cs1:" + hashlib.sha256(text.encode()).hexdigest()


def expected_fast_digest_of_json(body: bytes) -> str:
    return expected_fast_digest(json.loads(body))
