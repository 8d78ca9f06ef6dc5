"""Takeover notices: how server replicas agree that a cluster's newest connection wins.

Each server replica subscribes to :data:`TAKEOVER_SUBJECT` under a durable name of its own, so
every replica sees every notice. A replica that accepts a cluster's connection publishes a
notice; the bus orders notices (their sequence numbers), so "newer" means the same thing on
every replica, whatever their clocks say. A replica holding an older connection of that
cluster closes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

TAKEOVER_SUBJECT = "cs.takeover"


class NoticeError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Notice:
    account: str
    cluster: str
    replica: str  # for the logs: which replica took the cluster over


def encode_notice(notice: Notice) -> bytes:
    return orjson.dumps(
        {"account": notice.account, "cluster": notice.cluster, "replica": notice.replica}
    )


def decode_notice(data: bytes) -> Notice:
    try:
        doc: Any = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise NoticeError(f"takeover notice is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise NoticeError("takeover notice must be a JSON object")
    fields = [doc.get(name) for name in ("account", "cluster", "replica")]
    strings = [value for value in fields if isinstance(value, str) and value]
    if len(strings) != len(fields):
        raise NoticeError("takeover notice needs account, cluster and replica strings")
    return Notice(*strings)
