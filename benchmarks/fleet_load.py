"""The load generator of ``benchmarks fleet``: many agents in one process, each sending changes.

Run by the driver (benchmarks/fleet.py) as its own process, so the server's CPU is the server's:
``python -m benchmarks.fleet_load --port P --agents N --rate R --warmup W --seconds S``.

Every simulated agent dials like ours (``clustersync.v2``/``v1``, permessage-deflate, pings),
acknowledges every delivery it receives (or the server would wait for the ack), and sends a small
ConfigMap as a PutObject ``rate`` times a second, at times spread evenly over the fleet. The
object carries its own send time (``data.sent``, epoch seconds) so that a trigger in PostgreSQL
can tell the latency of each change without the driver matching anything.

Once connected, every agent asks for its inventory of ConfigMaps, as our agent does; the answer
comes back as a delivery, so the server's per-connection state includes a compressor for the
way down. The generator prints a JSON line once every agent is connected, waits for a line on
stdin (the driver's go, once the server has set every connection up), prints the measured
window's wall-clock bounds once every agent has acknowledged its answer and, when done, how many
changes it sent inside the window, how long the connects took and how many sends failed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass, field

import aiohttp
import orjson

from clustersync.model import Kind, ObjectRef
from clustersync.protocol.checksum import object_checksum
from clustersync.protocol.codec import decode_delivery, encode
from clustersync.protocol.digest import fast_digest
from clustersync.protocol.inventory import bucket_digests
from clustersync.protocol.messages import (
    BATCH_RECONCILIATION,
    CLUSTERSYNC_PROTOCOLS,
    DIGEST_PROTOCOL,
    Ack,
    Batch,
    PutObject,
    new_msg_id,
)

CONFIGMAPS = Kind("", "v1", "configmaps")
NAMESPACE = "bench"


def token(i: int) -> str:
    return f"fleet-token-{i:05d}"


def cluster(i: int) -> str:
    return f"c{i:05d}"


def change(name: str, version: int, sent: float, fast: bool = True) -> PutObject:
    """The ``version``-th state of the agent's ConfigMap, stamped with its send time."""
    obj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": f"uid-{name}",
                     "resourceVersion": str(version)},
        "data": {"sent": repr(sent), "version": str(version)},
    }
    checksum = fast_digest(obj) if fast else object_checksum(obj)
    return PutObject(ref=ObjectRef(CONFIGMAPS, NAMESPACE, name), checksum=checksum,
                     object=orjson.dumps(obj), msg_id=new_msg_id())


@dataclass
class Tally:
    sent_in_window: int = 0
    send_errors: int = 0
    acks_sent: int = 0
    window: tuple[float, float] = (0.0, 0.0)  # wall clock (time.time) bounds of the measure
    closed: list[str] = field(default_factory=list)


async def acknowledge(ws: aiohttp.ClientWebSocketResponse, tally: Tally) -> None:
    """Ack every delivery, as our agent does; the server holds the bus message until then."""
    async for frame in ws:
        if frame.type != aiohttp.WSMsgType.BINARY:
            continue
        _, delivery_id = decode_delivery(frame.data)
        if delivery_id is not None:
            await ws.send_bytes(encode(Ack(ids=(delivery_id,))))
            tally.acks_sent += 1
    tally.closed.append(f"{ws.close_code}")


async def agent(i: int, ws: aiohttp.ClientWebSocketResponse, args: argparse.Namespace,
                start: float, tally: Tally) -> None:
    """Send a change every 1/rate seconds, offset so that the fleet's sends are evenly spread."""
    measure_from, measure_to = tally.window
    if args.rate <= 0:  # idle fleet: hold the connection through the window, send nothing
        await asyncio.sleep(max(0.0, measure_to - time.time()))
        return
    name = f"cm-{i:05d}"
    period = 1.0 / args.rate
    offset = i * period / args.agents
    fast = ws.protocol == DIGEST_PROTOCOL  # the digest our agent uses with what was agreed
    version = 0
    while True:
        version += 1
        due = start + offset + (version - 1) * period
        pause = due - time.time()
        if pause > 0:
            await asyncio.sleep(pause)  # pacing the load, not synchronising
        sent = time.time()
        if sent >= measure_to:
            return
        try:
            await ws.send_bytes(encode(change(name, version, sent, fast)))
        except (ConnectionError, RuntimeError):
            tally.send_errors += 1
            return
        if sent >= measure_from:
            tally.sent_in_window += 1


async def run(args: argparse.Namespace) -> dict[str, object]:
    connector = aiohttp.TCPConnector(limit=0)
    tally = Tally()
    async with aiohttp.ClientSession(connector=connector) as http:
        sockets: list[aiohttp.ClientWebSocketResponse] = []
        began = time.perf_counter()
        for i in range(args.agents):
            sockets.append(await http.ws_connect(
                f"ws://127.0.0.1:{args.port}/",
                headers={"X-API-KEY": token(i)},
                protocols=CLUSTERSYNC_PROTOCOLS,  # as our agents offer them
                heartbeat=20.0,
                compress=15,  # as our agents dial
            ))
        connect_seconds = time.perf_counter() - began
        readers = [asyncio.create_task(acknowledge(ws, tally)) for ws in sockets]
        # As our agent does once connected: ask the backend for its inventory of the kind. The
        # answer comes back through the server as a delivery (acknowledged like any other).
        inventory = Batch(kind=CONFIGMAPS, batch_type=BATCH_RECONCILIATION,
                          digests=bucket_digests([]), msg_id=new_msg_id())
        for ws in sockets:
            await ws.send_bytes(encode(inventory))
        # The driver says go once the server has set every connection up (its bus consumer
        # exists): the run measures the steady state, not the connect storm.
        print(orjson.dumps({"connected": len(sockets)}).decode(), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        async with asyncio.timeout(300):
            while tally.acks_sent < len(sockets):  # every inventory answer delivered and acked
                await asyncio.sleep(0.1)  # polling a counter, not synchronising
        start = time.time() + 0.5
        tally.window = (start + args.warmup, start + args.warmup + args.seconds)
        # The driver samples the server's CPU over exactly this window.
        print(orjson.dumps({"window": list(tally.window)}).decode(), flush=True)
        await asyncio.gather(*(agent(i, ws, args, start, tally) for i, ws in enumerate(sockets)))
        for ws in sockets:
            await ws.close()
        await asyncio.gather(*readers, return_exceptions=True)
    return {"sent": tally.sent_in_window, "window": list(tally.window),
            "connect_seconds": connect_seconds, "send_errors": tally.send_errors,
            "acks_sent": tally.acks_sent,
            "closed_early": len([c for c in tally.closed if c not in ("1000", "None")])}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fleet_load")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--agents", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True, help="changes/s per agent")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
