"""Label and field selectors, with the same matching rules as the apiserver."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import bad_request

Predicate = Callable[[dict[str, Any]], bool]

_KEY = r"[A-Za-z0-9][A-Za-z0-9._/-]*"
_VALUE = r"[A-Za-z0-9._-]*"
_EXISTS = re.compile(rf"^(!?)\s*({_KEY})$")
_EQ = re.compile(rf"^({_KEY})\s*(==|=|!=)\s*({_VALUE})$")
_SET = re.compile(rf"^({_KEY})\s+(in|notin)\s*\(([^()]*)\)$")
_CMP = re.compile(rf"^({_KEY})\s*(<|>)\s*(-?[0-9]+)$")


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside ``in (...)`` value lists."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def _labels(obj: dict[str, Any]) -> dict[str, Any]:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels if isinstance(labels, dict) else {}


def _label_requirement(req: str) -> Predicate:
    if m := _SET.match(req):
        key, op, raw = m.groups()
        values = {v.strip() for v in raw.split(",") if v.strip()}
        if op == "in":
            return lambda o: key in _labels(o) and str(_labels(o)[key]) in values
        # `notin` also matches objects without the label, like the apiserver.
        return lambda o: key not in _labels(o) or str(_labels(o)[key]) not in values
    if m := _EQ.match(req):
        key, op, value = m.groups()
        if op == "!=":
            return lambda o: key not in _labels(o) or str(_labels(o)[key]) != value
        return lambda o: key in _labels(o) and str(_labels(o)[key]) == value
    if m := _CMP.match(req):
        key, op, num = m.groups()
        bound = int(num)

        def compare(o: dict[str, Any]) -> bool:
            try:
                have = int(str(_labels(o)[key]))
            except (KeyError, ValueError):
                return False
            return have > bound if op == ">" else have < bound

        return compare
    if m := _EXISTS.match(req):
        neg, key = m.groups()
        if neg:
            return lambda o: key not in _labels(o)
        return lambda o: key in _labels(o)
    raise bad_request(f"unable to parse requirement: {req!r}")


def parse_label_selector(text: str | None) -> list[Predicate]:
    if not text:
        return []
    return [_label_requirement(r) for r in _split_top_level(text)]


def _field_value(obj: dict[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return ""
        cur = cur[part]
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return "" if cur is None else str(cur)


def parse_field_selector(text: str | None) -> list[Predicate]:
    """Field selectors on any dotted path (the apiserver only allows a few
    per type; being permissive here never changes a result it would give)."""
    if not text:
        return []
    preds: list[Predicate] = []
    for req in _split_top_level(text):
        m = re.match(r"^([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*)$", req)
        if not m:
            raise bad_request(f"invalid field selector: {req!r}")
        path, op, value = m.groups()
        preds.append(_field_requirement(path, value, negate=op == "!="))
    return preds


def _field_requirement(path: str, value: str, *, negate: bool) -> Predicate:
    return lambda o: (_field_value(o, path) == value) != negate


@dataclass
class Filter:
    """What a list or watch is scoped to: namespace plus selectors."""

    namespace: str | None = None
    predicates: list[Predicate] = field(default_factory=list)
    has_selector: bool = False

    @classmethod
    def build(
        cls, namespace: str | None, label_selector: str | None, field_selector: str | None
    ) -> Filter:
        preds = parse_label_selector(label_selector) + parse_field_selector(field_selector)
        return cls(namespace or None, preds, bool(preds))

    def matches(self, obj: dict[str, Any]) -> bool:
        namespace = (obj.get("metadata") or {}).get("namespace", "")
        if self.namespace is not None and namespace != self.namespace:
            return False
        return all(p(obj) for p in self.predicates)
