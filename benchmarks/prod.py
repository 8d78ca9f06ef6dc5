"""``python -m benchmarks prod --objects N``: the deployment topology, every part its own process.

sandbox API server -> agent -> server -> NATS JetStream (sync_interval: always) -> ingester ->
PostgreSQL (fsync, synchronous_commit on). Every figure is printed beside raw limits measured in
the same run, before the agent starts, so a busy machine shows in both columns.

Latency is measured from the PATCH to the sandbox to the moment a trigger on ``objects`` sees the
row change (``clock_timestamp()``, same machine clock as the driver's ``time.time()``).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import nats
import orjson
from tests.servers import free_port, start_postgres

from benchmarks.pods import pod
from benchmarks.prod_parts import (
    KubeTarget,
    Part,
    Parts,
    http_ok,
    parts,
    rss_kib,
    start_durable_nats,
    wait_for,
)
from benchmarks.sync import raw_websocket_rate
from clustersync.protocol.checksum import object_checksum
from clustersync.protocol.digest import fast_digest

KIB_PER_POD_BUDGET = 64  # sandbox + agent + ingester + server + store, measured at 20k pods
TOKEN = "bench-agent-token"
BATCH = 1000


def default_objects() -> int:
    """100,000 if the machine has the memory, else the largest multiple of 5,000 that fits."""
    available_kib = 0
    with open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                available_kib = int(line.split()[1])
    fits = int(available_kib * 0.6 / KIB_PER_POD_BUDGET)
    return max(5000, min(100_000, fits // 5000 * 5000))


def line(label: str, value: str, raw_label: str = "", raw: str = "") -> None:
    print(f"  {label:<44}{value:>14}   | {raw_label:<30}{raw:>12}", flush=True)


def per_s(n: float, seconds: float) -> str:
    return f"{n / seconds:,.0f}/s"


# ------------------------------------------------------------------ raw limits


def raw_cpu_limits(bodies: list[bytes], objs: list[dict[str, Any]]) -> None:
    start = time.perf_counter()
    for body in bodies:
        orjson.loads(body)
    line("", "", "raw orjson parse", per_s(len(bodies), time.perf_counter() - start))
    start = time.perf_counter()
    for body in bodies:
        hashlib.sha256(body).hexdigest()
    line("", "", "raw sha256 of the bytes", per_s(len(bodies), time.perf_counter() - start))
    sample = objs[: min(len(objs), 2000)]
    start = time.perf_counter()
    for obj in sample:
        object_checksum(obj)
    line("", "", "kubescape checksum", per_s(len(sample), time.perf_counter() - start))
    start = time.perf_counter()
    for obj in objs:
        fast_digest(obj)
    line("", "", "fast digest (clustersync.v2)", per_s(len(objs), time.perf_counter() - start))


async def raw_postgres_upsert(url: str, objs: list[dict[str, Any]], bodies: list[bytes]) -> float:
    """COPY 1,000-row batches into a staging table and upsert them, one transaction per batch."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE TABLE raw_objects (LIKE objects INCLUDING ALL)")
        columns = ["account", "cluster", "api_group", "api_version", "resource", "namespace",
                   "name", "uid", "resource_version", "checksum", "object", "seq"]
        rows = [
            ("raw", "raw", "", "v1", "pods", o["metadata"]["namespace"], o["metadata"]["name"],
             f"uid-{i}", "1", "x" * 64, body.decode(), i + 1)
            for i, (o, body) in enumerate(zip(objs, bodies, strict=True))
        ]
        names = ", ".join(columns)
        start = time.perf_counter()
        for at in range(0, len(rows), BATCH):
            async with conn.transaction():
                await conn.execute(
                    "CREATE TEMP TABLE raw_stage (LIKE raw_objects INCLUDING DEFAULTS)"
                    " ON COMMIT DROP"
                )
                await conn.copy_records_to_table(
                    "raw_stage", records=rows[at : at + BATCH], columns=columns
                )
                await conn.execute(
                    f"INSERT INTO raw_objects ({names}) SELECT {names} FROM raw_stage "
                    "ON CONFLICT (account, cluster, api_group, api_version, resource, namespace,"
                    " name) DO UPDATE SET object = EXCLUDED.object, seq = EXCLUDED.seq"
                )
        elapsed = time.perf_counter() - start
        await conn.execute("DROP TABLE raw_objects")
    finally:
        await conn.close()
    return len(rows) / elapsed


async def raw_nats(url: str, bodies: list[bytes]) -> tuple[float, float]:
    """JetStream publish (acknowledged, 256 in flight) and pull-consume rates of the bodies."""
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        await js.add_stream(name="RAWBENCH", subjects=["rawbench.>"])
        start = time.perf_counter()
        for at in range(0, len(bodies), 256):
            await asyncio.gather(
                *(js.publish(f"rawbench.{i % 16}", b) for i, b in enumerate(bodies[at : at + 256]))
            )
        published = len(bodies) / (time.perf_counter() - start)
        sub = await js.pull_subscribe("rawbench.>", durable="raw")
        start = time.perf_counter()
        got = 0
        while got < len(bodies):
            for msg in await sub.fetch(256, timeout=10):
                orjson.loads(msg.data)
                await msg.ack()
                got += 1
        consumed = got / (time.perf_counter() - start)
        await js.delete_stream("RAWBENCH")
    finally:
        await client.close()
    return published, consumed


# ------------------------------------------------------------------ the pipeline


@dataclass(frozen=True)
class Settings:
    rate: float  # changes per second in the latency run
    changes: int  # distinct pods changed, once each
    quiet: float  # the agent's coalesce.quiet
    max_wait: float  # the agent's coalesce.maxWait


def write_inputs(workdir: Path, objs: list[dict[str, Any]], ports: tuple[int, Path],
                 settings: Settings) -> tuple[Path, Path, Path]:
    server_port, kubeconfig = ports
    seed = workdir / "seed.json"
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}
    seed.write_bytes(orjson.dumps({"apiVersion": "v1", "kind": "List",
                                   "items": [namespace, *objs]}))
    tokens = workdir / "tokens.yaml"
    tokens.write_text(f'- {{token: "{TOKEN}", account: a, cluster: c}}\n')
    agent = workdir / "agent.yaml"
    agent.write_text(
        f"server: ws://127.0.0.1:{server_port}/\naccount: a\ncluster: c\n"
        f"accessKey: {TOKEN}\nkubeconfig: {kubeconfig}\n"
        f"coalesce: {{quiet: {settings.quiet}, maxWait: {settings.max_wait}}}\n"
        f"dataDir: {workdir / 'agent-data'}\n"  # checksums kept for the restart
        "resources:\n  - {group: '', version: v1, resource: pods, strategy: patch}\n"
    )
    return seed, tokens, agent


async def count_rows(conn: asyncpg.Connection) -> int:
    n: int = await conn.fetchval(
        "SELECT count(*) FROM objects WHERE resource = 'pods' AND NOT deleted"
    )
    return n


async def wait_rows(conn: asyncpg.Connection, n: int, agent: Part, timeout: float,
                    peak: dict[str, int]) -> float:
    """Seconds until ``n`` pod rows exist, sampling the agent's RSS meanwhile."""
    start = time.perf_counter()
    while await count_rows(conn) < n:
        agent.check()
        peak["agent"] = max(peak.get("agent", 0), rss_kib(agent.pid)[0])
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"{await count_rows(conn)} of {n} rows after {timeout:.0f}s")
        await asyncio.sleep(0.05)  # polling the database, not synchronising with it
    return time.perf_counter() - start


async def install_change_trigger(conn: asyncpg.Connection) -> None:
    await conn.execute("""
        CREATE TABLE bench_changes (name text NOT NULL, at double precision NOT NULL);
        CREATE FUNCTION bench_note() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.object -> 'metadata' -> 'labels' ? 'bench-change' THEN
                INSERT INTO bench_changes
                VALUES (NEW.name, extract(epoch FROM clock_timestamp()));
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER bench_note AFTER UPDATE ON objects
            FOR EACH ROW EXECUTE FUNCTION bench_note();
    """)


async def change_latency(conn: asyncpg.Connection, kube: KubeTarget, names: list[str],
                         rate: float) -> tuple[list[float], int]:
    """PATCH one label on each pod at ``rate``/s; seconds from each PATCH to its row change."""
    sent: dict[str, float] = {}
    headers = {"Authorization": f"Bearer {kube.token}",
               "Content-Type": "application/merge-patch+json"}
    connector = aiohttp.TCPConnector(ssl=kube.ssl, limit=64)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as http:

        async def patch(name: str) -> None:
            url = f"{kube.server}/api/v1/namespaces/bench/pods/{name}"
            body = orjson.dumps({"metadata": {"labels": {"bench-change": "1"}}})
            sent[name] = time.time()
            async with http.patch(url, data=body) as response:
                response.raise_for_status()

        start = time.perf_counter()
        tasks = []
        for i, name in enumerate(names):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing the load, not synchronising
            tasks.append(asyncio.create_task(patch(name)))
        await asyncio.gather(*tasks)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        seen = await conn.fetchval("SELECT count(DISTINCT name) FROM bench_changes")
        if seen >= len(names):
            break
        await asyncio.sleep(0.1)
    rows = await conn.fetch("SELECT name, min(at) AS at FROM bench_changes GROUP BY name")
    latencies = [row["at"] - sent[row["name"]] for row in rows if row["name"] in sent]
    return latencies, len(names) - len(latencies)


def agent_metric(port: int, name: str, labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    total = 0.0
    for row in text.splitlines():
        if row.startswith(name + "{") and labels in row:
            total += float(row.rsplit(" ", 1)[1])
    return total


def wire_bytes(port: int) -> float:
    return agent_metric(port, "clustersync_frame_bytes_total", 'component="agent"')


def settle_wire(port: int, quiet_for: float = 2.0, timeout: float = 60.0) -> float:
    """Agent bytes once they stop growing for ``quiet_for`` seconds (the exchange is over)."""
    deadline = time.monotonic() + timeout
    last, since = wire_bytes(port), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now_bytes = wire_bytes(port)
        if now_bytes != last:
            last, since = now_bytes, time.monotonic()
        elif time.monotonic() - since >= quiet_for:
            break
    return last


def start_agent(group: Parts, config: Path, health: int) -> Part:
    return group.clustersync("agent", "agent", "--config", str(config), "--health",
                             f"127.0.0.1:{health}")


async def run(objects: int, settings: Settings) -> None:
    print(f"production topology, {objects:,} pods (each its own process; PostgreSQL fsync and "
          "synchronous_commit on; JetStream sync_interval: always)", flush=True)
    objs = [pod(i) for i in range(objects)]
    bodies = [orjson.dumps(o) for o in objs]
    print(f"  pod size {statistics.mean(map(len, bodies)):,.0f} B on average", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="clustersync-prod-"))
    pg = start_postgres(durable=True)
    try:
        with parts(workdir) as group:
            await _run(group, pg.url, objs, bodies, settings)
    finally:
        pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)  # the seed and JetStream's files are GBs


async def _run(group: Parts, db: str, objs: list[dict[str, Any]], bodies: list[bytes],
               settings: Settings) -> None:
    rate = settings.rate
    n = len(objs)
    nats_part, bus = start_durable_nats(group)
    migrate = group.clustersync("migrate", "db", "migrate", "--db", db)
    wait_for(lambda: not migrate.alive(), "db migrate")
    if migrate.proc.returncode:
        migrate.check()
    kubeconfig = group.workdir / "kubeconfig"
    server_port, sandbox_port, agent_port = free_port(), free_port(), free_port()
    seed, tokens, agent_config = write_inputs(group.workdir, objs, (server_port, kubeconfig),
                                              settings)

    print("raw limits, same run", flush=True)
    raw_cpu_limits(bodies, objs)
    upserts = await raw_postgres_upsert(db, objs, bodies)
    line("", "", "raw PostgreSQL COPY+upsert, 1k", f"{upserts:,.0f}/s")
    published, consumed = await raw_nats(bus, bodies)
    line("", "", "raw JetStream publish (acked)", f"{published:,.0f}/s")
    line("", "", "raw JetStream pull+ack", f"{consumed:,.0f}/s")
    frame = orjson.dumps({"event": 1, "object": bodies[0].decode()})
    line("", "", "raw websocket frames", f"{await raw_websocket_rate(frame, 20000):,.0f}/s")

    sandbox = group.clustersync("sandbox", "sandbox", "--port", str(sandbox_port),
                                "--kubeconfig", str(kubeconfig), "--seed", str(seed))
    ingester = group.clustersync("ingester", "ingester", "--bus", bus, "--db", db)
    server = group.clustersync("server", "server", "--listen", f"127.0.0.1:{server_port}",
                               "--bus", bus, "--tokens", str(tokens))
    wait_for(lambda: (sandbox.check(), kubeconfig.exists())[1], "sandbox", timeout=600)
    wait_for(lambda: (server.check(), http_ok(f"http://127.0.0.1:{server_port}/healthz"))[1],
             "server")
    ingester.check()
    kube = KubeTarget.from_kubeconfig(kubeconfig)

    conn = await asyncpg.connect(db)
    try:
        print("pipeline", flush=True)
        peak: dict[str, int] = {}
        agent = start_agent(group, agent_config, agent_port)
        elapsed = await wait_rows(conn, n, agent, timeout=max(600.0, n / 50), peak=peak)
        line("initial sync (agent start -> rows)", per_s(n, elapsed), "seconds", f"{elapsed:.1f}")
        wait_for(lambda: http_ok(f"http://127.0.0.1:{agent_port}/readyz"), "agent ready")
        first_wire = settle_wire(agent_port)
        line("  agent bytes on the wire", f"{first_wire / 1e6:,.1f} MB", "per object",
             f"{first_wire / n:,.0f} B")

        await install_change_trigger(conn)
        names = [o["metadata"]["name"] for o in objs[: min(settings.changes, n)]]
        latencies, lost = await change_latency(conn, kube, names, rate)
        latencies.sort()
        if latencies:
            q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
            line(f"change latency at {rate:,.0f}/s, p50", f"{q[49] * 1000:,.0f} ms",
                 "changes", f"{len(names):,}")
            line("  p99", f"{q[98] * 1000:,.0f} ms", "lost", f"{lost:,}")
            line("  max", f"{latencies[-1] * 1000:,.0f} ms")

        print("memory (KiB per pod: current / peak RSS)", flush=True)
        line("  agent peak while syncing", f"{peak.get('agent', 0) / n:,.1f} KiB")
        for part in (sandbox, agent, server, ingester, nats_part):
            current, hwm = rss_kib(part.pid)
            line(f"  {part.name}", f"{current / n:,.1f} KiB", "RSS now / peak MiB",
                 f"{current / 1024:,.0f} / {hwm / 1024:,.0f}")

        agent.stop()
        restarted = start_agent(group, agent_config, agent_port)
        start = time.perf_counter()
        wait_for(lambda: (restarted.check(), http_ok(
            f"http://127.0.0.1:{agent_port}/readyz"))[1], "restarted agent ready")
        line("agent restart, unchanged cluster, to /readyz", f"{time.perf_counter() - start:.2f} s")
        again = settle_wire(agent_port)
        line("  bytes on the wire until idle", f"{again / 1e3:,.1f} kB", "rows", f"{n:,}")
        current, hwm = rss_kib(restarted.pid)
        line("  restarted agent RSS per pod", f"{current / n:,.1f} KiB", "peak MiB",
             f"{hwm / 1024:,.0f}")
    finally:
        await conn.close()


def main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks prod")
    parser.add_argument("--objects", type=int, default=0, help="pods (default: what fits)")
    parser.add_argument("--rate", type=float, default=500.0, help="changes per second")
    parser.add_argument("--changes", type=int, default=5000, help="distinct pods changed")
    parser.add_argument("--quiet", type=float, default=1.0, help="agent coalesce.quiet")
    parser.add_argument("--max-wait", type=float, default=5.0, help="agent coalesce.maxWait")
    args = parser.parse_args(argv)
    objects = args.objects or default_objects()
    if not args.objects:
        print(f"--objects not given: {objects:,} fit in this machine's memory", flush=True)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    # SIGTERM unwinds like Ctrl-C, so every part and PostgreSQL are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    settings = Settings(args.rate, args.changes, args.quiet, args.max_wait)
    asyncio.run(run(objects, settings))


if __name__ == "__main__":
    main(sys.argv[1:])
