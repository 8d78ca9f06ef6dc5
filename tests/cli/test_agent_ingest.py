"""``clustersync agent`` with kubescape's ``httpEndpoint``: a node-agent style POST to the agent
lands in the backend's store, end to end through real processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

from .clitools import Process, free_port, wait_until
from .conftest import ACCOUNT, ADMIN_TOKEN, CLUSTER, Backend, Cluster, write_agent_config

ALERTS = "kubescape.io/v1/runtimealerts"
PROFILES = "kubescape.io/v1/nodeprofiles"


def runtime_alert(name: str) -> dict[str, Any]:
    # The shape kubescape's node-agent posts: the plural resource as "kind".
    return {
        "apiVersion": "kubescape.io/v1",
        "kind": "runtimealerts",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"ruleID": "R0001", "message": "Unexpected process launched: <sh> & co"},
    }


def node_profile(name: str, cpu: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubescape.io/v1",
        "kind": "nodeprofiles",
        "metadata": {"name": name},
        "spec": {"cpu": cpu, "labels": {"zone": "a"}},
    }


async def stored(backend: Backend, kind: str = ALERTS) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    params = {"account": ACCOUNT, "cluster": CLUSTER, "kind": kind, "full": "1"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{backend.url}/api/v1/objects", headers=headers, params=params) as response,
    ):
        assert response.status == 200
        items: list[dict[str, Any]] = (await response.json())["items"]
        return items


async def post(url: str, body: bytes, method: str = "POST") -> int:
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, url, data=body) as response,
        ):
            return response.status
    except aiohttp.ClientError:
        return 0


async def test_a_posted_object_lands_in_the_backend(
    tmp_path: Path, backend: Backend, cluster: Cluster
) -> None:
    config_path = write_agent_config(tmp_path / "agent.yaml", backend.url, cluster.kubeconfig)
    config = yaml.safe_load(config_path.read_text())
    port = free_port()
    config["httpEndpoint"] = {
        "serverPort": str(port),
        "host": "127.0.0.1",
        "resources": [
            {"group": "kubescape.io", "version": "v1", "resource": "runtimealerts",
             "strategy": "copy"},
            {"group": "kubescape.io", "version": "v1", "resource": "nodeprofiles",
             "strategy": "patch"},
        ],
    }
    config_path.write_text(yaml.safe_dump(config))
    agent = Process("agent", ["agent", "--config", str(config_path)], tmp_path)
    await agent.start()
    try:
        url = f"http://127.0.0.1:{port}/apis/v1/{ALERTS}"
        body = orjson.dumps(runtime_alert("alert-1"))

        async def accepted() -> bool:
            return await post(url, body) == 202

        await wait_until(accepted, "the agent's ingest endpoint to accept the alert")

        async def landed() -> bool:
            return len(await stored(backend)) == 1

        await wait_until(landed, "the alert in the backend's store")
        (row,) = await stored(backend)
        assert (row["namespace"], row["name"]) == ("default", "alert-1")
        assert row["object"] == runtime_alert("alert-1")  # unshaped, as posted

        # PUT (patch strategy): the whole body is the patch; a second PUT updates the object.
        profiles = f"http://127.0.0.1:{port}/apis/v1/{PROFILES}"
        for cpu in (2, 3):
            body = orjson.dumps(node_profile("node-1", cpu))
            assert await post(profiles, body, "PUT") == 202

            async def updated(cpu: int = cpu) -> bool:
                rows = await stored(backend, PROFILES)
                return len(rows) == 1 and rows[0]["object"] == node_profile("node-1", cpu)

            await wait_until(updated, f"the node profile with cpu {cpu} in the backend's store")

        # Bad input is answered and the agent carries on.
        assert await post(url, b"{not json") == 400
        assert await post(f"http://127.0.0.1:{port}/apis/v1/kubescape.io/v1/other", body) == 404
        assert agent.returncode is None
    finally:
        await agent.stop()
