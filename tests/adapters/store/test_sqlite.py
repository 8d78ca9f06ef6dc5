from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clustersync.adapters.store.base import Delete, StoreError
from clustersync.adapters.store.sqlite import (
    MIGRATIONS,
    SqliteStore,
    count_kinds_query,
    open_sqlite,
)

try:
    from tests.contracts import load_contract
except ImportError:  # plain `pytest`: tests/ itself is on sys.path
    from contracts import load_contract  # type: ignore[no-redef]

_contract = load_contract("store_contract", Path(__file__).with_name("contract.py"))
StoreContract = _contract.StoreContract
key, obj, same = _contract.key, _contract.obj, _contract.same


class TestSqliteStore(StoreContract):  # type: ignore[misc,valid-type]  # loaded by path
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[SqliteStore]:
        store = await SqliteStore.open(str(tmp_path / "store.db"))
        yield store
        await store.close()


def _inspect(path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize(
    "url",
    [
        "",
        "postgres://localhost/db",
        "sqlite:",
        "sqlite://",
        "sqlite:///",
        "sqlite://host/db.sqlite",
        "sqlite:///dir/",
        "sqlite:///db.sqlite?mode=ro",
    ],
)
async def test_bad_url(url: str) -> None:
    with pytest.raises(StoreError) as info:
        await open_sqlite(url)
    assert "\n" not in str(info.value)


async def test_unopenable_path_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        await SqliteStore.open(str(tmp_path / "missing-dir" / "x.db"))


async def test_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absolute = await open_sqlite(f"sqlite:///{tmp_path}/abs.db")  # four slashes: absolute
    await absolute.close()
    assert (tmp_path / "abs.db").exists()
    monkeypatch.chdir(tmp_path)
    relative = await open_sqlite("sqlite:///sub.db")
    await relative.close()
    assert (tmp_path / "sub.db").exists()
    memory = await open_sqlite("sqlite://:memory:")
    assert await memory.apply([obj(key(), 1)]) == 1
    assert same(await memory.get(key()), obj(key(), 1))
    await memory.close()


async def test_reopen_keeps_data_and_migrations_are_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await SqliteStore.open(str(path))
    await store.apply([obj(key(), 3), Delete(key(name="gone"), 4)])
    parked = await store.park("cs.up.a.b", b"x", "why")
    await store.close()
    for _ in range(2):
        store = await SqliteStore.open(str(path))
        assert same(await store.get(key()), obj(key(), 3))
        assert await store.apply([obj(key(name="gone"), 2)]) == 0  # tombstone survived
        dead = await store.dead_letter(parked)
        assert dead is not None and dead.reason == "why"
        await store.close()
    assert _inspect(path, "SELECT version FROM schema_version") == [(len(MIGRATIONS),)]
    assert _inspect(path, "PRAGMA journal_mode") == [("wal",)]


async def test_closed_store_raises(tmp_path: Path) -> None:
    store = await SqliteStore.open(str(tmp_path / "s.db"))
    await store.close()
    await store.close()  # twice is fine
    with pytest.raises(StoreError):
        await store.get(key())


async def test_concurrent_callers_share_one_writer(tmp_path: Path) -> None:
    store = await SqliteStore.open(str(tmp_path / "s.db"))
    try:
        results = await asyncio.gather(
            *(store.apply([obj(key(name=f"p{i}"), i + 1)]) for i in range(50)),
            *(store.list() for _ in range(10)),
        )
        assert results[:50] == [1] * 50
        assert len(await store.list()) == 50
    finally:
        await store.close()


async def test_failed_batch_rolls_back(tmp_path: Path) -> None:
    store = await SqliteStore.open(str(tmp_path / "s.db"))
    try:
        bad = obj(key(name="bad"), 2)
        object.__setattr__(bad, "uid", None)  # violates NOT NULL mid-batch
        with pytest.raises(StoreError):
            await store.apply([obj(key(name="good"), 1), bad])
        assert await store.list() == []
        assert await store.apply([obj(key(name="good"), 1)]) == 1  # the store still works
    finally:
        await store.close()


@pytest.mark.parametrize(("account", "cluster"), [(None, None), ("a", None), ("a", "c1")])
async def test_count_kinds_reads_the_covering_index_not_the_table(
    tmp_path: Path, account: str | None, cluster: str | None
) -> None:
    # Rows carry whole objects; counting must not read them.
    path = tmp_path / "store.db"
    store = await SqliteStore.open(str(path))
    try:
        await store.apply([obj(key("a", "c1", name=f"p{i}"), 1) for i in range(3)])
    finally:
        await store.close()
    sql, params = count_kinds_query(account, cluster)
    conn = sqlite3.connect(path)
    try:
        plan = " | ".join(str(row[-1]) for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    finally:
        conn.close()
    assert "COVERING INDEX objects_live_kinds" in plan, plan
