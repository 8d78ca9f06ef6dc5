"""RSS of a ``clustersync sandbox`` process serving N realistic pods.

``python -m benchmarks.sandbox_memory --pods 100000`` seeds a sandbox process with N pods (the
~5 KB pods of ``benchmarks.pods``), then reports its RSS once seeded and its peak RSS (VmHWM,
seeding included) after serving one unpaginated list of every pod, the request a relisting
informer makes, and a list in pages of 500 (each body read and parsed, as a client does).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import ssl
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson
import yaml

from benchmarks.memory import _free_port, _rss_kib
from benchmarks.pods import pod


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (TLS, HTTP and list assembly all count)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        lines = status.read().splitlines()
    return next(int(line.split()[1]) for line in lines if line.startswith("VmHWM:"))


def _write_seed(path: Path, pods: int) -> None:
    with path.open("w") as out:
        out.write('[{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"bench"}}')
        for i in range(pods):
            out.write(",")
            out.write(json.dumps(pod(i)))
        out.write("]")


async def _list_all(url: str, token: str, ctx: ssl.SSLContext, limit: int | None) -> int:
    """Pods listed, following continue tokens; each body is read and parsed as a client does."""
    headers = {"Authorization": f"Bearer {token}"}
    seen, cont = 0, ""
    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        while True:
            params = {"limit": str(limit)} if limit else {}
            if cont:
                params["continue"] = cont
            async with http.get(f"{url}/api/v1/pods", params=params, headers=headers, ssl=ctx) as r:
                r.raise_for_status()
                body = orjson.loads(await r.read())
            seen += len(body["items"])
            cont = body["metadata"].get("continue", "")
            if not cont:
                return seen


async def run(pods: int) -> None:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        seed, kubeconfig = tmp / "seed.json", tmp / "kubeconfig"
        await asyncio.to_thread(_write_seed, seed, pods)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "clustersync", "sandbox", "--port", str(_free_port()),
            "--kubeconfig", str(kubeconfig), "--seed", str(seed),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            started = time.monotonic()
            assert proc.stdout is not None
            await proc.stdout.readline()  # printed once it serves
            seeded = time.monotonic() - started
            seeded_rss = _rss_kib(proc.pid)
            config = yaml.safe_load(kubeconfig.read_text())
            url = config["clusters"][0]["cluster"]["server"]
            token = config["users"][0]["user"]["token"]
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            started, cpu = time.monotonic(), _cpu_seconds(proc.pid)
            listed = await _list_all(url, token, ctx, None)
            full_list = time.monotonic() - started
            full_cpu = _cpu_seconds(proc.pid) - cpu
            started, cpu = time.monotonic(), _cpu_seconds(proc.pid)
            paged = await _list_all(url, token, ctx, 500)
            paged_list = time.monotonic() - started
            paged_cpu = _cpu_seconds(proc.pid) - cpu
            if not listed == paged == pods:
                raise SystemExit(f"listed {listed:,} and {paged:,} pods, expected {pods:,}")
            peak = _peak_kib(proc.pid)
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            await proc.wait()
    print(f"sandbox serving {pods:,} pods")
    print(f"  seeded in {seeded:.1f} s")
    print(f"  one full list in {full_list:.1f} s, sandbox CPU {full_cpu:.1f} s")
    print(
        f"  in pages of 500 (limit + continue) in {paged_list:.1f} s, sandbox CPU {paged_cpu:.1f} s"
    )
    print(
        f"  RSS once seeded  {seeded_rss / 1024:>7,.0f} MiB ({seeded_rss / pods:.1f} KiB per pod)"
    )
    print(f"  peak RSS         {peak / 1024:>7,.0f} MiB ({peak / pods:.1f} KiB per pod)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sandbox_memory")
    parser.add_argument("--pods", type=int, default=20_000)
    asyncio.run(run(parser.parse_args(argv).pods))


if __name__ == "__main__":
    main()
