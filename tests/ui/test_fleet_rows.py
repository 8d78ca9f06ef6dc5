"""The fleet page's rows: connection state from this process's sockets or from what replicas
shared through the store, and progress bars only while a kind's initial sync runs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from clustersync.adapters.store import ObjectKey, StoredObject
from clustersync.adapters.store.sqlite import SqliteStore, open_sqlite
from clustersync.model import Kind, ObjectRef
from clustersync.model.identity import Identity, TokenTable
from clustersync.runtime.ui.fleet import LinkFacts, fleet

CONFIGMAPS = Kind("", "v1", "configmaps")
TOKENS = TokenTable({
    "a": Identity("acme", "named"),
    "b": Identity("acme", "elsewhere"),
    "admin": Identity(admin=True),
})


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = await open_sqlite(f"sqlite:///{tmp_path}/fleet.db")
    rows = [
        StoredObject(ObjectKey("acme", "named", ObjectRef(CONFIGMAPS, "ns", f"cm-{i}")),
                     f"uid-{i}", str(i), "c", b"{}", i + 1)
        for i in range(3)
    ]
    await store.apply(rows)
    try:
        yield store
    finally:
        await store.close()


def states_of(value: Mapping[tuple[str, str], Mapping[str, Any]]) -> Any:
    async def read() -> Mapping[tuple[str, str], Mapping[str, Any]]:
        return value

    return read


async def test_without_sockets_or_shared_state_the_state_is_unknown(store: SqliteStore) -> None:
    rows = await fleet(store, TOKENS, None, states_of({}))
    assert [(r.cluster, r.state, r.objects) for r in rows] == [
        ("elsewhere", "unknown", 0), ("named", "unknown", 3)]


async def test_shared_state_tells_an_api_replica_who_is_connected(store: SqliteStore) -> None:
    shared = {
        ("acme", "named"): {"connected": True, "replica": "r1", "agentVersion": "v9",
                            "progress": {str(CONFIGMAPS): {"listed": 10, "done": False}}},
        ("acme", "elsewhere"): {"connected": False},
    }
    rows = {r.cluster: r for r in await fleet(store, TOKENS, None, states_of(shared))}
    assert (rows["named"].state, rows["named"].replica) == ("connected", "r1")
    assert rows["elsewhere"].state == "disconnected"
    bars = rows["named"].as_json()["progress"]
    assert bars == {str(CONFIGMAPS): {"listed": 10, "stored": 3}}


async def test_a_finished_sync_shows_no_bar(store: SqliteStore) -> None:
    shared = {("acme", "named"): {
        "connected": True, "progress": {str(CONFIGMAPS): {"listed": 3, "done": True}}}}
    rows = {r.cluster: r for r in await fleet(store, TOKENS, None, states_of(shared))}
    assert rows["named"].as_json()["progress"] == {}


async def test_this_process_sockets_decide_and_add_unnamed_clusters(store: SqliteStore) -> None:
    facts = LinkFacts("2026-01-01T00:00:00Z", 1.0e9, "v1", "clustersync.v2")
    live = {("acme", "via-account-key"): facts}
    rows = {r.cluster: r for r in await fleet(store, TOKENS, lambda: live, states_of({}))}
    assert rows["via-account-key"].state == "connected"
    assert rows["via-account-key"].protocol == "clustersync.v2"
    assert rows["named"].state == "disconnected"  # this process holds the sockets: it knows
