"""What the dashboard shows, gathered from the store, the token table and live connections.

The store is shared by every replica, so object counts are the fleet's. Connection state is what
the process serving the page knows: the ``backend`` process holds the agent sockets and reports
them; an ``api`` process alone has no sockets and shows the state as unknown.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from clustersync.adapters.store import Store
from clustersync.model.identity import TokenTable

ClusterId = tuple[str, str]  # (account, cluster)


@dataclass(frozen=True, slots=True)
class LinkFacts:
    """A live agent connection as the serving process sees it."""

    since: str  # when the agent connected (RFC 3339, as the server records it)
    last_seen: float  # epoch seconds of the last frame from the agent
    agent_version: str
    extensions: bool  # clustersync.v1 negotiated (else a kubescape agent)


LinkSource = Callable[[], Mapping[ClusterId, LinkFacts]]


@dataclass
class ClusterRow:
    account: str
    cluster: str
    connected: bool | None  # None: this process cannot know (no agent sockets here)
    link: LinkFacts | None = None
    kinds: Counter[str] = field(default_factory=Counter)
    last_stored: float = 0.0  # epoch seconds of the newest stored change

    @property
    def objects(self) -> int:
        return sum(self.kinds.values())

    @property
    def state(self) -> str:
        if self.connected is None:
            return "unknown"
        return "connected" if self.connected else "disconnected"

    def as_json(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "cluster": self.cluster,
            "state": self.state,
            "since": self.link.since if self.link else None,
            "lastSeen": self.link.last_seen if self.link else None,
            "agentVersion": self.link.agent_version if self.link else None,
            "protocol": (
                None if not self.link else "clustersync.v1" if self.link.extensions else "kubescape"
            ),
            "objects": self.objects,
            "kinds": dict(sorted(self.kinds.items())),
            "lastStored": self.last_stored or None,
        }


def server_links(connections: Mapping[ClusterId, Any], loop_time: Callable[[], float]) -> dict[
    ClusterId, LinkFacts
]:
    """LinkFacts of a SyncServer's connections (``Connection`` objects, read by attribute)."""
    now_loop, now = loop_time(), time.time()
    facts = {}
    for key, conn in connections.items():
        client = dict(conn.client)
        last_read = conn.last_read or now_loop
        facts[key] = LinkFacts(
            since=client.get("connectionTime", ""),
            last_seen=now - max(0.0, now_loop - last_read),
            agent_version=client.get("synchronizerVersion", ""),
            extensions=bool(conn.acks),
        )
    return facts


async def fleet(store: Store, tokens: TokenTable, links: LinkSource | None) -> list[ClusterRow]:
    """Every cluster a token names or the store holds objects of, sorted by account, cluster."""
    live = dict(links()) if links is not None else None
    rows: dict[ClusterId, ClusterRow] = {}

    def row(key: ClusterId) -> ClusterRow:
        if key not in rows:
            connected = None if live is None else key in live
            rows[key] = ClusterRow(key[0], key[1], connected, (live or {}).get(key))
        return rows[key]

    for identity in tokens.tokens.values():
        if not identity.admin and identity.account and identity.cluster:
            row((identity.account, identity.cluster))
    for key in live or {}:
        row(key)
    for stored in await store.list():
        entry = row((stored.key.account, stored.key.cluster))
        entry.kinds[str(stored.key.ref.kind)] += 1
        entry.last_stored = max(entry.last_stored, stored.updated_at)
    return [rows[key] for key in sorted(rows)]
