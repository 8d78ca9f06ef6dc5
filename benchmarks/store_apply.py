"""``python -m benchmarks store-apply --objects N``: the writer's CPU in ``PostgresStore.apply``.

What the ingester's own process spends per row to hand a batch to PostgreSQL (building the rows,
COPY into the staging table, the upsert, the commit; PostgreSQL's work is in its own processes
and not counted): process time of this process over ``--rounds`` rounds of N pods (5 KB each),
written in batches of ``--batch`` rows, each round a new version of every pod. PostgreSQL runs
with fsync and synchronous_commit on. Beside it, in the same run: joining the same objects' bytes
(the copy that any way of sending them costs) and parsing them with orjson (what a writer that
reads uid and resourceVersion itself would add). Run it with ``PYTHONPATH=<tree>/src`` to
measure another tree's store the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import orjson
from tests.servers import start_postgres

from benchmarks.pods import pod
from benchmarks.prod import line
from clustersync.adapters.store import ObjectKey, StoredObject
from clustersync.adapters.store.postgres import open_postgres
from clustersync.model import Kind, ObjectRef

PODS = Kind("", "v1", "pods")


def per_row_us(seconds: float, rows: int) -> str:
    return f"{seconds / rows * 1e6:,.1f} us"


async def run(objects: int, rounds: int, batch: int) -> None:
    bodies = [orjson.dumps(pod(i)) for i in range(objects)]
    size = sum(map(len, bodies)) / objects
    print(f"PostgresStore.apply, {objects:,} pods ({size:,.0f} B) x {rounds} rounds, {batch:,} "
          "rows per batch (PostgreSQL fsync and synchronous_commit on)", flush=True)
    started = time.process_time()
    for _ in range(rounds):
        for at in range(0, objects, batch):
            b"".join(bodies[at : at + batch])
    joined = time.process_time() - started
    started = time.process_time()
    for _ in range(rounds):
        for body in bodies:
            orjson.loads(body)
    parsed = time.process_time() - started
    rows = objects * rounds
    pg = start_postgres(durable=True)
    try:
        store = await open_postgres(pg.url)
        try:
            seq = 0
            spent = 0.0
            for _ in range(rounds):
                writes = []
                for i, body in enumerate(bodies):
                    seq += 1
                    key = ObjectKey("a", "c", ObjectRef(PODS, "bench", f"pod-{i}"))
                    writes.append(StoredObject(key, f"uid-{i}", str(seq), "cs1:x", body, seq))
                started = time.process_time()
                for at in range(0, objects, batch):
                    await store.apply(writes[at : at + batch])
                spent += time.process_time() - started
        finally:
            await store.close()
    finally:
        pg.stop()
    line("  writer CPU per row", per_row_us(spent, rows), "raw join of the bytes",
         per_row_us(joined, rows))
    line("", "", "raw orjson parse", per_row_us(parsed, rows))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks store-apply")
    parser.add_argument("--objects", type=int, default=20_000, help="pods per round")
    parser.add_argument("--rounds", type=int, default=3, help="versions of every pod written")
    parser.add_argument("--batch", type=int, default=1000, help="rows per store.apply")
    args = parser.parse_args(argv)
    asyncio.run(run(args.objects, args.rounds, args.batch))


if __name__ == "__main__":
    main(sys.argv[1:])
