"""How ``clustersync objects`` prints what the API lists, in the manner of ``kubectl get``."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

import orjson
import yaml

from clustersync.model import Kind, KindError

HEADER = ("NAMESPACE", "NAME", "KIND", "CLUSTER", "AGE")
WIDE_HEADER = (*HEADER, "CHECKSUM", "RESOURCE-VERSION")
SHORT_CHECKSUM = 12  # as short git hashes: enough to tell two versions apart by eye


def short_kind(text: str) -> str:
    """``/v1/configmaps`` as ``configmaps``, ``apps/v1/deployments`` as ``deployments.apps``:
    the short forms kubectl (and ``clustersync delete``) take back."""
    try:
        kind = Kind.parse(text)
    except KindError:
        return text
    return f"{kind.resource}.{kind.group}" if kind.group else kind.resource


def age(updated_at: Any, now: float) -> str:
    """kubectl's compact age: 42s, 5m, 3h, 12d (time since the backend last stored a change)."""
    if isinstance(updated_at, bool) or not isinstance(updated_at, int | float):
        return "<unknown>"
    seconds = max(0, int(now - updated_at))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def rfc3339(updated_at: Any) -> Any:
    """An epoch-seconds time as RFC 3339 UTC; anything else is left as the API gave it."""
    if isinstance(updated_at, bool) or not isinstance(updated_at, int | float):
        return updated_at
    stamp = datetime.datetime.fromtimestamp(updated_at, datetime.UTC)
    return stamp.isoformat(timespec="seconds").replace("+00:00", "Z")


def table(items: Sequence[dict[str, Any]], now: float, *, wide: bool) -> str:
    """Columns padded to their widest cell, three spaces apart, as kubectl aligns them."""
    rows: list[tuple[str, ...]] = [WIDE_HEADER if wide else HEADER]
    for item in items:
        row: tuple[str, ...] = (
            item.get("namespace") or "",
            str(item.get("name", "")),
            short_kind(str(item.get("kind", ""))),
            f"{item.get('account', '')}/{item.get('cluster', '')}",
            age(item.get("updatedAt"), now),
        )
        if wide:
            checksum = str(item.get("checksum") or "")[:SHORT_CHECKSUM]
            row = (*row, checksum, str(item.get("resourceVersion") or ""))
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def names(items: Sequence[dict[str, Any]]) -> str:
    return "".join(f"{short_kind(str(i.get('kind', '')))}/{i.get('name', '')}\n" for i in items)


def documents(items: Sequence[dict[str, Any]], output: str) -> str:
    """JSON or YAML of the listed rows, times as RFC 3339."""
    rows = [{**item, "updatedAt": rfc3339(item.get("updatedAt"))} for item in items]
    if output == "yaml":
        return yaml.safe_dump(rows, sort_keys=False)
    return orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n"
