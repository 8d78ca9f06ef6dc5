"""``python -m benchmarks [--objects N]``: every benchmark, each beside its raw limit."""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys

from benchmarks import connections, memory, micro, sync, wire


def main() -> None:
    if sys.argv[1:2] == ["prod"]:  # the production topology: its own processes and options
        from benchmarks import prod

        prod.main(sys.argv[2:])
        return
    if sys.argv[1:2] == ["fleet"]:  # many active agents on one server: its own processes too
        from benchmarks import fleet

        fleet.main(sys.argv[2:])
        return
    if sys.argv[1:2] == ["counts"]:  # per-kind counts on a large objects table
        from benchmarks import counts

        counts.main(sys.argv[2:])
        return
    if sys.argv[1:2] == ["ingest"]:  # the ingester alone draining a backlog, processes apart
        from benchmarks import ingest

        ingest.main(sys.argv[2:])
        return
    if sys.argv[1:2] == ["store-apply"]:  # the writer's CPU in PostgresStore.apply alone
        from benchmarks import store_apply

        store_apply.main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--objects", type=int, default=5000, help="objects for the sync benchmark")
    args = parser.parse_args()
    gc.set_threshold(50_000, 20, 100)  # as the long-running processes do
    micro.run()
    asyncio.run(wire.run())
    asyncio.run(sync.run(args.objects))
    asyncio.run(connections.run())
    asyncio.run(memory.run())


main()
