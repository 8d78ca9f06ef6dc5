"""End-to-end harness: a real backend, real sandbox clusters and real agents in one event loop.

Everything talks over loopback sockets with the production client libraries: the agent dials the
backend's websocket with aiohttp and reaches its sandbox cluster through kubernetes_asyncio. The
helpers here never sleep to synchronise, nor wait for traffic to pause: they poll a condition
(:func:`eventually`) and fail with a message saying what did not happen. "Nothing more will
happen" is a condition too (:meth:`World.quiesce`): the agent, its link and the backend each say
they have nothing left to do, and a barrier message proves the link has nothing in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import orjson
from prometheus_client import REGISTRY

from clustersync.adapters.bus import Bus
from clustersync.adapters.bus.memory import MemoryBus
from clustersync.adapters.kube.client import KubeClient
from clustersync.adapters.store import ObjectKey, StoredObject
from clustersync.adapters.store.sqlite import SqliteStore, open_sqlite
from clustersync.model import Kind, ObjectRef
from clustersync.model.identity import Identity, TokenTable
from clustersync.protocol.agent_types import Strategy
from clustersync.protocol.envelope import (
    Envelope,
    down_subject,
    encode_envelope,
    report_subject,
    up_subject,
    write_subject,
)
from clustersync.protocol.messages import Event, Ping, new_msg_id
from clustersync.protocol.shaping import NamespaceRules
from clustersync.runtime.agent import Agent
from clustersync.runtime.backend import Backend
from clustersync.runtime.config import AgentConfig, ResourceSpec
from clustersync.sandbox import Sandbox

try:  # `python -m pytest` from the repo root
    from tests.faults.checker import Checker, api_rows, row_differences, sandbox_lister
except ImportError:  # plain `pytest`: tests/ itself is on sys.path
    from faults.checker import (  # type: ignore[no-redef]
        Checker,
        api_rows,
        row_differences,
        sandbox_lister,
    )

T = TypeVar("T")

ACCOUNT = "acme"
CLUSTER_A = "cluster-a"
CLUSTER_B = "cluster-b"
TOKENS = {
    CLUSTER_A: "agent-token-cluster-a",
    CLUSTER_B: "agent-token-cluster-b",
}
ADMIN_TOKEN = "admin-token-0123456789"

NAMESPACES = Kind("", "v1", "namespaces")
PODS = Kind("", "v1", "pods")
CONFIGMAPS = Kind("", "v1", "configmaps")
DEPLOYMENTS = Kind("apps", "v1", "deployments")
PROFILES = Kind("spdx.softwarecomposition.kubescape.io", "v1beta1", "applicationprofiles")
STATEFULSETS = Kind("apps", "v1", "statefulsets")  # served by the sandbox, not synced

RESOURCES = (
    ResourceSpec(NAMESPACES, Strategy.PATCH),
    ResourceSpec(PODS, Strategy.PATCH),
    ResourceSpec(CONFIGMAPS, Strategy.COPY),
    ResourceSpec(DEPLOYMENTS, Strategy.PATCH),
    ResourceSpec(PROFILES, Strategy.PATCH),
)
RULES = NamespaceRules(operator_namespace="kubescape", exclude=frozenset({"kube-system"}))

COALESCE_QUIET = 0.05
COALESCE_MAX_WAIT = 0.3


# ---------------------------------------------------------------- waiting without sleeping


async def _evaluate(predicate: Callable[[], Any]) -> Any:
    value = predicate()
    if inspect.isawaitable(value):
        value = await value
    return value


async def eventually(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    what: str = "condition",
    interval: float = 0.02,
) -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy; return that value.

    Exceptions raised by the predicate count as "not yet"; the last one is reported on timeout.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    last_value: Any = None
    while True:
        try:
            last_value = await _evaluate(predicate)
            last_error = None
            if last_value:
                return last_value
        except AssertionError as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            detail = (
                f"; last error: {last_error!r}" if last_error else f"; last value: {last_value!r}"
            )
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}{detail}")
        await asyncio.sleep(interval)  # a short poll interval, not a synchronisation delay


# ---------------------------------------------------------------- metrics


def sample(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return float(value) if value is not None else 0.0


def messages(component: str, direction: str, event: str | None = None) -> float:
    """``clustersync_messages_total`` for one event, or summed over every event."""
    events = [event] if event else [e.name.lower() for e in Event]
    return sum(
        sample("clustersync_messages_total", component=component, direction=direction, event=e)
        for e in events
    )


def sent_but_acks(component: str) -> float:
    """Frames ``component`` sent, acks left out (a barrier's own ack is no news)."""
    return sum(
        messages(component, "out", e.name.lower()) for e in Event if e is not Event.ACK
    )


def bad_inputs(component: str, reason: str) -> float:
    return sample("clustersync_bad_input_total", component=component, reason=reason)


class Probe:
    """A process-global metric read as a delta from when the probe was made."""

    def __init__(self, read: Callable[[], float]) -> None:
        self._read = read
        self.baseline = read()

    @property
    def delta(self) -> float:
        return self._read() - self.baseline

    @classmethod
    def messages(cls, component: str, direction: str, event: str | None = None) -> Probe:
        return cls(lambda: messages(component, direction, event))

    @classmethod
    def bad_input(cls, component: str, reason: str) -> Probe:
        return cls(lambda: bad_inputs(component, reason))

    @classmethod
    def sample(cls, name: str, **labels: str) -> Probe:
        return cls(lambda: sample(name, **labels))


# ---------------------------------------------------------------- objects


def configmap(name: str, namespace: str = "shop", **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": dict(data) or {"key": "value"},
    }


def deployment(name: str, namespace: str = "shop", *, secret: str = "s3cr3t",
               replicas: int = 2) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "image": f"shop/{name}:1.0",
                            "env": [{"name": "DB_PASSWORD", "value": secret}],
                        }
                    ]
                },
            },
        },
    }


def pod(name: str, namespace: str = "shop") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"run": name}},
        "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]},
    }


def application_profile(name: str, namespace: str = "shop") -> dict[str, Any]:
    return {
        "apiVersion": "spdx.softwarecomposition.kubescape.io/v1beta1",
        "kind": "ApplicationProfile",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [{"name": "main", "execs": [{"path": "/bin/sh"}]}]},
    }


def seed_objects() -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kubescape"}},
        configmap("settings", currency="EUR"),
        configmap("flags", beta="on"),
        configmap("operator-config", "kubescape", mode="full"),
        configmap("kube-proxy", "kube-system", mode="iptables"),  # excluded namespace
        deployment("web"),
        deployment("api", secret="hunter2"),
        pod("toolbox"),
        application_profile("web-profile"),
    ]


# ---------------------------------------------------------------- the world


@dataclass
class Cluster:
    name: str
    token: str
    sandbox: Sandbox
    kubeconfig: Path
    kube: KubeClient
    agent: Agent | None = None
    task: asyncio.Task[None] | None = None
    agents_started: int = 0

    # sandbox shortcuts taking a Kind
    def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        return self.sandbox.get(kind.group, kind.version, kind.resource, namespace, name)

    def patch(self, kind: Kind, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.sandbox.patch(kind.group, kind.version, kind.resource, namespace, name, patch)

    def delete(self, kind: Kind, namespace: str, name: str) -> dict[str, Any]:
        return self.sandbox.delete(kind.group, kind.version, kind.resource, namespace, name)

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        return self.sandbox.create(obj)



@dataclass
class World:
    tmp_path: Path
    heartbeat: float = 20.0
    bus: MemoryBus = field(init=False)
    store: SqliteStore = field(init=False)
    backend: Backend = field(init=False)
    http: aiohttp.ClientSession = field(init=False)
    clusters: dict[str, Cluster] = field(default_factory=dict)
    checker: Checker = field(init=False)
    # Fault injection: what the backend sees instead of the bus (e.g. a reordering wrapper).
    bus_view: Callable[[MemoryBus], Bus] | None = None

    async def start(self) -> None:
        self.store = await open_sqlite(f"sqlite:///{self.tmp_path}/backend.db")
        self.bus = MemoryBus(redelivery_delay=0.05)
        tokens = {token: Identity(ACCOUNT, cluster) for cluster, token in TOKENS.items()}
        tokens[ADMIN_TOKEN] = Identity(admin=True)
        bus = self.bus_view(self.bus) if self.bus_view is not None else self.bus
        self.backend = Backend(bus, self.store, TokenTable(tokens), heartbeat=self.heartbeat)
        await self.backend.start()
        self.http = aiohttp.ClientSession()
        # The independent check of DESIGN section 2: rows through the API against the sandbox.
        self.checker = Checker(
            api_rows(self.http, lambda: self.backend.url, ADMIN_TOKEN, ACCOUNT),
            kinds=tuple(str(spec.kind) for spec in RESOURCES),
            excluded_namespaces=RULES.exclude,
        )

    async def stop(self) -> None:
        errors: list[BaseException] = []
        for cluster in list(self.clusters.values()):
            try:
                await self.stop_agent(cluster.name)
            except BaseException as exc:  # keep tearing down; report afterwards
                errors.append(exc)
        for cluster in self.clusters.values():
            await cluster.kube.close()
        await self.http.close()
        await self.backend.stop()
        await self.bus.close()
        await self.store.close()
        for cluster in self.clusters.values():
            await cluster.sandbox.stop()
        if errors:
            raise errors[0]

    # ------------------------------------------------------------ clusters and agents

    async def add_cluster(self, name: str, objects: list[dict[str, Any]] | None = None) -> Cluster:
        sandbox = Sandbox()
        await sandbox.start()
        try:
            sandbox.load(seed_objects() if objects is None else objects)
            kubeconfig = self.tmp_path / f"kubeconfig-{name}"
            sandbox.write_kubeconfig(kubeconfig)
            kube = await KubeClient.connect(str(kubeconfig))
        except BaseException:
            await sandbox.stop()
            raise
        cluster = Cluster(name, TOKENS[name], sandbox, kubeconfig, kube)
        self.clusters[name] = cluster
        self.checker.add_cluster(name, sandbox_lister(sandbox))
        return cluster

    def agent_config(self, cluster: str, **overrides: Any) -> AgentConfig:
        values: dict[str, Any] = {
            "server": self.backend.ws_url,
            "account": ACCOUNT,
            "cluster": cluster,
            "access_key": TOKENS[cluster],
            "resources": RESOURCES,
            "rules": RULES,
            "coalesce_quiet": COALESCE_QUIET,
            "coalesce_max_wait": COALESCE_MAX_WAIT,
        }
        values.update(overrides)
        return AgentConfig(**values)

    @contextlib.asynccontextmanager
    async def agent_with_data_dir(self, name: str, data_dir: Path) -> AsyncIterator[Agent]:
        """An agent keeping ``data_dir``, cancelled on the way out as SIGTERM stops one (it
        saves its files then). It is the cluster's agent meanwhile (what wait_synced watches)."""
        cluster = self.clusters[name]
        agent = Agent(self.agent_config(name, data_dir=str(data_dir)), cluster.kube)
        task = asyncio.create_task(agent.run())
        previous = cluster.agent, cluster.task
        cluster.agent, cluster.task = agent, task
        try:
            yield agent
        finally:
            cluster.agent, cluster.task = previous
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def start_agent(self, name: str, **overrides: Any) -> Agent:
        """A fresh agent (as after a process restart) running as a task; ``overrides`` change
        its configuration (see agent_config)."""
        cluster = self.clusters[name]
        assert cluster.task is None, f"agent of {name} already running"
        agent = Agent(self.agent_config(name, **overrides), cluster.kube)
        cluster.agent = agent
        cluster.task = asyncio.create_task(agent.run(), name=f"agent-{name}")
        cluster.agents_started += 1
        return agent

    async def stop_agent(self, name: str) -> None:
        """Cancel the agent task and wait for it; re-raise if it had died on its own."""
        cluster = self.clusters[name]
        task, cluster.task = cluster.task, None
        if task is None:
            return
        died = task.done() and not task.cancelled() and task.exception() is not None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if died:
            raise AssertionError(f"agent of {name} had died") from task.exception()

    async def restart_agent(self, name: str) -> Agent:
        await self.stop_agent(name)
        return self.start_agent(name)

    def connected(self, name: str) -> bool:
        return (ACCOUNT, name) in self.backend.server.connections

    async def wait_disconnected(self, name: str) -> None:
        await eventually(lambda: not self.connected(name), what=f"server to drop {name}")

    # ------------------------------------------------------------ the backend's view

    async def row(self, cluster: str, kind: Kind, namespace: str, name: str) -> StoredObject | None:
        return await self.store.get(ObjectKey(ACCOUNT, cluster, ObjectRef(kind, namespace, name)))

    async def backend_inventory(self, cluster: str) -> dict[ObjectRef, str]:
        return {row.key.ref: row.checksum for row in await self.store.list(ACCOUNT, cluster)}

    async def in_sync(self, cluster: str) -> bool:
        """The store holds exactly what the cluster serves (the independent checker's view)."""
        diverged, _ = await self.checker.divergences([cluster])
        return not diverged

    async def wait_synced(self, cluster: str, timeout: float = 15.0) -> None:
        """The store holds exactly the cluster, and nothing more is under way (:meth:`quiesce`)."""
        await self.checker.converged(timeout=timeout, clusters=[cluster])
        await self.quiesce(cluster, timeout=timeout)
        # Idle now, so nothing could still repair a divergence: check once more, without waiting.
        await self.checker.converged(timeout=0, clusters=[cluster])

    def busy(self, cluster: str) -> str:
        """What keeps ``cluster``'s agent or the backend's share of its work from being idle (""
        when nothing), read within one turn of the event loop so that the parts agree."""
        c = self.clusters[cluster]
        agent = c.agent
        if agent is None or c.task is None or c.task.done():
            return "no agent running"
        doing = agent.busy()
        if doing:
            return f"agent: {doing}"
        behind = []
        for kind, informer in agent.informers.items():
            if c.sandbox.registry.find(kind.group, kind.version, kind.resource) is None:
                continue  # a kind the cluster does not serve holds back only itself
            last = c.sandbox.last_change(kind.group, kind.version, kind.resource)
            if not informer.synced.is_set() or int(informer.resource_version or 0) < last:
                seen = informer.resource_version if informer.synced.is_set() else "listing"
                behind.append(f"{kind} at {seen or 'nothing'}, the cluster at {last}")
        if behind:
            return f"agent's watches behind the cluster: {'; '.join(behind)}"
        conn = self.backend.server.connections.get((ACCOUNT, cluster))
        if conn is None:
            return "server: the agent is not connected"
        if len(conn.unacked):
            return f"server: {len(conn.unacked)} deliveries not acknowledged by the agent"
        # The embedded bus counts what is published and not yet handled; another bus (NATS, or
        # Pulsar as a bus_view) is not looked into: the barrier of quiesce covers the link only.
        if not isinstance(self.backend.bus, MemoryBus):
            return ""
        queued = {
            subject: n
            for subject in (
                up_subject(ACCOUNT, cluster),  # every partition: they share the cluster's space
                down_subject(ACCOUNT, cluster),
                write_subject(ACCOUNT, cluster),
                report_subject(ACCOUNT, cluster),
            )
            if (n := self.backend.bus.queued(subject))
        }
        if queued:
            return f"bus: messages not yet handled {queued}"
        return ""

    def _idle(self, cluster: str) -> bool:
        doing = self.busy(cluster)
        assert not doing, doing  # eventually() reports the last one on timeout
        return True

    async def quiesce(self, cluster: str, timeout: float = 15.0) -> None:
        """Wait until nothing more happens for ``cluster`` unless something changes it: its agent
        has nothing to flush, send or handle and has finished its sync, its watches have seen
        the cluster's last change of every kind, the server awaits no ack from it and the bus
        holds nothing of the cluster (:meth:`busy`).

        Frames still on the wire are invisible to both ends, so a barrier follows: a Ping sent
        down the cluster's bus subject. Once the agent has read it and the server has its
        acknowledgement (clustersync servers number deliveries), every frame the agent sent
        before it has been read and published by the server, the connection being ordered;
        and if the agent sent nothing but that ack since it went idle, the idle state holds.
        A kubescape-style server (no acks) proves only the downward half.
        """
        deadline = time.monotonic() + timeout
        what = f"{cluster}'s agent, link and backend to be idle"
        while True:
            await eventually(lambda: self._idle(cluster),
                             timeout=max(0.0, deadline - time.monotonic()), what=what)
            sent = sent_but_acks("agent")
            pinged = Probe.messages("agent", "in", "ping")
            barrier = Envelope(ACCOUNT, cluster, Ping(msg_id=new_msg_id()))
            await self.backend.bus.publish(down_subject(ACCOUNT, cluster), encode_envelope(barrier))
            await eventually(
                lambda probe=pinged: probe.delta >= 1 and self._idle(cluster),
                timeout=max(0.0, deadline - time.monotonic()),
                what=f"the barrier Ping to reach {cluster}'s agent and {what}",
            )
            if sent_but_acks("agent") == sent:
                return

    async def matches_live(self, cluster: str, kind: Kind, namespace: str, name: str) -> bool:
        """The stored row matches the live object by uid, resourceVersion and content."""
        live = self.clusters[cluster].get(kind, namespace, name)
        row = await self.row(cluster, kind, namespace, name)
        if live is None or row is None:
            return False
        stored = {"uid": row.uid, "resourceVersion": row.resource_version,
                  "object": orjson.loads(row.object)}
        return not row_differences(live, stored)

    # ------------------------------------------------------------ backend API

    async def api(self, method: str, path: str, *, token: str = ADMIN_TOKEN,
                  expect: int = 202, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"}
        async with self.http.request(
            method, f"{self.backend.url}{path}", headers=headers, **kwargs
        ) as response:
            body = await response.read()
            assert response.status == expect, f"{method} {path}: {response.status} {body!r}"
            return orjson.loads(body) if body else None

    async def api_put(self, cluster: str, obj: dict[str, Any]) -> Any:
        return await self.api(
            "POST", "/api/v1/objects", json={"account": ACCOUNT, "cluster": cluster, "object": obj}
        )

    async def api_delete(self, cluster: str, kind: Kind, namespace: str, name: str) -> Any:
        return await self.api("DELETE", "/api/v1/objects", params={
            "account": ACCOUNT, "cluster": cluster, "kind": str(kind),
            "namespace": namespace, "name": name,
        })


async def wait_for(awaitable: Awaitable[T], timeout: float = 10.0) -> T:
    async with asyncio.timeout(timeout):  # not asyncio.wait_for: it can swallow cancellation
        return await awaitable
