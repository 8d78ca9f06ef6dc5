"""Our server on a Pulsar bus in kubescape's layout: a kubescape agent's connect produces
ServerConnected and a ConnectedClients report carrying what the agent said of itself, as a Go
server produces them (the Pulsar broker is the in-memory stand-in: none can run here)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from clustersync.adapters.bus.pulsar import PulsarBus
from clustersync.adapters.bus.pulsar_layout import KubescapeLayout
from clustersync.model.identity import Identity, TokenTable
from clustersync.runtime.server import SyncServer, connect_info
from clustersync.runtime.services import server_site

try:
    from tests.contracts import load_contract
except ImportError:  # plain `pytest`: tests/ itself is on sys.path
    from contracts import load_contract  # type: ignore[no-redef]

_standin = load_contract(
    "pulsar_standin", Path(__file__).parents[1] / "adapters" / "bus" / "pulsar_standin.py"
)
TOPIC = "persistent://armo/kubescape/synchronizer"
ACCOUNT, CLUSTER, TOKEN = "acct-1", "prod-eu", "agent-token-prod-eu"
HEADERS = {
    "X-API-KEY": TOKEN,
    "X-API-ACCOUNT": ACCOUNT,
    "X-API-CLUSTER": CLUSTER,
    "X-HELM-VERSION": "1.29.7",
    "X-SYNCHRONIZER-VERSION": "v0.0.103",
    "X-GIT-VERSION": "v1.31.4-eks-2d98532",
    "X-CLOUD-PROVIDER": "aws",
}


@pytest.fixture
async def served() -> AsyncIterator[tuple[Any, str]]:
    broker = _standin.FakeBroker()
    bus = PulsarBus(_standin.FakeClient(broker), layout=KubescapeLayout(TOPIC))
    await bus.start()
    server = SyncServer(bus, TokenTable({TOKEN: Identity(ACCOUNT, CLUSTER)}), reconcile_interval=0)
    site = server_site(server)
    url = await site.start("127.0.0.1", 0)
    try:
        yield broker, "ws" + url.removeprefix("http") + "/"
    finally:
        await site.stop()
        await bus.close()


def reports(broker: Any, event: str) -> list[Any]:
    return [e for e in broker.entries(TOPIC) if e.properties.get("event") == event]


async def test_connect_reports_the_agents_versions(served: tuple[Any, str]) -> None:
    broker, url = served
    async with aiohttp.ClientSession() as http, http.ws_connect(url, headers=HEADERS):
        async with asyncio.timeout(10):
            while not reports(broker, "ConnectedClients"):
                await asyncio.sleep(0.01)
    (connected,) = reports(broker, "ServerConnected")
    (clients,) = reports(broker, "ConnectedClients")
    assert connected.key == clients.key == "SynchronizerServerProducer"
    report = orjson.loads(clients.data)
    (client,) = report["clients"]
    assert client | {"connectionId": "", "connectionTime": ""} == {
        "cluster": CLUSTER,
        "account": ACCOUNT,
        "synchronizerVersion": "v0.0.103",
        "helmVersion": "1.29.7",
        "connectionId": "",
        "connectionTime": "",
        "gitVersion": "v1.31.4-eks-2d98532",
        "cloudProvider": "aws",
    }
    assert client["connectionId"] and client["connectionTime"].endswith("Z")
    # The ServerConnected payload is Go's, with nothing of the report in it.
    assert set(orjson.loads(connected.data)) == {"cluster", "account", "depth", "msgId"}


def test_connect_info_bounds_what_it_copies_and_names_the_connection() -> None:
    info = dict(connect_info({"X-HELM-VERSION": "x" * 1000}))
    assert len(info["helmVersion"]) == 256  # a header is no place for a novel
    assert info["synchronizerVersion"] == info["gitVersion"] == info["cloudProvider"] == ""
    again = dict(connect_info({}))
    assert info["connectionId"] != again["connectionId"]
