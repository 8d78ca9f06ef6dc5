"""What the fleet page shows: the backend's fleet status, with this process's live sockets.

Counts, dead letters and, once the agents report it, initial-sync progress come from
:func:`clustersync.runtime.status.fleet_status`, which reads the shared store, so every replica
shows the same. Connection state comes from two places: the agent sockets this process holds
(the ``backend`` process: exact and immediate) and the connection facts replicas share through
the store (``states``). A process with neither, such as an ``api`` replica before any replica
reported, shows the state as unknown rather than guessing "disconnected".
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from clustersync.adapters.store import Store
from clustersync.model.identity import TokenTable
from clustersync.runtime.status import fleet_status

ClusterId = tuple[str, str]  # (account, cluster)
StateReader = Callable[[], Awaitable[Mapping[ClusterId, Mapping[str, Any]]]]


@dataclass(frozen=True, slots=True)
class LinkFacts:
    """A live agent connection as the serving process sees it."""

    since: str  # when the agent connected (RFC 3339, as the server records it)
    last_seen: float  # epoch seconds of the last frame from the agent
    agent_version: str
    protocol: str  # the negotiated subprotocol (clustersync.v1, .v2), or "kubescape"


LinkSource = Callable[[], Mapping[ClusterId, LinkFacts]]


@dataclass(frozen=True, slots=True)
class KindProgress:
    listed: int  # objects the agent listed, as it reported
    stored: int  # objects of that kind the store holds now
    done: bool


@dataclass
class ClusterRow:
    account: str
    cluster: str
    connected: bool | None  # None: this process cannot know
    since: str | None = None
    last_seen: float | str | None = None  # epoch seconds, or a timestamp as reported
    agent_version: str | None = None
    protocol: str | None = None
    replica: str | None = None
    kinds: dict[str, int] = field(default_factory=dict)
    progress: dict[str, KindProgress] = field(default_factory=dict)
    dead_letters: int = 0
    writes: dict[str, int] = field(default_factory=dict)  # backend writes by outcome, non-zero

    @property
    def objects(self) -> int:
        return sum(self.kinds.values())

    @property
    def state(self) -> str:
        if self.connected is None:
            return "unknown"
        return "connected" if self.connected else "disconnected"

    @property
    def syncing(self) -> dict[str, KindProgress]:
        """Kinds whose initial sync is under way (the progress bars)."""
        return {k: p for k, p in self.progress.items() if not p.done and p.listed > 0}

    def as_json(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "cluster": self.cluster,
            "state": self.state,
            "since": self.since,
            "lastSeen": self.last_seen,
            "agentVersion": self.agent_version,
            "protocol": self.protocol,
            "replica": self.replica,
            "objects": self.objects,
            "kinds": self.kinds,
            "progress": {
                k: {"listed": p.listed, "stored": p.stored} for k, p in self.syncing.items()
            },
            "deadLetters": self.dead_letters,
            "writes": self.writes,
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
            protocol=str(conn.protocol),
        )
    return facts


def _progress(kind: Mapping[str, Any]) -> KindProgress | None:
    sync = kind.get("sync")
    if not isinstance(sync, Mapping):
        return None
    listed = sync.get("listed")
    if not isinstance(listed, int):
        return None
    return KindProgress(listed, int(kind.get("objects") or 0), bool(sync.get("done")))


def _row(doc: Mapping[str, Any], live: LinkFacts | None, shared: bool,
         local_sockets: bool) -> ClusterRow:
    connected: bool | None
    if live is not None or doc.get("connected"):
        connected = True  # here, or on another replica that said so through the store
    elif shared or local_sockets:
        connected = False
    else:
        connected = None
    kinds = {str(k["kind"]): int(k.get("objects") or 0) for k in doc.get("kinds", ())}
    progress = {str(k["kind"]): p for k in doc.get("kinds", ()) if (p := _progress(k))}
    row = ClusterRow(
        str(doc["account"]), str(doc["cluster"]), connected,
        since=doc.get("connectedSince"), last_seen=doc.get("lastMessage"),
        agent_version=doc.get("agentVersion"), protocol=doc.get("protocol"),
        replica=doc.get("replica"), kinds={k: n for k, n in kinds.items() if n},
        progress=progress, dead_letters=int(doc.get("deadLetters") or 0),
        writes={str(k): int(n) for k, n in (doc.get("writes") or {}).items() if n},
    )
    if live is not None:  # this process's own socket is the freshest word
        row.since, row.last_seen = live.since, live.last_seen
        row.agent_version = live.agent_version or row.agent_version
        row.protocol = live.protocol
    return row


async def fleet(store: Store, tokens: TokenTable, links: LinkSource | None,
                states: StateReader | None) -> list[ClusterRow]:
    """Every cluster a token names, the store holds objects of, or an agent connected as."""
    shared = dict(await states()) if states is not None else {}
    live = dict(links()) if links is not None else {}
    # A cluster connected here under an account key may not be in the store yet: list it too.
    known = {**{key: {} for key in live}, **shared}
    docs = await fleet_status(store, tokens, known)
    return [
        _row(doc, live.get(key), key in shared, links is not None)
        for doc in docs
        for key in [(str(doc["account"]), str(doc["cluster"]))]
    ]
