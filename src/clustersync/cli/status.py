"""``clustersync status``: the fleet as the backend sees it, as a table or JSON."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import orjson

from clustersync.cli.common import CommandError
from clustersync.cli.tools import _api, _tls


def _ago(epoch: Any, now: float) -> str:
    if not isinstance(epoch, int | float):
        return "-"
    seconds = max(0, int(now - epoch))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _table(rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, as kubectl prints them."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _sync(kind: dict[str, Any]) -> str:
    sync = kind.get("sync")
    if not sync:
        return "-"
    return "done" if sync["done"] else f"{sync['acknowledged']}/{sync['listed']}"


def fleet_table(items: Sequence[dict[str, Any]], now: float) -> str:
    rows = [["CLUSTER", "CONNECTED", "REPLICA", "SINCE", "LAST MESSAGE", "AGENT", "PROTOCOL",
             "OBJECTS", "SYNC", "WRITES P/A/R", "DEAD"]]  # fmt: skip
    for c in items:
        writes = c.get("writes", {})
        rows.append([
            f"{c['account']}/{c['cluster']}",
            "yes" if c["connected"] else "no",
            c.get("replica") or "-",
            _ago(c.get("connectedSince"), now) if c["connected"] else "-",
            _ago(c.get("lastMessage"), now),
            c.get("agentVersion") or "-",
            c.get("protocol") or "-",
            str(c["objects"]),
            c["initialSync"],
            f"{writes.get('pending', 0)}/{writes.get('applied', 0)}/{writes.get('refused', 0)}",
            str(c["deadLetters"]),
        ])  # fmt: skip
    return _table(rows)


def kinds_table(cluster: dict[str, Any]) -> str:
    rows = [["KIND", "OBJECTS", "LISTED", "SENT", "ACKNOWLEDGED", "SYNC"]]
    for kind in cluster["kinds"]:
        sync = kind.get("sync") or {}
        rows.append([
            kind["kind"],
            str(kind["objects"]),
            str(sync.get("listed", "-")),
            str(sync.get("sent", "-")),
            str(sync.get("acknowledged", "-")),
            _sync(kind),
        ])  # fmt: skip
    return _table(rows)


async def cmd_status(args: argparse.Namespace) -> None:
    base = f"{args.backend.rstrip('/')}/api/v1/clusters"
    if args.cluster and "/" in args.cluster:
        account, _, cluster = args.cluster.partition("/")
        items = [await _api("GET", f"{base}/{quote(account, safe='')}/{quote(cluster, safe='')}",
                            args.token, _tls(args))]  # fmt: skip
    else:
        doc = await _api("GET", base, args.token, _tls(args))
        items = [c for c in doc.get("items", []) if args.cluster in (None, c["cluster"])]
        if args.cluster and not items:
            raise CommandError(f"the backend knows no cluster named {args.cluster!r}", 1)
    if args.output == "json":
        single: Any = items[0] if args.cluster and len(items) == 1 else items
        sys.stdout.write(orjson.dumps(single, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    now = time.time()
    print(fleet_table(items, now))
    if args.cluster:
        for cluster in items:
            print(f"\n{cluster['account']}/{cluster['cluster']}")
            print(kinds_table(cluster))
