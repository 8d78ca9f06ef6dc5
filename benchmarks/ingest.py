"""``python -m benchmarks ingest --objects N``: how fast one ingester process drains the bus.

NATS JetStream (``sync_interval: always``) -> a real ``clustersync ingester`` process ->
PostgreSQL (fsync and synchronous_commit on). The driver publishes agent messages as our server
publishes them, onto the same subjects:

* initial sync: batches of puts, formed as the agent forms them (``protocol.upbatch`` limits);
* changes: one object changed per message, a patch in a batch of one, as a lone change travels.

Checksums are the fast digest our agent and server negotiate (``cs1:``), or kubescape's hash with
``--kubescape-checksums`` (a kubescape agent's, and the only kind ingesters before the fast
digest verify: use it with ``--ingester-path`` for such a tree).

While it publishes, the ingester is stopped (SIGSTOP), so what is timed is the ingester draining
a backlog (rows counted in PostgreSQL), not the publisher. Beside it: raw PostgreSQL COPY+upsert
of the same rows and raw JetStream pull+ack, measured in the same run, and the ingester's CPU
time per object. ``--ingester-path DIR`` runs the ingester from another source tree (a ``src``
directory), to compare a change with what came before under the same conditions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from tests.servers import RunningPostgres, start_postgres

from benchmarks.pg_meter import PgMeter
from benchmarks.pods import pod
from benchmarks.prod import line, poll_pause, postmaster_pid, raw_nats, raw_postgres_upsert
from benchmarks.prod_parts import Part, Parts, migrate_database, parts, start_durable_nats
from clustersync.adapters.bus.nats import NatsBus, open_nats
from clustersync.model import Kind, ObjectRef
from clustersync.protocol.checksum import canonical_checksum
from clustersync.protocol.digest import fast_digest
from clustersync.protocol.envelope import Envelope, encode_envelope, partition_of, up_subject
from clustersync.protocol.messages import Batch, Message, PatchObject, PutObject
from clustersync.protocol.upbatch import BATCH_BYTES, BATCH_ITEMS, ITEM_OVERHEAD

PODS = Kind("", "v1", "pods")
ACCOUNT, CLUSTER = "a", "c"
IN_FLIGHT = 64  # concurrent publishes
PATCH = {"metadata": {"labels": {"bench-change": "1"}}}
RAW_NATS_MESSAGES = 5000  # one acked publish each: enough for a rate, not minutes of them


Digest = Callable[[Any], str]


def put_batches(objs: list[dict[str, Any]], digest: Digest) -> list[Batch]:
    """Puts grouped as the agent's outbox groups them: up to BATCH_ITEMS objects and about
    BATCH_BYTES of payload per batch."""
    batches: list[Batch] = []
    run: list[PutObject] = []
    size = 0
    for obj in objs:
        body = orjson.dumps(obj)
        meta = obj["metadata"]
        item = PutObject(ref=ObjectRef(PODS, meta["namespace"], meta["name"]),
                         checksum=digest(obj), object=body)
        if run and (len(run) >= BATCH_ITEMS or size + len(body) + ITEM_OVERHEAD > BATCH_BYTES):
            batches.append(Batch(kind=PODS, put_object=tuple(run)))
            run, size = [], 0
        run.append(item)
        size += len(body) + ITEM_OVERHEAD
    if run:
        batches.append(Batch(kind=PODS, put_object=tuple(run)))
    return batches


def patch_batches(objs: list[dict[str, Any]], digest: Digest) -> list[Batch]:
    """One label added to each object, each change a batch of one patch."""
    out = []
    for obj in objs:
        meta = obj["metadata"]
        labels = {**meta.get("labels", {}), **PATCH["metadata"]["labels"]}  # a merge patch
        changed = {**obj, "metadata": {**meta, "labels": labels}}
        item = PatchObject(ref=ObjectRef(PODS, meta["namespace"], meta["name"]),
                           checksum=digest(changed), patch=orjson.dumps(PATCH))
        out.append(Batch(kind=PODS, patch_object=(item,)))
    return out


async def publish_all(bus: NatsBus, messages: list[Message]) -> None:
    frames = [
        (up_subject(ACCOUNT, CLUSTER, partition_of(m)),
         encode_envelope(Envelope(ACCOUNT, CLUSTER, m, at=time.time())))
        for m in messages
    ]
    for at in range(0, len(frames), IN_FLIGHT):
        await asyncio.gather(*(bus.publish(s, d) for s, d in frames[at : at + IN_FLIGHT]))


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def profiled(ingester: Part, out: Path | None, seconds: float) -> Iterator[None]:
    """py-spy on the ingester while the block runs (raw format, 50 Hz), if asked for."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    proc = None
    if out is not None:
        proc = subprocess.Popen([spy, "record", "-r", "50", "-d", str(int(seconds) + 1), "-f",
                                 "raw", "-o", str(out), "-p", str(ingester.pid)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)  # py-spy writes what it has on SIGINT
            proc.wait(timeout=30)


async def drain(conn: asyncpg.Connection, bus: NatsBus, ingester: Part, messages: list[Message],
                *, count_sql: str, want: int, profile: Path | None,
                meter: PgMeter | None = None) -> tuple[float, float]:
    """Publish ``messages`` while the ingester is stopped, then let it go: (seconds until
    ``count_sql`` says ``want``, ingester CPU seconds meanwhile). ``meter`` starts when the
    ingester does."""
    os.kill(ingester.pid, signal.SIGSTOP)
    try:
        await publish_all(bus, messages)
        if meter is not None:
            await meter.start()
    finally:
        os.kill(ingester.pid, signal.SIGCONT)
    cpu = cpu_seconds(ingester.pid)
    limit = max(120.0, want / 20)
    start = time.perf_counter()
    with profiled(ingester, profile, seconds=60):
        while (n := await conn.fetchval(count_sql)) < want:
            ingester.check()
            if time.perf_counter() - start > limit:
                raise TimeoutError(f"{n} of {want} rows after {limit:.0f} s")
            # Polling the database, not synchronising with it: each count scans the table, on
            # the cores the ingester runs on, so rarely while far from the end.
            await asyncio.sleep(poll_pause(n, want, time.perf_counter() - start))
        elapsed = time.perf_counter() - start
    return elapsed, cpu_seconds(ingester.pid) - cpu


async def run(objects: int, changes: int, ingester_path: Path | None,
              profile: Path | None, kubescape: bool) -> None:
    digest: Digest = canonical_checksum if kubescape else fast_digest
    print(f"ingester drain, {objects:,} pods then {changes:,} changes (JetStream sync_interval: "
          "always; PostgreSQL fsync and synchronous_commit on; "
          f"{'kubescape checksums' if kubescape else 'fast digests'})", flush=True)
    objs = [pod(i) for i in range(objects)]
    bodies = [orjson.dumps(o) for o in objs]
    puts = put_batches(objs, digest)
    patches = patch_batches(objs[:changes], digest)
    workdir = Path(tempfile.mkdtemp(prefix="clustersync-ingest-"))
    pg = start_postgres(durable=True)
    try:
        with parts(workdir) as group:
            await _run(group, pg, objs, bodies, work=(puts, patches),
                       ingester_path=ingester_path, profile=profile)
    finally:
        pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def _run(group: Parts, pg: RunningPostgres, objs: list[dict[str, Any]],
               bodies: list[bytes], *, work: tuple[list[Batch], list[Batch]],
               ingester_path: Path | None, profile: Path | None) -> None:
    puts, patches = work
    db = pg.url
    _, url, _ = start_durable_nats(group)
    migrate_database(group, db)
    meter = PgMeter(postmaster_pid(pg), db)

    print("raw limits, same run", flush=True)
    await meter.start()
    upserts = await raw_postgres_upsert(db, [o["metadata"]["name"] for o in objs], bodies)
    line("", "", "raw PostgreSQL COPY+upsert, 1k", f"{upserts:,.0f}/s")
    await meter.report(len(objs), "row")
    _, _, consumed = await raw_nats(url, bodies[:RAW_NATS_MESSAGES])
    line("", "", "raw JetStream pull+ack", f"{consumed:,.0f}/s")

    ingester = start_ingester(group, url, db, ingester_path)
    bus = await open_nats(url)
    conn = await asyncpg.connect(db)
    meter.driver = frozenset({conn.get_server_pid()})
    try:
        # Warm up: the ingester's durables exist and it has handled a message.
        await publish_all(bus, put_batches([pod(0, namespace="warm-up")], canonical_checksum))
        wait_rows = "SELECT count(*) FROM objects WHERE namespace = 'warm-up'"
        async with asyncio.timeout(120):
            while await conn.fetchval(wait_rows) < 1:
                ingester.check()
                await asyncio.sleep(0.05)

        n = len(objs)
        print(f"initial sync: {len(puts):,} batches of puts ({n / len(puts):,.0f} per batch)",
              flush=True)
        count_puts = "SELECT count(*) FROM objects WHERE namespace = 'bench'"
        seconds, cpu = await drain(conn, bus, ingester, list(puts), count_sql=count_puts, want=n,
                                   profile=profile and profile.with_suffix(".sync.txt"),
                                   meter=meter)
        line("  ingester drain", f"{n / seconds:,.0f}/s", "raw COPY+upsert", f"{upserts:,.0f}/s")
        line("  ingester CPU per object", f"{cpu / n * 1e6:,.0f} us", "CPU busy",
             f"{cpu / seconds:.0%}")
        await meter.report(n)

        if patches:
            since = await conn.fetchval("SELECT max(seq) FROM objects")
            count_changed = f"SELECT count(*) FROM objects WHERE seq > {int(since)}"
            print(f"changes: {len(patches):,} messages, one patch each", flush=True)
            seconds, cpu = await drain(conn, bus, ingester, list(patches),
                                       count_sql=count_changed, want=len(patches),
                                       profile=profile and profile.with_suffix(".chg.txt"),
                                       meter=meter)
            line("  ingester drain", f"{len(patches) / seconds:,.0f}/s", "raw JetStream pull+ack",
                 f"{consumed:,.0f}/s")
            line("  ingester CPU per change", f"{cpu / len(patches) * 1e6:,.0f} us", "CPU busy",
                 f"{cpu / seconds:.0%}")
            await meter.report(len(patches), "change")
            dead = await conn.fetchval("SELECT count(*) FROM dead_letters")
            line("  dead letters", f"{dead:,}")
    finally:
        await conn.close()
        await bus.close()


def start_ingester(group: Parts, url: str, db: str, path: Path | None) -> Part:
    saved = os.environ.get("PYTHONPATH")
    if path is not None:  # the other tree's package comes before the installed one
        os.environ["PYTHONPATH"] = str(path)
    try:
        return group.clustersync("ingester", "ingester", "--bus", url, "--db", db)
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks ingest")
    parser.add_argument("--objects", type=int, default=20_000, help="pods in the initial sync")
    parser.add_argument("--changes", type=int, default=5000, help="changes, one per message")
    parser.add_argument("--ingester-path", type=Path, default=None,
                        help="run the ingester from this source directory (PYTHONPATH)")
    parser.add_argument("--kubescape-checksums", action="store_true",
                        help="kubescape's hash instead of the fast digest (as older ingesters)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="py-spy raw profiles of the ingester: PATH.sync.txt, PATH.chg.txt")
    args = parser.parse_args(argv)
    if args.changes > args.objects:
        parser.error("--changes may not exceed --objects (each change is of a distinct pod)")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    asyncio.run(run(args.objects, args.changes, args.ingester_path, args.profile,
                    args.kubescape_checksums))


if __name__ == "__main__":
    main(sys.argv[1:])
