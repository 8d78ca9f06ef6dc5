"""``python -m benchmarks fleet --agents 1000 --rate 1``: many active agents on one server.

One ``clustersync server`` process, NATS JetStream (``sync_interval: always``), one
``clustersync ingester`` and PostgreSQL (fsync and synchronous_commit on), each its own process,
as in ``benchmarks prod``. A load generator, also its own process (benchmarks/fleet_load.py),
holds ``--agents`` websocket connections, each with its own cluster token, and each sends
``--rate`` small PutObjects a second at evenly spread times.

Latency runs from the load generator's send (stamped into the object) to the moment a trigger on
``objects`` sees the row written (``clock_timestamp()``, the same machine clock). The server's
CPU is utime+stime from /proc over the measured window; its memory is its RSS per agent. Raw
limits measured in the same run are printed beside the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import nats
import orjson
import yaml
from tests.servers import free_port, start_postgres

from benchmarks.fleet_load import change, cluster, token
from benchmarks.prod import line
from benchmarks.prod_parts import (
    Part,
    Parts,
    http_ok,
    migrate_database,
    parts,
    rss_kib,
    start_durable_nats,
    wait_for,
)
from benchmarks.sync import raw_websocket_rate
from clustersync.protocol.codec import encode
from clustersync.protocol.envelope import Envelope, encode_envelope


@dataclass(frozen=True)
class Load:
    agents: int
    rate: float  # changes per second per agent
    warmup: float  # seconds sent before the measured window
    seconds: float  # the measured window
    profile: str = ""  # a py-spy raw profile of the server over the window goes here


DRAIN = 30.0  # seconds without a new row after which the missing ones count as lost


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_tokens(path: Path, agents: int) -> None:
    path.write_text(yaml.safe_dump(
        [{"token": token(i), "account": "a", "cluster": cluster(i)} for i in range(agents)]
    ))


async def install_trigger(conn: asyncpg.Connection) -> None:
    await conn.execute("""
        CREATE TABLE bench_fleet (cluster text NOT NULL, sent double precision NOT NULL,
                                  at double precision NOT NULL);
        CREATE FUNCTION bench_fleet_note() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.resource = 'configmaps' AND NEW.object -> 'data' ? 'sent' THEN
                INSERT INTO bench_fleet VALUES (NEW.cluster,
                    (NEW.object -> 'data' ->> 'sent')::double precision,
                    extract(epoch FROM clock_timestamp()));
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER bench_fleet_note AFTER INSERT OR UPDATE ON objects
            FOR EACH ROW EXECUTE FUNCTION bench_fleet_note();
    """)


async def raw_publish_rate(url: str, body: bytes, n: int) -> float:
    """Acknowledged JetStream publishes per second, 256 in flight, on 16 subjects."""
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        await js.add_stream(name="RAWFLEET", subjects=["rawfleet.>"])
        start = time.perf_counter()
        for at in range(0, n, 256):
            await asyncio.gather(*(js.publish(f"rawfleet.{i % 16}", body)
                                   for i in range(at, min(n, at + 256))))
        rate = n / (time.perf_counter() - start)
        await js.delete_stream("RAWFLEET")
    finally:
        await client.close()
    return rate


async def raw_limits(bus: str) -> None:
    sample = change("cm-00000", 1, time.time())
    frame = encode(sample)
    envelope = encode_envelope(Envelope("a", cluster(0), sample, at=time.time()))
    published = await raw_publish_rate(bus, envelope, 10_000)
    line("", "", "raw JetStream publish (acked)", f"{published:,.0f}/s")
    line("", "", "raw websocket frames", f"{await raw_websocket_rate(frame, 20_000):,.0f}/s")
    line("", "", "frame / envelope bytes", f"{len(frame)} / {len(envelope)}")


def start_load(workdir: Path, port: int, load: Load) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "benchmarks.fleet_load", "--port", str(port), "--agents",
            str(load.agents), "--rate", str(load.rate), "--warmup", str(load.warmup),
            "--seconds", str(load.seconds)]
    log = open(workdir / "load.log", "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.PIPE)


def read_json_line(proc: subprocess.Popen[bytes], what: str) -> dict[str, object]:
    assert proc.stdout is not None
    raw = proc.stdout.readline()
    if not raw:
        raise RuntimeError(f"load generator exited ({proc.wait()}) before {what}")
    result: dict[str, object] = orjson.loads(raw)
    return result


async def measure(group: Parts, db: str, load: Load) -> None:
    nats_part, bus, monitor = start_durable_nats(group)
    migrate_database(group, db)
    print("raw limits, same run", flush=True)
    await raw_limits(bus)

    tokens = group.workdir / "tokens.yaml"
    write_tokens(tokens, load.agents)
    port = free_port()
    ingester = group.clustersync("ingester", "ingester", "--bus", bus, "--db", db)
    server = group.clustersync("server", "server", "--listen", f"127.0.0.1:{port}",
                               "--bus", bus, "--tokens", str(tokens))
    wait_for(lambda: (server.check(), http_ok(f"http://127.0.0.1:{port}/healthz"))[1], "server")
    ingester.check()
    conn = await asyncpg.connect(db)
    try:
        await install_trigger(conn)
        await run_load(group, conn, (server, ingester, nats_part), (port, monitor), load)
    finally:
        await conn.close()


async def run_load(group: Parts, conn: asyncpg.Connection, watched: tuple[Part, ...],
                   ports: tuple[int, str], load: Load) -> None:
    port, monitor = ports
    agents = load.agents
    server = watched[0]
    idle_rss = rss_kib(server.pid)[0]
    proc = start_load(group.workdir, port, load)
    try:
        read_json_line(proc, "connecting")
        began = time.perf_counter()
        await wait_links(conn, agents, server)
        line("every agent set up (link reported)", f"{time.perf_counter() - began:.1f} s",
             "after the websocket connects", "")
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        window = read_json_line(proc, "its window")["window"]
        assert isinstance(window, list)
        connected_rss = rss_kib(server.pid)[0]
        await asyncio.sleep(max(0.0, window[0] - time.time()))  # to the window's start
        before = [cpu_seconds(p.pid) for p in (*watched, proc)]
        spy = profile_server(server, load)
        await asyncio.sleep(max(0.0, window[1] - time.time()))  # to its end
        after = [cpu_seconds(p.pid) for p in (*watched, proc)]
        loaded_rss = rss_kib(server.pid)[0]
        backlog = ingester_backlog(monitor)
        if spy is not None:
            spy.wait()
        done = read_json_line(proc, "the end of its run")
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait()
    for part in watched:
        part.check()
    sent = int(str(done["sent"]))
    # Rows still on their way: wait while they keep coming; lost = not written after DRAIN
    # seconds without a single new row.
    got, progress_at = -1, time.monotonic()
    while time.monotonic() - progress_at < DRAIN:  # polling the database for the stragglers
        now_got = await conn.fetchval(
            "SELECT count(*) FROM bench_fleet WHERE sent >= $1 AND sent < $2", window[0], window[1]
        )
        if now_got >= sent:
            break
        if now_got > got:
            got, progress_at = now_got, time.monotonic()
        await asyncio.sleep(0.2)
    rows = await conn.fetch("SELECT min(at) - sent AS latency FROM bench_fleet "
                            "WHERE sent >= $1 AND sent < $2 GROUP BY cluster, sent",
                            window[0], window[1])
    latencies = sorted(float(r["latency"]) for r in rows)
    # Rows written while the window lasted, whatever their send time: what the pipeline kept up.
    in_window = await conn.fetchval("SELECT count(*) FROM bench_fleet WHERE at >= $1 AND at < $2",
                                    window[0], window[1])
    report(load, sent, latencies, done)
    line("  queued for the ingester at the window's end", f"{backlog['up']:,}",
         "link reports queued", f"{backlog['reports']:,}")
    line("  rows written during the window", f"{in_window / (window[1] - window[0]):,.0f}/s",
         "offered", f"{load.agents * load.rate:,.0f}/s")
    span = window[1] - window[0]
    busy = [(b - a) / span for a, b in zip(before, after, strict=True)]
    print("CPU over the window (share of one core)", flush=True)
    for name, share in zip(("server", "ingester", "nats", "load generator"), busy, strict=True):
        extra = (f"{share * 1000 / max(1, sent / span):,.2f} ms", "per change") \
            if name == "server" and sent else ("", "")
        line(f"  {name}", f"{share:.0%}", extra[1], extra[0])
    line("  server CPU per agent", f"{busy[0] * 1e3 / agents:,.2f} ms/s")
    print("server memory", flush=True)
    line("  RSS idle / connected / loaded", f"{loaded_rss / 1024:,.0f} MiB", "idle / connected MiB",
         f"{idle_rss / 1024:,.0f} / {connected_rss / 1024:,.0f}")
    line("  RSS per agent (loaded)", f"{loaded_rss / agents:,.1f} KiB", "growth per agent",
         f"{(loaded_rss - idle_rss) / agents:,.1f} KiB")


def ingester_backlog(monitor: str) -> dict[str, int]:
    """Messages not yet delivered to the ingester's durables (where a queue builds up)."""
    with urllib.request.urlopen(f"{monitor}/jsz?consumers=true&config=false", timeout=5) as r:
        doc = orjson.loads(r.read())
    pending = {"up": 0, "reports": 0}
    for account in doc.get("account_details", []):
        for stream in account.get("stream_detail", []):
            for consumer in stream.get("consumer_detail", []):
                name = consumer["name"]
                kind = "up" if name.startswith("ingester-up-") else (
                    "reports" if name == "ingester-reports" else "")
                if kind:
                    pending[kind] += consumer["num_pending"] + consumer["num_ack_pending"]
    return pending


def profile_server(server: Part, load: Load) -> subprocess.Popen[bytes] | None:
    if not load.profile:
        return None
    py_spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen([str(py_spy), "record", "-r", "50", "-d", str(int(load.seconds)),
                             "-f", "raw", "-o", load.profile, "-p", str(server.pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def wait_links(conn: asyncpg.Connection, agents: int, server: Part) -> None:
    """Until the server has reported every agent connected (it does so once the cluster's bus
    consumer exists), polling the ingester's fleet status table."""
    deadline = time.monotonic() + 300
    while True:
        server.check()
        ready = await conn.fetchval(
            "SELECT count(*) FROM cluster_state WHERE link ->> 'connected' = 'true'")
        if ready >= agents:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{ready} of {agents} agents set up after 300 s")
        await asyncio.sleep(0.2)  # polling the database, not synchronising with it


def report(load: Load, sent: int, latencies: list[float], done: dict[str, object]) -> None:
    print(f"{load.agents:,} agents x {load.rate:g} change/s for {load.seconds:g} s "
          f"(offered {load.agents * load.rate:,.0f}/s)", flush=True)
    line("  connect all agents", f"{float(str(done['connect_seconds'])):.1f} s",
         "send errors / closed early", f"{done['send_errors']} / {done['closed_early']}")
    line("  changes sent in the window", f"{sent:,}", "written", f"{len(latencies):,}")
    line("  lost", f"{sent - len(latencies):,}")
    if len(latencies) > 1:
        q = statistics.quantiles(latencies, n=100)
        line("  latency send -> row, p50", f"{q[49] * 1000:,.0f} ms")
        line("  p99", f"{q[98] * 1000:,.0f} ms", "target", "< 250 ms")
        line("  max", f"{latencies[-1] * 1000:,.0f} ms")


async def run(args: argparse.Namespace) -> None:
    agents, warmup, seconds = args.agents, args.warmup, args.seconds
    for rate in args.rate:
        print(f"\nfleet: {agents:,} agents on one server process, {rate:g} change/s each "
              "(PostgreSQL fsync and synchronous_commit on; JetStream sync_interval: always)",
              flush=True)
        workdir = Path(tempfile.mkdtemp(prefix="clustersync-fleet-"))
        pg = start_postgres(durable=True)
        try:
            with parts(workdir) as group:
                await measure(group, pg.url, Load(agents, rate, warmup, seconds, args.profile))
        finally:
            pg.stop()
            if args.keep:
                print(f"  logs kept in {workdir}", flush=True)
            else:
                shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks fleet")
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--rate", type=float, nargs="+", default=[1.0],
                        help="changes per second per agent; several: one run each")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--keep", action="store_true", help="keep the processes' logs")
    parser.add_argument("--profile", default="", help="py-spy raw profile of the server to FILE")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    asyncio.run(run(args))


if __name__ == "__main__":
    main(sys.argv[1:])
