"""Loading seed objects from JSON or YAML files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import yaml


class SeedError(Exception):
    """A seed file cannot be used; the message is a single line."""


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _parse(path: Path, text: str) -> list[Any]:
    if path.suffix.lower() == ".json":
        try:
            return [orjson.loads(text)]
        except orjson.JSONDecodeError as exc:
            raise SeedError(f"{path}: invalid JSON: {_one_line(exc)}") from exc
    try:
        # YAML is a superset of JSON, so this also covers JSON in .yaml files.
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise SeedError(f"{path}: invalid YAML: {_one_line(exc)}") from exc


def _expand(doc: Any) -> list[Any]:
    if isinstance(doc, list):
        return [item for d in doc for item in _expand(d)]
    if isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List") and "items" in doc:
        items = doc.get("items") or []
        if not isinstance(items, list):
            raise SeedError(f"{doc.get('kind')}.items is not a list")
        return [item for d in items for item in _expand(d)]
    return [doc]


def _check(obj: Any) -> str | None:
    if not isinstance(obj, dict):
        return f"expected an object, got {type(obj).__name__}"
    for field in ("apiVersion", "kind"):
        if not isinstance(obj.get(field), str) or not obj[field]:
            return f"missing {field}"
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not (meta.get("name") or meta.get("generateName")):
        return f"{obj['kind']} without metadata.name"
    return None


def load_seed(path: str | Path) -> list[dict[str, Any]]:
    """Objects from a JSON/YAML list, a ``*List`` object, or multi-document YAML."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SeedError(f"{p}: cannot read: {_one_line(exc)}") from exc
    try:
        objs = [item for doc in _parse(p, text) for item in _expand(doc)]
    except SeedError as exc:
        msg = str(exc)
        raise SeedError(msg if msg.startswith(str(p)) else f"{p}: {msg}") from None
    for index, obj in enumerate(objs, 1):
        problem = _check(obj)
        if problem:
            raise SeedError(f"{p}: object {index}: {problem}")
    return objs
