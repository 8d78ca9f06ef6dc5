"""CPU a ``clustersync sandbox`` process spends per PATCH, with a watcher receiving every change.

``python -m benchmarks.sandbox_patch --pods 5000 --rate 1000`` seeds a sandbox process with N
pods of ``benchmarks.pods``, opens one watch on pods (as the agent does), then sends one merge
patch per pod (a label, as the production benchmark's change phase does) at the given rate over
TLS, 64 connections. It reports the rate achieved, the sandbox's CPU time per PATCH (user +
system from /proc, so the TLS, HTTP, patch, encode and watch fan-out are all in it) and checks
that the watcher saw every change. First, the same PATCHes on a ``Store`` in this process, with
no HTTP: what the store's own work (decode, patch, compare, encode, fan-out) costs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import ssl
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import aiohttp
import orjson
import yaml

from benchmarks.memory import _free_port
from benchmarks.pods import pod
from clustersync.sandbox.patch import merge_patch
from clustersync.sandbox.resources import DEFAULT_RESOURCES, Registry
from clustersync.sandbox.state import Store


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def store_patch_us(pods: int) -> float:
    """CPU microseconds per merge PATCH on a Store holding ``pods`` pods (best of 5 rounds)."""
    registry = Registry(DEFAULT_RESOURCES)
    store = Store(registry)
    namespaces, pod_type = registry.find("", "v1", "namespaces"), registry.find("", "v1", "pods")
    assert namespaces is not None and pod_type is not None
    store.create(namespaces, None, {"metadata": {"name": "bench"}})
    names = [store.create(pod_type, "bench", pod(i))["metadata"]["name"] for i in range(pods)]
    rounds = []
    for value in range(5):
        patch = {"metadata": {"labels": {"bench-change": str(value)}}}
        start = time.process_time()
        for name in names:
            store.update_with(pod_type, "bench", name, partial(merge_patch, patch=patch),
                              owned=True)  # fmt: skip
        rounds.append((time.process_time() - start) / pods * 1e6)
    return min(rounds)


def _write_seed(path: Path, pods: int) -> None:
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}
    path.write_bytes(orjson.dumps([namespace, *(pod(i) for i in range(pods))]))


async def _watch(
    http: aiohttp.ClientSession, url: str, rv: str, want: int, seen: asyncio.Event
) -> None:
    """Count MODIFIED events from ``rv`` on; set ``seen`` once ``want`` arrived."""
    got = 0
    params = {"watch": "1", "resourceVersion": rv}
    async with http.get(
        f"{url}/api/v1/pods", params=params, timeout=aiohttp.ClientTimeout(total=None)
    ) as r:
        r.raise_for_status()
        async for line in r.content:
            if orjson.loads(line)["type"] == "MODIFIED":
                got += 1
                if got >= want:
                    seen.set()
                    return


async def _drive(
    url: str, token: str, ctx: ssl.SSLContext | bool, *, pods: int, rate: float, pid: int
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(ssl=ctx, limit=64)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as http:
        async with http.get(f"{url}/api/v1/namespaces/bench/pods", params={"limit": "1"}) as r:
            rv = (await r.json())["metadata"]["resourceVersion"]
        seen = asyncio.Event()
        watcher = asyncio.create_task(_watch(http, url, rv, pods, seen))
        patch_headers = {"Content-Type": "application/merge-patch+json"}
        body = orjson.dumps({"metadata": {"labels": {"bench-change": "1"}}})

        async def patch(i: int) -> None:
            async with http.patch(
                f"{url}/api/v1/namespaces/bench/pods/{pod(i)['metadata']['name']}",
                data=body,
                headers=patch_headers,
            ) as r:
                r.raise_for_status()
                await r.read()

        cpu_start, start = _cpu_seconds(pid), time.perf_counter()
        tasks = []
        for i in range(pods):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing the load, not synchronising
            tasks.append(asyncio.create_task(patch(i)))
        await asyncio.gather(*tasks)
        async with asyncio.timeout(60):
            await seen.wait()
        elapsed = time.perf_counter() - start
        cpu = _cpu_seconds(pid) - cpu_start
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    transport = "TLS" if ctx else "plain HTTP"
    print(
        f"sandbox PATCH over {transport}, {pods:,} pods each patched once at {rate:,.0f}/s "
        "offered, one watcher"
    )
    print(f"  achieved {pods / elapsed:,.0f}/s; every change seen by the watcher")
    print(
        f"  sandbox CPU {cpu:.2f} s = {cpu / pods * 1e3:.2f} ms per PATCH "
        f"({cpu / elapsed:.0%} of a core)"
    )


async def run(pods: int, rate: float, *, plain: bool = False) -> None:
    print(
        f"sandbox store alone, merge PATCH of one label: {store_patch_us(min(pods, 5000)):.0f} us"
        " of CPU each"
    )
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        seed, kubeconfig = tmp / "seed.json", tmp / "kubeconfig"
        _write_seed(seed, pods)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "clustersync", "sandbox", "--port", str(_free_port()),
            "--kubeconfig", str(kubeconfig), "--seed", str(seed),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            await proc.stdout.readline()  # printed once it serves
            config = yaml.safe_load(kubeconfig.read_text())
            url = config["clusters"][0]["cluster"]["server"]
            token = config["users"][0]["user"]["token"]
            ctx: ssl.SSLContext | bool = False
            if plain:
                url = url.replace("https://", "http://", 1)
            else:
                ctx = ssl.create_default_context()
                ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            await _drive(url, token, ctx, pods=pods, rate=rate, pid=proc.pid)
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            await proc.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sandbox_patch")
    parser.add_argument("--pods", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=1000.0, help="PATCHes per second offered")
    parser.add_argument(
        "--plain",
        action="store_true",
        help="plain HTTP instead of TLS (the sandbox serves both on its port)",
    )
    args = parser.parse_args(argv)
    asyncio.run(run(args.pods, args.rate, plain=args.plain))


if __name__ == "__main__":
    main()
