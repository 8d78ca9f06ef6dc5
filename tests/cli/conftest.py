"""A backend, a sandbox cluster and an agent, each a real ``clustersync`` process.

Every fixture stops what it started (SIGTERM, then SIGKILL), even when the test fails.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from .clitools import Process, free_port, http_ok, wait_until

ACCOUNT, CLUSTER = "acct-cli", "cluster-cli"
AGENT_TOKEN, ADMIN_TOKEN = "agent-token-for-cli-tests", "admin-token-for-cli-tests"


def write_tokens(path: Path) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "tokens": [
                    {"token": AGENT_TOKEN, "account": ACCOUNT, "cluster": CLUSTER},
                    {"token": ADMIN_TOKEN, "role": "admin"},
                ]
            }
        )
    )
    return path


def write_agent_config(
    path: Path, backend_url: str, kubeconfig: Path, access_key: str = AGENT_TOKEN
) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "server": "ws" + backend_url.removeprefix("http") + "/",
                "account": ACCOUNT,
                "cluster": CLUSTER,
                "accessKey": access_key,
                "kubeconfig": str(kubeconfig),
                "excludeNamespaces": "kube-system,kube-public",
                "coalesce": {"quiet": 0.05, "maxWait": 0.2},
                "heartbeat": 5,
                "resources": [
                    {"version": "v1", "resource": "configmaps", "strategy": "copy"},
                    {"version": "v1", "resource": "namespaces", "strategy": "patch"},
                ],
            }
        )
    )
    return path


@dataclass
class Backend:
    process: Process
    url: str
    db: Path


@dataclass
class Cluster:
    process: Process
    kubeconfig: Path
    port: int


async def start_backend(workdir: Path, name: str = "backend", port: int = 0) -> Backend:
    """``port`` 0 picks a free one; a restart passes the previous port and name (same db)."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    db = workdir / f"{name}.db"
    process = Process(
        name,
        [
            "backend",
            "--listen", f"127.0.0.1:{port}",
            "--db", f"sqlite:///{db}",
            "--tokens", str(write_tokens(workdir / "tokens.yaml")),
        ],
        workdir,
    )
    await process.start()
    try:
        await process.wait_for_output("serving on")

        async def healthy() -> bool:
            return await http_ok(f"{url}/healthz")

        await wait_until(healthy, "the backend's /healthz")
    except BaseException:
        await process.stop()
        raise
    return Backend(process, url, db)


async def start_sandbox(workdir: Path, seed: Path | None = None) -> Cluster:
    port = free_port()
    kubeconfig = workdir / "kubeconfig"
    args = ["sandbox", "--port", str(port), "--kubeconfig", str(kubeconfig)]
    if seed is not None:
        args += ["--seed", str(seed)]
    process = Process("sandbox", args, workdir)
    await process.start()
    try:
        # Printed after the kubeconfig is written, so both the port and the file are ready.
        await process.wait_for_output("sandbox serving on")
    except BaseException:
        await process.stop()
        raise
    return Cluster(process, kubeconfig, port)


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[Backend]:
    started = await start_backend(tmp_path)
    try:
        yield started
    finally:
        await started.process.stop()


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    started = await start_sandbox(tmp_path)
    try:
        yield started
    finally:
        await started.process.stop()


@pytest.fixture
async def agent(tmp_path: Path, backend: Backend, cluster: Cluster) -> AsyncIterator[Process]:
    config = write_agent_config(tmp_path / "agent.yaml", backend.url, cluster.kubeconfig)
    process = Process("agent", ["agent", "--config", str(config)], tmp_path)
    await process.start()
    try:
        yield process
    finally:
        await process.stop()
