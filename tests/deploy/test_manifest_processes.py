"""The example deployment's containers, run here for real: each process starts with the exact
arguments, environment and mounted files the rendered manifests give it, against a real NATS
server, a real PostgreSQL and a sandbox cluster, and must answer its own probes.

Only what cannot exist outside a cluster is translated: service names become loopback addresses,
0.0.0.0:PORT becomes a free loopback port, mounted paths become files materialized from the
rendered ConfigMaps and Secrets, and the agent gets a kubeconfig for the sandbox instead of a
service account.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from .manifests import MountedPod, containers, materialize, one, render, volume_files

try:  # `python -m pytest` from the repo root puts the root on sys.path ...
    from tests.servers import RunningNats, free_port, start_nats
except ImportError:  # ... plain `pytest` puts tests/ itself there
    from servers import RunningNats, free_port, start_nats  # type: ignore[no-redef]

READY_TIMEOUT = 30.0


@dataclass
class Pod:
    """One container of the manifests, running as a local process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    ports: dict[int, int]  # containerPort -> local port
    probes: dict[str, tuple[str, int]]  # probe kind -> (path, containerPort)
    log: Path
    proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "clustersync", *self.argv, env=self.env,
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT)

    def describe(self) -> str:
        return f"{self.name} {self.argv}\n{self.log.read_text(errors='replace')[-4000:]}"

    async def wait_for_probes(self, http: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        pending = dict(self.probes)
        while pending:
            assert self.proc is not None and self.proc.returncode is None, (
                f"{self.name} exited\n{self.describe()}")
            for kind, (path, port) in list(pending.items()):
                url = f"http://127.0.0.1:{self.ports[port]}{path}"
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(url) as response:
                        if response.status == 200:
                            del pending[kind]
            if pending and time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: {sorted(pending)} not 200 in "
                                     f"{READY_TIMEOUT:.0f}s\n{self.describe()}")
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


@dataclass
class Translation:
    """Cluster names and addresses mapped to this machine."""

    nats: str
    postgres: str
    ports: dict[int, int] = field(default_factory=dict)

    def arg(self, value: str, pod_files: MountedPod) -> str:
        if value.startswith("nats://nats:"):
            return self.nats
        if value.startswith("postgresql://") and "@postgres:" in value:
            return self.postgres
        listen = re.fullmatch(r"0\.0\.0\.0:(\d+)", value)
        if listen:
            port = int(listen.group(1))
            self.ports.setdefault(port, free_port())
            return f"127.0.0.1:{self.ports[port]}"
        if value.startswith("/"):
            return str(pod_files.host(value))
        return value


def make_pod(docs: list[dict[str, Any]], deployment: dict[str, Any], container: dict[str, Any],
             where: Path, translate: Translation) -> Pod:
    files = materialize(docs, deployment, container, where)
    translate.ports = {}
    argv = [translate.arg(str(a), files) for a in container["args"]]
    env = {"PATH": os.environ["PATH"], "PYTHONUNBUFFERED": "1"}
    for var in container.get("env", []):
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            secret = volume_files(docs, {"secret": {"secretName": ref["name"]}}) or {}
            env[var["name"]] = secret[ref["key"]].decode()
        else:
            env[var["name"]] = var["value"]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    probes = {kind: (container[kind]["httpGet"]["path"],
                     named.get(container[kind]["httpGet"]["port"],
                               container[kind]["httpGet"]["port"]))
              for kind in ("livenessProbe", "readinessProbe")}
    return Pod(container["name"], argv, env, dict(translate.ports), probes,
               where / "output.log")


def agent_pod(docs: list[dict[str, Any]], where: Path, translate: Translation,
              server_url: str) -> Pod:
    """The agent's pod, its mounted config pointed at a local server (the token file too)."""
    deployment = one(docs, "Deployment", "clustersync-agent")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    pod = make_pod(docs, deployment, container, where / "agent", translate)
    config_file = Path(pod.argv[pod.argv.index("--config") + 1])
    config = yaml.safe_load(config_file.read_text())
    config["server"] = server_url
    mounted = materialize(docs, deployment, container, where / "agent-files")
    config["accessKeyFile"] = str(mounted.host(config["accessKeyFile"]))
    config_file.write_text(yaml.safe_dump(config))
    return pod


@pytest.fixture(scope="module")
def own_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNats]:
    # A server of its own: the backend creates its stream on cs.>, which the bus tests' streams
    # on the shared server would overlap.
    server = start_nats(tmp_path_factory.mktemp("deploy-nats"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def started() -> AsyncIterator[list[Pod]]:
    pods: list[Pod] = []
    try:
        yield pods
    finally:
        for pod in reversed(pods):
            await pod.stop()


@pytest.mark.timeout(180)
async def test_the_example_deployment_runs_and_answers_its_probes(
    own_nats: RunningNats, pg_database_url: str, tmp_path: Path, started: list[Pod],
) -> None:
    backend, agent = render("examples/backend"), render("examples/agent")
    translate = Translation(nats=own_nats.url, postgres=pg_database_url)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        by_name: dict[str, Pod] = {}
        for deployment, container in containers(backend):
            pod = make_pod(backend, deployment, container, tmp_path / container["name"], translate)
            by_name[pod.name] = pod
            started.append(pod)
            await pod.start()
        for pod in by_name.values():
            await pod.wait_for_probes(http)

        # The agent: a sandbox cluster stands in for the in-cluster API, the server pod above
        # for wss://clustersync.example.com/.
        kubeconfig = tmp_path / "sandbox.kubeconfig"
        sandbox = Pod("sandbox", ["sandbox", "--port", str(free_port()), "--kubeconfig",
                                  str(kubeconfig)], {"PATH": os.environ["PATH"]}, {}, {},
                      tmp_path / "sandbox.log")
        started.append(sandbox)
        await sandbox.start()
        server_port = next(iter(by_name["server"].ports.values()))
        pod = agent_pod(agent, tmp_path, translate, f"ws://127.0.0.1:{server_port}/")
        deadline = time.monotonic() + READY_TIMEOUT
        while not kubeconfig.exists():
            assert time.monotonic() < deadline, sandbox.describe()
            await asyncio.sleep(0.05)
        pod.argv += ["--kubeconfig", str(kubeconfig)]
        started.append(pod)
        await pod.start()
        # /readyz: connected to the server with the example token, and every kind listed.
        await pod.wait_for_probes(http)
