"""The fleet's status, as the backend knows it: which clusters exist, whether their agents are
connected (and where), what they hold per kind, how far their initial sync got.

Everything comes from the store, so every API replica answers the same: object counts from the
objects table, dead letters from the dead-letter table, and connection facts and sync progress
from the cluster-state rows that the ingester keeps from what server replicas report on the bus
(see :mod:`clustersync.runtime.status_recorder`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from clustersync.adapters.store import ClusterState, KindCount, Store
from clustersync.model.identity import TokenTable
from clustersync.protocol.envelope import subject_token
from clustersync.protocol.messages import WriteStatus
from clustersync.runtime.status_report import LINK_REPORT_INTERVAL

# A replica reports each live connection every LINK_REPORT_INTERVAL; a report older than this
# many intervals means the replica died with the connection (the agent has not come back).
STALE_REPORTS = 3

Key = tuple[str, str]


def named_clusters(tokens: TokenTable) -> set[Key]:
    """Clusters a cluster key names (an account key names no cluster until its agent connects)."""
    return {
        (i.account, i.cluster)
        for i in tokens.tokens.values()
        if not i.admin and i.account and i.cluster
    }


def state_document(state: ClusterState, now: float) -> dict[str, Any]:
    """What the fleet status reads of a cluster-state row (unreadable JSON reads as unknown)."""
    try:
        link = orjson.loads(state.link)
        progress = orjson.loads(state.progress)
    except orjson.JSONDecodeError:
        link, progress = {}, {}
    link = link if isinstance(link, dict) else {}
    reported = link.get("reportedAt")
    fresh = isinstance(reported, int | float) and now - reported < STALE_REPORTS * (
        LINK_REPORT_INTERVAL
    )
    return {
        "connected": bool(link.get("connected")) and fresh,
        "replica": link.get("replica"),
        "connectedSince": link.get("connectedSince"),
        "lastMessage": link.get("lastMessage"),
        "lastReport": reported,
        "agentVersion": link.get("synchronizerVersion"),
        "protocol": link.get("protocol"),
        "progress": progress if isinstance(progress, dict) else {},
    }


async def load_states(store: Store) -> dict[Key, dict[str, Any]]:
    now = time.time()
    return {(s.account, s.cluster): state_document(s, now) for s in await store.cluster_states()}


def dead_letters_by_cluster(counts: Mapping[str, int], keys: Iterable[Key]) -> dict[Key, int]:
    """Dead letters per cluster, from the subjects they were parked from
    (``cs.<direction>.<account>.<cluster>[.<partition>]``, tokens escaped injectively)."""
    by_tokens = {(subject_token(a), subject_token(c)): (a, c) for a, c in keys}
    found: dict[Key, int] = {}
    for subject, n in counts.items():
        parts = subject.split(".")
        key = by_tokens.get((parts[2], parts[3])) if len(parts) >= 4 else None
        if key is not None:
            found[key] = found.get(key, 0) + n
    return found


def _initial_sync(kinds: list[dict[str, Any]]) -> str:
    reported = [k["sync"] for k in kinds if k.get("sync") is not None]
    if not reported:
        return "unknown"
    return "done" if all(s["done"] for s in reported) else "running"


def cluster_status(
    key: Key,
    *,
    named: bool,
    counts: list[KindCount],
    dead_letters: int,
    state: Mapping[str, Any] | None,
    writes: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """One cluster's status document (the API's ``ClusterStatus``)."""
    state = state or {}
    progress: Mapping[str, Any] = state.get("progress") or {}
    held = {str(c.kind): c.count for c in counts}
    kinds = [
        {"kind": kind, "objects": held.get(kind, 0), "sync": progress.get(kind)}
        for kind in sorted(set(held) | set(progress))
    ]
    return {
        "account": key[0],
        "cluster": key[1],
        "namedByToken": named,
        "connected": bool(state.get("connected")),
        "replica": state.get("replica") or None,
        "connectedSince": state.get("connectedSince"),
        "lastMessage": state.get("lastMessage"),
        "lastReport": state.get("lastReport"),
        "agentVersion": state.get("agentVersion") or None,
        "protocol": state.get("protocol") or None,
        "objects": sum(held.values()),
        "kinds": kinds,
        "initialSync": _initial_sync(kinds),
        "deadLetters": dead_letters,
        "writes": {status.value: (writes or {}).get(status.value, 0) for status in WriteStatus},
    }


async def fleet_status(
    store: Store,
    tokens: TokenTable,
    states: Mapping[Key, Mapping[str, Any]],
    account: str | None = None,
    cluster: str | None = None,
) -> list[dict[str, Any]]:
    """Every cluster a token names, the data holds or an agent connected as, ordered by key."""
    counts = await store.count_kinds(account, cluster)
    named = named_clusters(tokens)
    keys = named | {(c.account, c.cluster) for c in counts} | set(states)
    keys = {
        k
        for k in keys
        if (account is None or k[0] == account) and (cluster is None or k[1] == cluster)
    }
    dead = dead_letters_by_cluster(await store.count_dead_letters(), keys)
    writes: dict[Key, dict[str, int]] = {}
    for write_account, write_cluster, status, n in await store.count_writes():
        writes.setdefault((write_account, write_cluster), {})[status] = n
    by_key: dict[Key, list[KindCount]] = {}
    for count in counts:
        by_key.setdefault((count.account, count.cluster), []).append(count)
    return [
        cluster_status(
            k,
            named=tokens.may_connect(*k),
            counts=by_key.get(k, []),
            dead_letters=dead.get(k, 0),
            state=states.get(k),
            writes=writes.get(k),
        )
        for k in sorted(keys)
    ]
