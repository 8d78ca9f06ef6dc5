"""Loading seed objects from JSON or YAML files.

A JSON array is read one element at a time: 100k pods parsed at once would take several GB of
Python objects before the store has encoded the first one, so the sandbox creates each as it
is read and the parsed elements never pile up.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import yaml

_BLANK = re.compile(r"\s*")


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


def _json_array(path: Path, text: str) -> Iterator[Any]:
    """The elements of a top-level JSON array, each parsed when it is reached."""
    decoder = json.JSONDecoder()
    pos = _BLANK.match(text, 0).end() + 1  # type: ignore[union-attr]  # \s* always matches
    first = True
    while True:
        pos = _BLANK.match(text, pos).end()  # type: ignore[union-attr]
        if text.startswith("]", pos):
            if text[pos + 1 :].strip():
                raise SeedError(f"{path}: invalid JSON: extra data after the array at {pos + 1}")
            return
        if not first:
            if not text.startswith(",", pos):
                raise SeedError(f"{path}: invalid JSON: expected ',' or ']' at {pos}")
            pos = _BLANK.match(text, pos + 1).end()  # type: ignore[union-attr]
        try:
            element, pos = decoder.raw_decode(text, pos)
        except ValueError as exc:
            raise SeedError(f"{path}: invalid JSON: {_one_line(exc)}") from exc
        first = False
        yield element


def _documents(path: Path, text: str) -> Iterator[Any]:
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        yield from _json_array(path, text)
    else:
        yield from _parse(path, text)


def iter_seed(path: str | Path) -> Iterator[dict[str, Any]]:
    """Objects from a JSON/YAML list, a ``*List`` object, or multi-document YAML, checked and
    yielded one by one (a bad object is reported when it is reached)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SeedError(f"{p}: cannot read: {_one_line(exc)}") from exc
    index = 0
    try:
        for doc in _documents(p, text):
            for obj in _expand(doc):
                index += 1
                problem = _check(obj)
                if problem:
                    raise SeedError(f"{p}: object {index}: {problem}")
                yield obj
    except SeedError as exc:
        msg = str(exc)
        raise SeedError(msg if msg.startswith(str(p)) else f"{p}: {msg}") from None


def load_seed(path: str | Path) -> list[dict[str, Any]]:
    """Every object of a seed file (see ``iter_seed``), or a ``SeedError`` for the first
    problem."""
    return list(iter_seed(path))
