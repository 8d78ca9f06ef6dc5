"""PostgresStore: the shared Store contract plus PostgreSQL-specific behaviour (migrations,
concurrency, connection errors). Runs against the session's throwaway server, one fresh database
per test."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import orjson
import pytest

from clustersync.adapters.store.base import BadObjectError, Delete, StoreError, UnparsedObject
from clustersync.adapters.store.postgres import (
    _GET_MANY,
    MIGRATIONS,
    PostgresStore,
    count_kinds_query,
    migrate,
    open_postgres,
)
from clustersync.protocol.checksum import checksum_of_json

try:
    from tests.servers import free_port
except ImportError:  # plain `pytest`: tests/ itself is on sys.path (see tests/conftest.py)
    from servers import free_port  # type: ignore[no-redef]




try:
    from tests.contracts import load_contract
except ImportError:  # plain `pytest`: tests/ itself is on sys.path
    from contracts import load_contract  # type: ignore[no-redef]

_contract = load_contract("store_contract", Path(__file__).with_name("contract.py"))
StoreContract = _contract.StoreContract
key, obj, same = _contract.key, _contract.obj, _contract.same


@pytest.fixture
async def store(pg_database_url: str) -> AsyncIterator[PostgresStore]:
    store = await open_postgres(pg_database_url)
    yield store
    await store.close()


class TestPostgresStore(StoreContract):  # type: ignore[misc,valid-type]  # loaded by path
    """The contract, with the module-level ``store`` fixture."""


async def test_migrate_is_idempotent_and_versioned(pg_database_url: str) -> None:
    versions = [v for v, _ in MIGRATIONS]
    assert await migrate(pg_database_url) == versions
    assert await migrate(pg_database_url) == []
    conn = await asyncpg.connect(pg_database_url)
    try:
        rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
    finally:
        await conn.close()
    assert [r["version"] for r in rows] == versions


async def test_concurrent_migrators_apply_once(pg_database_url: str) -> None:
    results = await asyncio.gather(*(migrate(pg_database_url) for _ in range(5)))
    applied = [v for r in results for v in r]
    assert sorted(applied) == sorted(v for v, _ in MIGRATIONS)


async def test_open_without_migrate_on_empty_database_fails_on_use(pg_database_url: str) -> None:
    store = await open_postgres(pg_database_url, migrate=False)
    try:
        with pytest.raises(StoreError, match="objects"):
            await store.list()
    finally:
        await store.close()


@pytest.mark.parametrize(
    "url",
    ["mysql://u@127.0.0.1/db", "postgresql://u@127.0.0.1:notaport/db", "postgresql://u@127.0.0.1/",
     "not a url"],
)
async def test_bad_url(url: str) -> None:
    with pytest.raises(StoreError) as info:
        await open_postgres(url)
    assert "\n" not in str(info.value)


async def test_unreachable_server_fails_fast() -> None:
    started = time.monotonic()
    with pytest.raises(StoreError, match="cannot connect") as info:
        await open_postgres(f"postgresql://postgres@127.0.0.1:{free_port()}/db")
    assert "\n" not in str(info.value)
    assert time.monotonic() - started < 10


async def test_missing_database(postgres_server: object, pg_database_url: str) -> None:
    missing = pg_database_url.rsplit("/", 1)[0] + "/no_such_database"
    with pytest.raises(StoreError, match="no_such_database"):
        await open_postgres(missing)


async def test_objects_are_jsonb_and_keep_their_checksum(store: PostgresStore) -> None:
    # jsonb reorders and respaces; kubescape's checksum ignores both, so it still verifies.
    body = b'{ "z":1,  "a" : "\\u00e9", "n":[1.50, 2e3], "m": {"y": null, "b": true} }'
    assert await store.apply([obj(key(), 1, body)]) == 1
    got = await store.get(key())
    assert got is not None
    assert orjson.loads(got.object) == orjson.loads(body)
    assert checksum_of_json(got.object) == checksum_of_json(body)


async def test_an_object_jsonb_refuses_raises_bad_object_error(store: PostgresStore) -> None:
    # Valid JSON that jsonb cannot hold: the ingester's own parse accepts it, so it ends parked.
    for write in (obj(key(), 1, b'{"a": "\\u0000"}'),
                  UnparsedObject(key(), "sum", b'{"a": "\\u0000"}', 1)):  # fmt: skip
        with pytest.raises(BadObjectError):
            await store.apply([write])
    assert await store.list() == []


async def test_invalid_json_is_a_store_error_and_rolls_back(store: PostgresStore) -> None:
    good, bad = obj(key(name="good"), 1), obj(key(name="bad"), 1, b"{not json")
    with pytest.raises(StoreError):
        await store.apply([good, bad])
    assert await store.list() == []  # one transaction: the good row did not land either
    assert await store.apply([good]) == 1  # and the connection is still usable


async def test_concurrent_writers_keep_the_highest_seq(store: PostgresStore) -> None:
    # Replicas applying overlapping backlogs at once: the guard lives in SQL, so whatever the
    # interleaving, every key ends at its highest seq.
    keys = [key(name=f"p{i}") for i in range(50)]

    async def writer(offset: int) -> None:
        for seq in range(1 + offset, 40, 4):
            await store.apply([obj(k, seq) for k in keys])

    await asyncio.gather(*(writer(o) for o in range(4)))
    rows = await store.list()
    assert [r.seq for r in rows] == [39] * len(keys)


async def test_tombstone_and_counts_within_one_batch(store: PostgresStore) -> None:
    k = key()
    # Delete first, then an older put and a newer put: sequentially 2 land (delete, seq 9).
    assert await store.apply([Delete(k, 8), obj(k, 7), obj(k, 9), obj(k, 9)]) == 2
    got = await store.get(k)
    assert got is not None and got.seq == 9


async def test_closed_store_raises_store_error(pg_database_url: str) -> None:
    store = await open_postgres(pg_database_url)
    await store.close()
    with pytest.raises(StoreError):
        await store.get(key())


@pytest.mark.parametrize(("account", "cluster"), [(None, None), ("a", None), ("a", "c1")])
async def test_count_kinds_can_be_answered_from_the_live_kinds_index(
    store: PostgresStore, pg_database_url: str, account: str | None, cluster: str | None
) -> None:
    # Counting must not have to read the objects' bodies: with sequential scans priced out, the
    # plan is an index-only scan of the partial index (its predicate and columns fit the query).
    await store.apply([obj(key("a", "c1", name=f"p{i}"), 1) for i in range(3)])
    conn = await asyncpg.connect(pg_database_url)
    try:
        await conn.execute("VACUUM ANALYZE objects")
        await conn.execute("SET enable_seqscan = off")
        query, args = count_kinds_query(account, cluster)
        plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {query}", *args)
    finally:
        await conn.close()
    text = str(plan)
    assert "Index Only Scan" in text and "objects_live_kinds" in text, text


async def test_batched_reads_are_planned_for_the_table_as_it_grew(store: PostgresStore) -> None:
    # A statement prepared while the table was small and run a few times may be given a generic
    # plan that scans the table; once it holds many rows, every batched read would scan it all.
    # The store's connections plan each execution anew, so the grown table is read by its key.
    await store.apply([obj(key("a", "c1", name=f"p{i}"), i + 1) for i in range(5)])
    keys = "ARRAY['a'], ARRAY['c1'], ARRAY[''], ARRAY['v1'], ARRAY['pods'], " \
        "ARRAY['default'], ARRAY['p1']"
    async with store._pool.acquire() as conn:
        await conn.execute("ANALYZE objects")
        await conn.execute(f"PREPARE read_many(text[], text[], text[], text[], text[], text[],"
                           f" text[]) AS {_GET_MANY}")
        try:
            for _ in range(8):  # past the point where PostgreSQL may switch to a generic plan
                await conn.execute(f"EXECUTE read_many({keys})")
            await conn.execute(
                "INSERT INTO objects (account, cluster, api_group, api_version, resource,"
                " namespace, name, object, seq) SELECT 'a', 'c1', '', 'v1', 'pods',"
                " 'default', 'q' || n, '{}', n FROM generate_series(1, 20000) AS n"
            )
            plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE read_many({keys})")
        finally:
            await conn.execute("DEALLOCATE read_many")
    text = str(plan)
    # Whichever index: it must find each object by its whole key, not scan a kind or the table.
    assert "Seq Scan" not in text and "Filter" not in text, text
    assert "Index Cond" in text and "name" in text.split("Index Cond")[1], text


async def _server_compresses_with_lz4(conn: asyncpg.Connection) -> bool:
    """Whether this PostgreSQL build offers lz4 (asked of the server, not of the store)."""
    values: list[str] = await conn.fetchval(
        "SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'"
    )
    return "lz4" in values


def _large_body(name: str) -> bytes:
    # Well over the 2 KB at which PostgreSQL compresses a row, and compressible.
    return orjson.dumps({"metadata": {"name": name}, "spec": {"args": ["--verbose"] * 800}})


async def test_migration_0007_compresses_objects_written_after_it_with_lz4(
    pg_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A database at 0006 holding an object, as an existing deployment has; then 0007 runs.
    monkeypatch.setattr(
        "clustersync.adapters.store.postgres.MIGRATIONS",
        [(v, s) for v, s in MIGRATIONS if v < "0007"],
    )
    store = await open_postgres(pg_database_url)
    try:
        assert await store.apply([obj(key(name="before"), 1, _large_body("before"))]) == 1
    finally:
        await store.close()
    monkeypatch.undo()
    assert await migrate(pg_database_url) == ["0007", "0008"]

    store = await open_postgres(pg_database_url)
    conn = await asyncpg.connect(pg_database_url)
    try:
        assert await store.apply([obj(key(name="after"), 2, _large_body("after"))]) == 1
        lz4 = await _server_compresses_with_lz4(conn)
        rows = await conn.fetch(
            "SELECT name, pg_column_compression(object) AS method FROM objects ORDER BY name"
        )
        # Stored before: left as it was (pglz, the default); stored after: lz4 where possible.
        assert {r["name"]: r["method"] for r in rows} == {
            "after": "lz4" if lz4 else "pglz",
            "before": "pglz",
        }
        for name in ("before", "after"):  # both still read back whole
            got = await store.get(key(name=name))
            assert got is not None and orjson.loads(got.object) == orjson.loads(_large_body(name))
    finally:
        await conn.close()
        await store.close()


async def test_staged_objects_are_compressed_with_lz4_where_the_server_has_it(
    store: PostgresStore,
) -> None:
    # The staging table holds each object of a batch until the INSERT reads it back: with the
    # server's default (pglz) every object would be compressed twice at pglz's cost.
    assert await store.apply([obj(key(), 1, _large_body("web"))]) == 1
    async with store._pool.acquire() as conn:
        lz4 = await _server_compresses_with_lz4(conn)
        method = await conn.fetchval(
            "SELECT attcompression::text FROM pg_attribute"
            " WHERE attrelid = 'pg_temp.clustersync_staged'::regclass AND attname = 'object'"
        )
    assert method == ("l" if lz4 else "")
