"""``clustersync demo``: every flow end to end, in one process, on the embedded parts.

Sandbox cluster, agent, server, embedded bus, ingester and SQLite all run here and talk over real
loopback sockets. The demo syncs a realistic cluster, changes, deletes and backend-writes a few
objects, and succeeds only if the backend then holds exactly what the cluster holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from clustersync.adapters.bus.memory import MemoryBus
from clustersync.adapters.kube.client import KubeClient
from clustersync.adapters.store import Store
from clustersync.adapters.store.sqlite import open_sqlite
from clustersync.model import Kind
from clustersync.model.identity import Identity, TokenTable
from clustersync.protocol.agent_types import Strategy, ref_of
from clustersync.protocol.digest import fast_digest
from clustersync.protocol.shaping import NamespaceRules, is_filtered, shape
from clustersync.runtime.agent import Agent
from clustersync.runtime.backend import Backend
from clustersync.runtime.config import AgentConfig, ResourceSpec
from clustersync.runtime.demo_objects import demo_objects
from clustersync.sandbox import Sandbox

ACCOUNT, CLUSTER = "demo-account", "demo-cluster"
AGENT_TOKEN, ADMIN_TOKEN = "demo-agent-token", "demo-admin-token"

RESOURCES = (
    ResourceSpec(Kind("", "v1", "namespaces"), Strategy.PATCH),
    ResourceSpec(Kind("", "v1", "nodes"), Strategy.PATCH),
    ResourceSpec(Kind("", "v1", "pods"), Strategy.PATCH),
    ResourceSpec(Kind("", "v1", "configmaps"), Strategy.COPY),
    ResourceSpec(Kind("apps", "v1", "deployments"), Strategy.PATCH),
    ResourceSpec(Kind("apps", "v1", "statefulsets"), Strategy.PATCH),
    ResourceSpec(
        Kind("spdx.softwarecomposition.kubescape.io", "v1beta1", "applicationprofiles"),
        Strategy.COPY,
    ),
    ResourceSpec(
        Kind("spdx.softwarecomposition.kubescape.io", "v1beta1", "sbomsyfts"), Strategy.COPY
    ),
)
RULES = NamespaceRules(operator_namespace="kubescape", exclude=frozenset({"kube-system"}))

Inventory = dict[tuple[str, str, str], str]  # (kind, namespace, name) -> checksum


def cluster_inventory(sandbox: Sandbox) -> Inventory:
    """What the backend should hold: every synced, unfiltered object, as the agent shapes it,
    with the fast digest the demo's agent and server agree on (clustersync.v2)."""
    out: Inventory = {}
    for spec in RESOURCES:
        kind = spec.kind
        for obj in sandbox.list(kind.group, kind.version, kind.resource):
            if is_filtered(obj, RULES):
                continue
            ref = ref_of(kind, obj)
            out[(str(kind), ref.namespace, ref.name)] = fast_digest(shape(kind, obj))
    return out


async def backend_inventory(store: Store) -> Inventory:
    rows = await store.list(ACCOUNT, CLUSTER)
    return {(str(r.key.ref.kind), r.key.ref.namespace, r.key.ref.name): r.checksum for r in rows}


async def _wait_converged(sandbox: Sandbox, store: Store, deadline: float, out: TextIO) -> bool:
    last = ""
    while time.monotonic() < deadline:
        want, have = cluster_inventory(sandbox), await backend_inventory(store)
        matching = sum(1 for key, checksum in want.items() if have.get(key) == checksum)
        line = f"  synced {matching}/{len(want)} objects, backend holds {len(have)}"
        if line != last:
            out.write(line + "\n")
            out.flush()
            last = line
        if want == have:
            return True
        await asyncio.sleep(0.1)  # polling a condition for progress output, not synchronising
    return False


def _table(sandbox: Sandbox, have: Inventory, out: TextIO) -> None:
    want = cluster_inventory(sandbox)
    in_cluster = Counter(kind for kind, _, _ in want)
    in_backend = Counter(kind for kind, _, _ in have)
    out.write(f"\n  {'kind':<66} {'cluster':>7} {'backend':>7}  match\n")
    for kind in sorted(set(in_cluster) | set(in_backend)):
        same = all(have.get(k) == v for k, v in want.items() if k[0] == kind) and (
            in_cluster[kind] == in_backend[kind]
        )
        out.write(
            f"  {kind:<66} {in_cluster[kind]:>7} {in_backend[kind]:>7}  {'yes' if same else 'NO'}\n"
        )


async def _api(http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with http.request(method, url, headers=headers, **kwargs) as response:
        if response.status != 202:
            raise RuntimeError(f"backend API answered {response.status}: {await response.text()}")


async def run_demo(timeout: float = 60.0, out: TextIO | None = None) -> bool:
    import sys

    out = out or sys.stdout
    deadline = time.monotonic() + timeout
    with tempfile.TemporaryDirectory(prefix="clustersync-demo-") as tmp:
        sandbox = Sandbox()
        await sandbox.start()
        sandbox.load(demo_objects())
        kubeconfig = Path(tmp) / "kubeconfig"
        sandbox.write_kubeconfig(kubeconfig)
        store = await open_sqlite(f"sqlite:///{tmp}/backend.db")
        bus = MemoryBus()
        tokens = TokenTable(
            {AGENT_TOKEN: Identity(ACCOUNT, CLUSTER), ADMIN_TOKEN: Identity(admin=True)}
        )
        backend = Backend(bus, store, tokens)
        await backend.start()
        kube = await KubeClient.connect(str(kubeconfig))
        config = AgentConfig(
            server=backend.ws_url,
            account=ACCOUNT,
            cluster=CLUSTER,
            access_key=AGENT_TOKEN,
            resources=RESOURCES,
            rules=RULES,
            coalesce_quiet=0.2,
            coalesce_max_wait=1.0,
        )
        agent_task = asyncio.create_task(Agent(config, kube).run())
        try:
            out.write(f"sandbox cluster at {sandbox.url}, backend at {backend.url}\n")
            out.write("initial sync:\n")
            if not await _wait_converged(sandbox, store, deadline, out):
                _table(sandbox, await backend_inventory(store), out)
                return False
            out.write("changes in the cluster: scale web, delete feature-flags, add a configmap\n")
            sandbox.patch("apps", "v1", "deployments", "shop", "web", {"spec": {"replicas": 5}})
            sandbox.delete("", "v1", "configmaps", "shop", "feature-flags")
            sandbox.create(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "late-arrival", "namespace": "shop"},
                    "data": {"hello": "world"},
                }
            )
            out.write(
                "backend writes: push an OperatorCommand-like configmap, delete shop-settings\n"
            )
            async with aiohttp.ClientSession() as http:
                await _api(
                    http,
                    "POST",
                    f"{backend.url}/api/v1/objects",
                    json={
                        "account": ACCOUNT,
                        "cluster": CLUSTER,
                        "object": {
                            "apiVersion": "v1",
                            "kind": "ConfigMap",
                            "metadata": {"name": "from-backend", "namespace": "shop"},
                            "data": {"command": "scan"},
                        },
                    },
                )
                await _api(
                    http,
                    "DELETE",
                    f"{backend.url}/api/v1/objects",
                    params={
                        "account": ACCOUNT,
                        "cluster": CLUSTER,
                        "kind": "/v1/configmaps",
                        "namespace": "shop",
                        "name": "shop-settings",
                    },
                )
            while time.monotonic() < deadline and (
                sandbox.get("", "v1", "configmaps", "shop", "from-backend") is None
                or sandbox.get("", "v1", "configmaps", "shop", "shop-settings") is not None
            ):
                await asyncio.sleep(0.05)
            out.write("after the changes:\n")
            converged = await _wait_converged(sandbox, store, deadline, out)
            _table(sandbox, await backend_inventory(store), out)
            out.write(
                "\nresult: backend matches cluster\n" if converged else "\nresult: MISMATCH\n"
            )
            return converged
        finally:
            agent_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await agent_task
            await kube.close()
            await backend.stop()
            await bus.close()
            await store.close()
            await sandbox.stop()
