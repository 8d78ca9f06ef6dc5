"""``python -m benchmarks prod --objects N``: the deployment topology, every part its own process.

sandbox API server -> agent -> server -> NATS JetStream (sync_interval: always) -> ingester ->
PostgreSQL (fsync, synchronous_commit on). Every figure is printed beside raw limits measured in
the same run, before the agent starts, so a busy machine shows in both columns.

Latency is measured from the moment the driver sends the PATCH to the sandbox to the moment a
trigger on ``objects`` sees the row change (``clock_timestamp()``, the same machine clock as the
driver's ``time.time()``); the PATCH round trip is printed beside it, so time spent queued in
the sandbox shows. The driver holds each pod as its encoded bytes only (a parsed 5 KB pod takes
several times that), so at 100k pods it does not need more memory than the parts it measures.
"""

from __future__ import annotations

import asyncio
import contextlib
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

import aiohttp
import asyncpg
import nats
import orjson
from tests.servers import RunningPostgres, free_port, start_postgres

from benchmarks.pg_meter import PgMeter
from benchmarks.pods import pod
from benchmarks.prod_parts import (
    KubeTarget,
    Part,
    Parts,
    bus_backlog,
    cpu_seconds,
    http_ok,
    migrate_database,
    parts,
    process_tree,
    pss_kib,
    rss_kib,
    start_durable_nats,
    wait_for,
)
from benchmarks.sync import raw_websocket_rate
from clustersync.protocol.checksum import object_checksum
from clustersync.protocol.digest import fast_digest
from clustersync.protocol.upbatch import BATCH_BYTES, BATCH_ITEMS, ITEM_OVERHEAD

KIB_PER_POD_BUDGET = 60  # every peak RSS per pod together (the "budget" line): 56-59 at 20k
TOKEN = "bench-agent-token"
BATCH = 1000
PARTITIONS = 16  # bus subjects per cluster, as the server publishes them
RAW_SAMPLE = 20_000
STALL = 30.0  # seconds without a new changed row before the rest count as lost


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


def raw_cpu_limits(bodies: list[bytes]) -> None:
    start = time.perf_counter()
    for body in bodies:
        orjson.loads(body)
    line("", "", "raw orjson parse", per_s(len(bodies), time.perf_counter() - start))
    start = time.perf_counter()
    for body in bodies:
        hashlib.sha256(body).hexdigest()
    line("", "", "raw sha256 of the bytes", per_s(len(bodies), time.perf_counter() - start))
    sample = [orjson.loads(b) for b in bodies[: min(len(bodies), 2000)]]
    start = time.perf_counter()
    for obj in sample:
        object_checksum(obj)
    line("", "", "kubescape checksum", per_s(len(sample), time.perf_counter() - start))
    start = time.perf_counter()
    for obj in sample:
        fast_digest(obj)
    line("", "", "fast digest (clustersync.v2)", per_s(len(sample), time.perf_counter() - start))


async def raw_postgres_upsert(url: str, names: list[str], bodies: list[bytes]) -> float:
    """COPY 1,000-row batches into a staging table and upsert them, one transaction per batch."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE TABLE raw_objects (LIKE objects INCLUDING ALL)")
        columns = ["account", "cluster", "api_group", "api_version", "resource", "namespace",
                   "name", "uid", "resource_version", "checksum", "object", "seq"]
        names_sql = ", ".join(columns)
        start = time.perf_counter()
        for at in range(0, len(bodies), BATCH):
            rows = [  # built per batch: 100k decoded bodies at once would be GBs
                ("raw", "raw", "", "v1", "pods", "bench", names[i], f"uid-{i}", "1", "x" * 64,
                 bodies[i].decode(), i + 1)
                for i in range(at, min(at + BATCH, len(bodies)))
            ]
            async with conn.transaction():
                await conn.execute(
                    "CREATE TEMP TABLE raw_stage"
                    " (LIKE raw_objects INCLUDING DEFAULTS INCLUDING COMPRESSION)"
                    " ON COMMIT DROP"
                )
                await conn.copy_records_to_table("raw_stage", records=rows, columns=columns)
                await conn.execute(
                    f"INSERT INTO raw_objects ({names_sql}) SELECT {names_sql} FROM raw_stage "
                    "ON CONFLICT (account, cluster, api_group, api_version, resource, namespace,"
                    " name) DO UPDATE SET object = EXCLUDED.object, seq = EXCLUDED.seq"
                )
        elapsed = time.perf_counter() - start
        await conn.execute("DROP TABLE raw_objects")
    finally:
        await conn.close()
    return len(bodies) / elapsed


def pipeline_batches(bodies: list[bytes]) -> list[bytes]:
    """The bodies grouped as the agent's batches reach the bus: up to ``BATCH_ITEMS`` objects
    or about ``BATCH_BYTES`` of payload each, every object a JSON string inside the message."""
    batches: list[bytes] = []
    items: list[str] = []
    size = 0
    for body in bodies:
        items.append(body.decode())
        size += len(body) + ITEM_OVERHEAD
        if len(items) >= BATCH_ITEMS or size >= BATCH_BYTES:
            batches.append(orjson.dumps(items))
            items, size = [], 0
    if items:
        batches.append(orjson.dumps(items))
    return batches


async def raw_nats(url: str, bodies: list[bytes]) -> tuple[float, float, float]:
    """Objects per second through JetStream: published one per message (acknowledged, 256 in
    flight), published in the pipeline's batches (acknowledged, one at a time, as the server
    publishes one agent's messages), and pull-consumed one per message."""
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        await js.add_stream(name="RAWBENCH", subjects=["rawbench.>"])
        start = time.perf_counter()
        for at in range(0, len(bodies), 256):
            await asyncio.gather(
                *(js.publish(f"rawbench.{i % PARTITIONS}", b)
                  for i, b in enumerate(bodies[at : at + 256]))
            )
        unbatched = len(bodies) / (time.perf_counter() - start)
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

        await js.add_stream(name="RAWBATCH", subjects=["rawbatch.>"])
        batches = pipeline_batches(bodies)
        start = time.perf_counter()
        for i, batch in enumerate(batches):
            await js.publish(f"rawbatch.{i % PARTITIONS}", batch)
        batched = len(bodies) / (time.perf_counter() - start)
        await js.delete_stream("RAWBATCH")
    finally:
        await client.close()
    return unbatched, batched, consumed


# ------------------------------------------------------------------ the pipeline


@dataclass(frozen=True)
class Settings:
    rate: float  # changes per second in the latency run
    changes: int  # distinct pods changed, once each
    quiet: float  # the agent's coalesce.quiet
    max_wait: float  # the agent's coalesce.maxWait
    second_rate: float  # a second change phase at this rate (0: none), same pods changed again
    kubescape_checksums: bool = False  # the server refuses fast digests (the A/B baseline)


def write_inputs(workdir: Path, bodies: list[bytes], ports: tuple[int, Path],
                 settings: Settings) -> tuple[Path, Path, Path]:
    seed = workdir / "seed.json"
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}
    with seed.open("wb") as out:  # a JSON array: the sandbox creates each element as it reads
        out.write(b"[" + orjson.dumps(namespace))
        for body in bodies:
            out.write(b",")
            out.write(body)
        out.write(b"]")
    tokens = workdir / "tokens.yaml"
    tokens.write_text(f'- {{token: "{TOKEN}", account: a, cluster: c}}\n'
                      f'- {{token: "{TOKEN}-split", account: a, cluster: {SPLIT_CLUSTER}}}\n')
    return seed, tokens, agent_config(workdir, ports, settings, "c")


SPLIT_CLUSTER = "c-split"  # the same pods synced again as another cluster, in two halves


def agent_config(workdir: Path, ports: tuple[int, Path], settings: Settings,
                 cluster: str) -> Path:
    server_port, kubeconfig = ports
    token = TOKEN if cluster == "c" else f"{TOKEN}-split"
    agent = workdir / f"agent-{cluster}.yaml"
    agent.write_text(
        f"server: ws://127.0.0.1:{server_port}/\naccount: a\ncluster: {cluster}\n"
        f"accessKey: {token}\nkubeconfig: {kubeconfig}\n"
        f"coalesce: {{quiet: {settings.quiet}, maxWait: {settings.max_wait}}}\n"
        f"dataDir: {workdir / f'agent-data-{cluster}'}\n"  # checksums kept for the restart
        "resources:\n  - {group: '', version: v1, resource: pods, strategy: patch}\n"
    )
    return agent


async def count_rows(conn: asyncpg.Connection, cluster: str = "c") -> int:
    n: int = await conn.fetchval(
        "SELECT count(*) FROM objects WHERE account = 'a' AND cluster = $1"
        " AND resource = 'pods' AND NOT deleted", cluster
    )
    return n


async def wait_rows(conn: asyncpg.Connection, n: int, agent: Part, timeout: float, *,
                    peak: dict[str, int], cluster: str = "c") -> float:
    """Seconds until ``n`` pod rows of ``cluster`` exist, sampling the agent's RSS meanwhile."""
    start = time.perf_counter()
    while (have := await count_rows(conn, cluster)) < n:
        agent.check()
        peak["agent"] = max(peak.get("agent", 0), rss_kib(agent.pid)[0])
        if time.perf_counter() - start > timeout:
            raise TimeoutError(
                f"{await count_rows(conn, cluster)} of {n} rows after {timeout:.0f}s")
        # Polling the database, not synchronising with it. Each count scans the table, on the
        # cores the pipeline runs on (every 50 ms that cost 0.03-0.04 ms of PostgreSQL's CPU per
        # object at 60k): far from the end, wait a quarter of the time left at the rate so far.
        await asyncio.sleep(poll_pause(have, n, time.perf_counter() - start))
    return time.perf_counter() - start


def poll_pause(have: int, want: int, elapsed: float) -> float:
    """Seconds to wait before counting again: 50 ms near the end, so the figure stays within
    about that of the truth; at most 1 s."""
    if have <= 0 or elapsed <= 0:
        return 0.05
    left = (want - have) / (have / elapsed)
    return min(1.0, max(0.05, left / 4))


async def install_change_trigger(conn: asyncpg.Connection) -> None:
    """Note when each pod's row first carries each value of the ``bench-change`` label."""
    await conn.execute("""
        CREATE TABLE bench_changes (name text NOT NULL, tag text NOT NULL,
                                    at double precision NOT NULL);
        CREATE FUNCTION bench_note() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.object -> 'metadata' -> 'labels' ? 'bench-change' THEN
                INSERT INTO bench_changes
                VALUES (NEW.name, NEW.object -> 'metadata' -> 'labels' ->> 'bench-change',
                        extract(epoch FROM clock_timestamp()));
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER bench_note AFTER UPDATE ON objects
            FOR EACH ROW EXECUTE FUNCTION bench_note();
    """)


@dataclass
class PhaseResult:
    latencies: list[float]  # PATCH sent -> row changed, seconds
    round_trips: list[float]  # PATCH sent -> sandbox answered, seconds
    lost: int
    queued_max: dict[str, float]  # the agent's queues at their deepest during the phase
    queued_after: dict[str, float]  # and once every change arrived


def queues(agent_port: int, monitor: str) -> dict[str, float]:
    """Where changes can wait: the agent's coalescer and outbox, and the bus (pending for the
    ingester)."""
    return {**agent_queues(agent_port), "bus": float(bus_backlog(monitor))}


async def sample_queues(where: tuple[int, str], peak: dict[str, float],
                        stop: asyncio.Event) -> None:
    """Keep the deepest value of each queue until ``stop``."""
    while not stop.is_set():
        for queue, depth in (await asyncio.to_thread(queues, *where)).items():
            peak[queue] = max(peak.get(queue, 0.0), depth)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.2):  # a sampling period, not synchronisation
                await stop.wait()


async def change_phase(conn: asyncpg.Connection, kube: KubeTarget, names: list[str], *,
                       rate: float, tag: str, where: tuple[int, str]) -> PhaseResult:
    """PATCH the label ``bench-change: tag`` on each pod at ``rate``/s; per pod, seconds from
    sending the PATCH to its row change, while sampling the agent's queues."""
    sent: dict[str, float] = {}
    round_trips: list[float] = []
    headers = {"Authorization": f"Bearer {kube.token}",
               "Content-Type": "application/merge-patch+json"}
    body = orjson.dumps({"metadata": {"labels": {"bench-change": tag}}})
    peak: dict[str, float] = {}
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_queues(where, peak, stop))
    connector = aiohttp.TCPConnector(ssl=kube.ssl, limit=64)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as http:

        async def patch(name: str) -> None:
            url = f"{kube.server}/api/v1/namespaces/bench/pods/{name}"
            sent[name] = time.time()
            async with http.patch(url, data=body) as response:
                response.raise_for_status()
                await response.read()
            round_trips.append(time.time() - sent[name])

        start = time.perf_counter()
        tasks = []
        for i, name in enumerate(names):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing the load, not synchronising
            tasks.append(asyncio.create_task(patch(name)))
        await asyncio.gather(*tasks)
    # A backlog drains slowly but is not lost: wait while rows keep arriving, and count as
    # lost only what did not come within STALL seconds of the last one that did.
    count = "SELECT count(DISTINCT name) FROM bench_changes WHERE tag = $1"
    seen, progress = 0, time.monotonic()
    while seen < len(names) and time.monotonic() - progress < STALL:
        await asyncio.sleep(0.1)  # polling the database for the last rows
        now_seen = await conn.fetchval(count, tag)
        if now_seen > seen:
            seen, progress = now_seen, time.monotonic()
    stop.set()
    await sampler
    rows = await conn.fetch(
        "SELECT name, min(at) AS at FROM bench_changes WHERE tag = $1 GROUP BY name", tag
    )
    latencies = [row["at"] - sent[row["name"]] for row in rows if row["name"] in sent]
    after = await asyncio.to_thread(queues, *where)
    return PhaseResult(latencies, round_trips, len(names) - len(latencies), peak, after)


class CpuMeter:
    """CPU time each process used between ``start`` and ``report``: what one change or one
    object costs the deployment, process by process, whatever the machine's load."""

    def __init__(self, processes: list[Part], postmaster: int, driver_backend: int) -> None:
        self.processes = processes
        self.postmaster = postmaster
        # The backend serving the driver's own queries (counting rows every 50 ms, a scan of
        # the table each: up to 0.05 ms per object at 60k) is the driver's cost, not PostgreSQL's
        # in the pipeline.
        self.driver_backend = driver_backend
        self.before: dict[str, float] = {}
        self.driver_before = 0.0

    def _now(self) -> dict[str, float]:
        used = {part.name: cpu_seconds([part.pid]) for part in self.processes}
        # Backends started and ended within the interval are missed: a slight undercount.
        tree = process_tree(self.postmaster)
        used["postgres"] = cpu_seconds([p for p in tree if p != self.driver_backend])
        return used

    def _driver(self) -> float:
        return time.process_time() + cpu_seconds([self.driver_backend])

    def start(self) -> None:
        self.before = self._now()
        self.driver_before = self._driver()

    def report(self, what: str, count: int) -> None:
        used = {k: v - self.before.get(k, 0.0) for k, v in self._now().items()}
        each = " · ".join(f"{k} {v / count * 1e3:.2f}" for k, v in used.items())
        driver = (self._driver() - self.driver_before) / count * 1e3
        total = sum(used.values()) / count
        print(f"    CPU ms per {what}: {each} · total {total * 1e3:.2f}"
              f" (the benchmark driver and its PostgreSQL backend, load and polling:"
              f" {driver:.2f})", flush=True)
        # The pipeline's processes share this machine's cores: however well they overlap, they
        # cannot together go faster than the cores divided by what one object costs them all.
        cores = os.cpu_count() or 1
        if total > 0:
            line(f"    CPU bound: {cores} cores / total CPU per {what}", f"{cores / total:,.0f}/s")


def quantiles(values: list[float]) -> tuple[float, float, float]:
    """p50, p99 and max."""
    ordered = sorted(values)
    if len(ordered) < 2:
        return ordered[0], ordered[0], ordered[0]
    q = statistics.quantiles(ordered, n=100)
    return q[49], q[98], ordered[-1]


def report_phase(result: PhaseResult, rate: float, changes: int) -> None:
    if not result.latencies:
        line(f"change latency at {rate:,.0f}/s", "none arrived", "lost", f"{result.lost:,}")
        return
    p50, p99, worst = quantiles(result.latencies)
    rt50, rt99, _ = quantiles(result.round_trips)
    line(f"change latency at {rate:,.0f}/s, p50", f"{p50 * 1000:,.0f} ms", "changes",
         f"{changes:,}")
    line("  p99", f"{p99 * 1000:,.0f} ms", "lost", f"{result.lost:,}")
    line("  max", f"{worst * 1000:,.0f} ms", "PATCH round trip p50 / p99",
         f"{rt50 * 1000:,.0f} / {rt99 * 1000:,.0f} ms")
    for queue in ("coalescer", "outbox", "bus"):
        owner = "JetStream backlog" if queue == "bus" else f"agent {queue}"
        line(f"  {owner}, deepest", f"{result.queued_max.get(queue, 0):,.0f}",
             "once all arrived", f"{result.queued_after.get(queue, 0):,.0f}")


def metric_sum(port: int, name: str, labels: str = "") -> float:
    """Sum of a metric's samples on the agent's /metrics whose labels contain ``labels``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    total = 0.0
    for row in text.splitlines():
        if row.startswith((name + "{", name + " ")) and labels in row:
            total += float(row.rsplit(" ", 1)[1])
    return total


def agent_queues(port: int) -> dict[str, float]:
    return {queue: metric_sum(port, "clustersync_agent_queued", f'queue="{queue}"')
            for queue in ("coalescer", "outbox")}


def wire_bytes(port: int) -> float:
    return metric_sum(port, "clustersync_frame_bytes_total", 'component="agent"')


def settle_wire(port: int, quiet_for: float = 2.0, timeout: float = 120.0) -> tuple[float, float]:
    """The agent's bytes once they stopped growing for ``quiet_for`` seconds (the exchange is
    over), and when they last grew (``time.monotonic()``)."""
    deadline = time.monotonic() + timeout
    last, since = wire_bytes(port), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now_bytes = wire_bytes(port)
        if now_bytes != last:
            last, since = now_bytes, time.monotonic()
        elif time.monotonic() - since >= quiet_for:
            break
    return last, since


def start_agent(group: Parts, config: Path, health: int) -> Part:
    return group.clustersync("agent", "agent", "--config", str(config), "--health",
                             f"127.0.0.1:{health}")


def start_server(group: Parts, port: int, bus: str, tokens: Path, settings: Settings) -> Part:
    digests = ["--kubescape-checksums"] if settings.kubescape_checksums else []
    server = group.clustersync("server", "server", "--listen", f"127.0.0.1:{port}",
                               "--bus", bus, "--tokens", str(tokens), *digests)
    wait_for(lambda: (server.check(), http_ok(f"http://127.0.0.1:{port}/healthz"))[1], "server")
    return server


async def run(objects: int, settings: Settings) -> None:
    print(f"production topology, {objects:,} pods (each its own process; PostgreSQL fsync and "
          "synchronous_commit on; JetStream sync_interval: always)", flush=True)
    bodies = [orjson.dumps(pod(i)) for i in range(objects)]
    names = [str(orjson.loads(b)["metadata"]["name"]) for b in bodies]
    print(f"  pod size {statistics.mean(map(len, bodies)):,.0f} B on average", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="clustersync-prod-"))
    pg = start_postgres(durable=True)
    try:
        with parts(workdir) as group:
            await _run(group, pg, names, bodies, settings)
    finally:
        pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)  # the seed and JetStream's files are GBs


async def raw_limits(db: str, bus: str, names: list[str], bodies: list[bytes]) -> None:
    """Rates per object, on at most RAW_SAMPLE of them: one-per-message JetStream publishes of
    100k pods alone would take minutes."""
    names, bodies = names[:RAW_SAMPLE], bodies[:RAW_SAMPLE]
    print(f"raw limits, same run (objects per second, {len(bodies):,} objects)", flush=True)
    raw_cpu_limits(bodies)
    upserts = await raw_postgres_upsert(db, names, bodies)
    line("", "", "raw PostgreSQL COPY+upsert, 1k", f"{upserts:,.0f}/s")
    unbatched, batched, consumed = await raw_nats(bus, bodies)
    line("", "", "raw JetStream publish, 1 per msg", f"{unbatched:,.0f}/s")
    line("", "", "raw JetStream publish, batches", f"{batched:,.0f}/s")
    line("", "", "raw JetStream pull+ack", f"{consumed:,.0f}/s")
    frame = orjson.dumps({"event": 1, "object": bodies[0].decode()})
    line("", "", "raw websocket frames", f"{await raw_websocket_rate(frame, 20000):,.0f}/s")


def postmaster_pid(pg: RunningPostgres) -> int:
    return int((pg.workdir / "data" / "postmaster.pid").read_text().split()[0])


def report_memory(processes: list[Part], pg: RunningPostgres, n: int) -> None:
    """Steady (now, after the change phases) and peak RSS of every process, per pod; the budget
    line is what ``default_objects`` divides the machine's memory by."""
    print("memory, KiB per pod (steady = now, peak = VmHWM)", flush=True)
    budget = 0
    for part in processes:
        current, hwm = rss_kib(part.pid)
        budget += hwm
        line(f"  {part.name}", f"{current / n:,.1f} / {hwm / n:,.1f}", "steady / peak MiB",
             f"{current / 1024:,.0f} / {hwm / 1024:,.0f}")
    current, hwm = rss_kib(os.getpid())
    budget += hwm
    line("  benchmark driver (holds the pods' bytes)", f"{current / n:,.1f} / {hwm / n:,.1f}",
         "steady / peak MiB", f"{current / 1024:,.0f} / {hwm / 1024:,.0f}")
    pss = pss_kib(process_tree(postmaster_pid(pg)))
    budget += pss
    line("  postgres (all processes, PSS)", f"{pss / n:,.1f}", "MiB", f"{pss / 1024:,.0f}")
    line("  budget: every peak together", f"{budget / n:,.1f}", "KIB_PER_POD_BUDGET",
         f"{KIB_PER_POD_BUDGET}")


async def _run(group: Parts, pg: RunningPostgres, names: list[str], bodies: list[bytes],
               settings: Settings) -> None:
    db = pg.url
    n = len(bodies)
    nats_part, bus, monitor = start_durable_nats(group)
    migrate_database(group, db)
    kubeconfig = group.workdir / "kubeconfig"
    server_port, sandbox_port, agent_port = free_port(), free_port(), free_port()
    seed, tokens, agent_yaml = write_inputs(group.workdir, bodies, (server_port, kubeconfig),
                                            settings)
    await raw_limits(db, bus, names, bodies)

    sandbox = group.clustersync("sandbox", "sandbox", "--port", str(sandbox_port),
                                "--kubeconfig", str(kubeconfig), "--seed", str(seed))
    ingester = group.clustersync("ingester", "ingester", "--bus", bus, "--db", db)
    server = start_server(group, server_port, bus, tokens, settings)
    wait_for(lambda: (sandbox.check(), kubeconfig.exists())[1], "sandbox", timeout=600)
    ingester.check()
    kube = KubeTarget.from_kubeconfig(kubeconfig)

    conn = await asyncpg.connect(db)
    try:
        print("pipeline", flush=True)
        peak: dict[str, int] = {}
        agent = start_agent(group, agent_yaml, agent_port)
        cpu = CpuMeter([sandbox, agent, server, ingester, nats_part], postmaster_pid(pg),
                       conn.get_server_pid())
        postgres = PgMeter(postmaster_pid(pg), db, frozenset({conn.get_server_pid()}))
        cpu.start()
        await postgres.start()
        elapsed = await wait_rows(conn, n, agent, timeout=max(600.0, n / 50), peak=peak)
        line("initial sync (agent start -> rows)", per_s(n, elapsed), "seconds", f"{elapsed:.1f}")
        cpu.report("object", n)
        await postgres.report(n)
        wait_for(lambda: http_ok(f"http://127.0.0.1:{agent_port}/readyz"), "agent ready")
        first_wire, _ = settle_wire(agent_port)
        line("  agent bytes on the wire", f"{first_wire / 1e6:,.1f} MB", "per object",
             f"{first_wire / n:,.0f} B")

        await install_change_trigger(conn)
        changed = names[: min(settings.changes, n)]
        phases = [(settings.rate, "1")]
        if settings.second_rate:
            phases.append((settings.second_rate, "2"))
        for rate, tag in phases:
            cpu.start()
            await postgres.start()
            result = await change_phase(conn, kube, changed, rate=rate, tag=tag,
                                        where=(agent_port, monitor))
            report_phase(result, rate, len(changed))
            cpu.report("change", len(changed))
            await postgres.report(len(changed), "change")

        report_memory([sandbox, agent, server, ingester, nats_part], pg, n)

        # A running agent whose server went away and came back: it redials and compares
        # inventories; nothing changed, so only digests should travel.
        before_bytes = wire_bytes(agent_port)
        redials = metric_sum(agent_port, "clustersync_agent_reconnects_total")
        server.stop()
        start = time.monotonic()
        server = start_server(group, server_port, bus, tokens, settings)
        wait_for(lambda: metric_sum(agent_port, "clustersync_agent_reconnects_total") > redials,
                 "agent redialled")
        after_bytes, settled = settle_wire(agent_port)
        line("unchanged reconnect (server restarted)", f"{settled - start:.2f} s",
             "bytes on the wire", f"{(after_bytes - before_bytes) / 1e3:,.1f} kB")

        agent.stop()
        restarted = start_agent(group, agent_yaml, agent_port)
        start = time.monotonic()
        wait_for(lambda: (restarted.check(), http_ok(
            f"http://127.0.0.1:{agent_port}/readyz"))[1], "restarted agent ready")
        ready = time.monotonic() - start
        again, settled = settle_wire(agent_port)
        line("agent restart, unchanged cluster, to /readyz", f"{ready:.2f} s", "rows", f"{n:,}")
        line("  to reconciliation done (bytes settle)", f"{max(settled - start, ready):.2f} s",
             "bytes on the wire", f"{again / 1e3:,.1f} kB")
        current, hwm = rss_kib(restarted.pid)
        line("  restarted agent RSS per pod", f"{current / n:,.1f} KiB", "peak MiB",
             f"{hwm / 1024:,.0f}")
        restarted.stop()

        split = agent_config(group.workdir, (server_port, kubeconfig), settings, SPLIT_CLUSTER)
        await split_sync(group, conn, split, (agent_port, monitor), bodies,
                         others=(sandbox, server, ingester, nats_part, postmaster_pid(pg)))
    finally:
        await conn.close()


def nats_in_bytes(monitor: str) -> int:
    """Bytes nats-server received from its clients since it started: it only grows (what
    JetStream stores does not: the stream is a rolling log that drops its oldest once full), and
    with the ingester stopped it is almost all the server's publishes."""
    with urllib.request.urlopen(f"{monitor}/varz", timeout=5) as response:
        return int(orjson.loads(response.read())["in_bytes"])


def wait_stream(monitor: str, start_bytes: int, growth: int, quiet_for: float = 0.0,
                timeout: float = 600.0) -> float:
    """When (``time.monotonic()``) nats-server's received bytes last grew by more than
    STILL_BYTES, once they grew by ``growth`` since ``start_bytes`` and then stayed within
    STILL_BYTES for ``quiet_for`` seconds (the server's own small periodic messages aside)."""
    deadline = time.monotonic() + timeout
    last, since = nats_in_bytes(monitor), time.monotonic()
    while time.monotonic() < deadline:
        now_bytes = nats_in_bytes(monitor)
        if now_bytes - last > STILL_BYTES:
            last, since = now_bytes, time.monotonic()
        if last - start_bytes >= growth and time.monotonic() - since >= quiet_for:
            return since
        time.sleep(0.05)  # polling nats-server's monitor, not synchronising with it
    raise TimeoutError(f"nats-server received {last - start_bytes:,} bytes in {timeout:.0f} s")


STILL_BYTES = 64 * 1024


async def split_sync(group: Parts, conn: asyncpg.Connection, config: Path,
                     where: tuple[int, str], bodies: list[bytes], *,
                     others: tuple[Part, Part, Part, Part, int]) -> None:
    """The same pods synced once more, as another cluster, in two halves timed apart.

    The front half (sandbox -> agent -> server -> JetStream, from the agent's start until
    JetStream stops growing) runs with the ingester stopped (SIGSTOP): the pipeline where
    PostgreSQL is not the limit. The agent's first exchange needs the backend's inventory,
    which the ingester answers, so the ingester is stopped only once objects flow (a few MB
    stored); until then it shares the cores, which only slows the figure. The back half is the
    ingester, resumed, draining what JetStream holds into PostgreSQL alone."""
    agent_port, monitor = where
    n = len(bodies)
    sandbox, server, ingester, nats_part, postmaster = others
    print(f"the same {n:,} pods as cluster {SPLIT_CLUSTER!r}, in two halves", flush=True)
    before = nats_in_bytes(monitor)
    agent = start_agent(group, config, agent_port)
    cpu = CpuMeter([sandbox, agent, server, ingester, nats_part], postmaster,
                   conn.get_server_pid())
    cpu.start()
    start = time.monotonic()
    try:
        await asyncio.to_thread(wait_stream, monitor, before, 4_000_000)
        os.kill(ingester.pid, signal.SIGSTOP)
        # Every pod travels whole (its JSON, escaped, inside a message): at least its bytes.
        settled = await asyncio.to_thread(
            wait_stream, monitor, before, sum(map(len, bodies)), 2.0)
        line("  agent -> server -> JetStream, ingester stopped", per_s(n, settled - start),
             "seconds", f"{settled - start:.1f}")
        cpu.report("object", n)
    finally:
        os.kill(ingester.pid, signal.SIGCONT)
    cpu = CpuMeter([agent, server, ingester, nats_part], postmaster, conn.get_server_pid())
    cpu.start()
    missing = n - await count_rows(conn, SPLIT_CLUSTER)
    elapsed = await wait_rows(conn, n, agent, timeout=max(600.0, n / 50), peak={},
                              cluster=SPLIT_CLUSTER)
    line("  JetStream -> ingester -> PostgreSQL", per_s(missing, elapsed), "objects timed",
         f"{missing:,}")
    cpu.report("object", missing)
    agent.stop()


def main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks prod")
    parser.add_argument("--objects", type=int, default=0, help="pods (default: what fits)")
    parser.add_argument("--rate", type=float, default=500.0, help="changes per second")
    parser.add_argument("--changes", type=int, default=5000, help="distinct pods changed")
    parser.add_argument("--second-rate", type=float, default=0.0,
                        help="then change the same pods again at this rate (e.g. 1000)")
    parser.add_argument("--quiet", type=float, default=1.0, help="agent coalesce.quiet")
    parser.add_argument("--max-wait", type=float, default=5.0, help="agent coalesce.maxWait")
    parser.add_argument("--kubescape-checksums", action="store_true",
                        help="the server refuses fast digests: kubescape's hash everywhere")
    args = parser.parse_args(argv)
    objects = args.objects or default_objects()
    if not args.objects:
        print(f"--objects not given: {objects:,} fit in this machine's memory "
              f"({KIB_PER_POD_BUDGET} KiB per pod for every process together)", flush=True)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    # SIGTERM unwinds like Ctrl-C, so every part and PostgreSQL are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    settings = Settings(args.rate, args.changes, args.quiet, args.max_wait, args.second_rate,
                        args.kubescape_checksums)
    asyncio.run(run(objects, settings))


if __name__ == "__main__":
    main(sys.argv[1:])
