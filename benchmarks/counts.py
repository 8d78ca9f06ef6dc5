"""``python -m benchmarks counts [--rows N]``: per-kind object counts on a large objects table.

``count_kinds`` feeds every status request, every dashboard refresh and every per-cluster metrics
export, so it must not cost a scan of the objects' bodies. This fills PostgreSQL (fsync and
synchronous commit on, its own server) and SQLite with N rows spread over a few clusters and
kinds (each row a ~5 KB object, about one in twenty a tombstone, as after deletes), then times
``count_kinds()``, ``count_kinds`` for one cluster (the cluster page) and ``fleet_status`` (the
status API and the dashboard's fleet page), beside a raw ``SELECT count(*)`` of the table.

Rows are written with plain SQL, not through the store: the write path is not what is measured
and going through it would make a 100k fill take minutes on a loaded machine.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
from tests.servers import start_postgres

from clustersync.adapters.store.base import Store
from clustersync.adapters.store.postgres import open_postgres
from clustersync.adapters.store.sqlite import open_sqlite
from clustersync.model.identity import TokenTable
from clustersync.runtime.status import fleet_status

CLUSTERS = ("prod-eu", "prod-us", "staging", "dev")
KINDS = (
    ("", "v1", "pods"),
    ("", "v1", "configmaps"),
    ("", "v1", "services"),
    ("apps", "v1", "deployments"),
    ("apps", "v1", "replicasets"),
    ("batch", "v1", "jobs"),
)
REPEATS = 7
# About 5 KB of JSON per object, as a realistic pod; md5 text keeps TOAST from shrinking it away.
_PG_FILL = """
    INSERT INTO objects (account, cluster, api_group, api_version, resource, namespace, name,
                         uid, resource_version, checksum, object, seq, deleted)
    SELECT 'acme', c.cluster, k.api_group, k.api_version, k.resource,
           'ns-' || (i % 50), 'obj-' || i, md5(i::text), i::text, md5(i::text),
           CASE WHEN i % 20 = 0 THEN NULL ELSE jsonb_build_object(
               'metadata', jsonb_build_object('name', 'obj-' || i, 'uid', md5(i::text)),
               'spec', (SELECT string_agg(md5((i * 100 + j)::text), '')
                        FROM generate_series(1, 150) j))
           END,
           i, i % 20 = 0
    FROM generate_series($1::int, $2::int) AS i,
         LATERAL (SELECT (ARRAY[{clusters}])[1 + i % {nclusters}] AS cluster) c,
         LATERAL (SELECT g AS api_group, v AS api_version, r AS resource
                  FROM (VALUES {kinds}) AS t(n, g, v, r) WHERE n = (i / 7) % {nkinds}) k
"""


def _pg_fill_sql() -> str:
    clusters = ", ".join(f"'{c}'" for c in CLUSTERS)
    kinds = ", ".join(f"({n}, '{g}', '{v}', '{r}')" for n, (g, v, r) in enumerate(KINDS))
    return _PG_FILL.format(
        clusters=clusters, nclusters=len(CLUSTERS), kinds=kinds, nkinds=len(KINDS)
    )


def _sqlite_rows(n: int) -> list[tuple[Any, ...]]:
    body = ("x" * 5000).encode()
    rows = []
    for i in range(1, n + 1):
        group, version, resource = KINDS[(i // 7) % len(KINDS)]
        deleted = i % 20 == 0
        rows.append((
            "acme", CLUSTERS[i % len(CLUSTERS)], group, version, resource, f"ns-{i % 50}",
            f"obj-{i}", str(i), str(i), str(i), b"" if deleted else body, i, int(deleted), 0.0,
        ))
    return rows


async def _timed(call: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    """Median and worst of REPEATS calls, in milliseconds (the first warms the caches)."""
    await call()
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), max(times)


async def _report(name: str, store: Store, raw: Callable[[], Awaitable[object]]) -> None:
    queries: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("raw SELECT count(*) FROM objects", raw),
        ("count_kinds() (all clusters)", store.count_kinds),
        ("count_kinds(account, cluster)", lambda: store.count_kinds("acme", CLUSTERS[0])),
        ("fleet_status (status API, fleet page)", lambda: fleet_status(store, TokenTable(), {})),
    ]
    for label, call in queries:
        median, worst = await _timed(call)
        print(f"  {name:10} {label:42} median {median:8.1f} ms   max {worst:8.1f} ms")


async def run_postgres(rows: int) -> None:
    server = start_postgres(durable=True)  # its own private directory, removed on stop
    try:
        store = await open_postgres(server.url)
        conn = await asyncpg.connect(server.url)
        try:
            started = time.perf_counter()
            fill = _pg_fill_sql()
            for low in range(1, rows + 1, 10_000):
                await conn.execute(fill, low, min(low + 9_999, rows))
            await conn.execute("ANALYZE objects")
            print(f"PostgreSQL (fsync on): {rows} rows filled in "
                  f"{time.perf_counter() - started:.1f} s")

            async def raw() -> object:
                return await conn.fetchval("SELECT count(*) FROM objects")

            # Just written (as right after an initial sync): the visibility map is not set yet,
            # so an index-only scan still visits the heap.
            print("  just written, before any VACUUM:")
            await _report("postgres", store, raw)
            # As autovacuum leaves it once writes calm down.
            await conn.execute("VACUUM ANALYZE objects")
            print("  after VACUUM:")
            await _report("postgres", store, raw)
        finally:
            await conn.close()
            await store.close()
    finally:
        server.stop()


async def run_sqlite(rows: int) -> None:
    with tempfile.TemporaryDirectory(prefix="cs-counts-") as tmp:
        path = Path(tmp) / "counts.db"
        store = await open_sqlite(f"sqlite:///{path}")
        try:
            direct = sqlite3.connect(path)
            started = time.perf_counter()
            with direct:
                direct.executemany(
                    "INSERT INTO objects (account, cluster, api_group, api_version, resource,"
                    " namespace, name, uid, resource_version, checksum, object, seq, deleted,"
                    " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    _sqlite_rows(rows),
                )
            direct.execute("ANALYZE")
            print(f"SQLite: {rows} rows filled in {time.perf_counter() - started:.1f} s")

            async def raw() -> object:
                return direct.execute("SELECT count(*) FROM objects").fetchone()

            await _report("sqlite", store, raw)
            direct.close()
        finally:
            await store.close()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks counts")
    parser.add_argument("--rows", type=int, default=100_000, help="object rows to fill")
    args = parser.parse_args(argv)
    asyncio.run(run_postgres(args.rows))
    asyncio.run(run_sqlite(args.rows))
