"""Each process exports the metrics of its role only, and the fleet's per-cluster gauges."""

from __future__ import annotations

import aiohttp
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

import clustersync.adapters.logthrottle
import clustersync.runtime.backend
import clustersync.runtime.demo
import clustersync.runtime.ingest  # noqa: F401  (these declare their metrics on import)
from clustersync.adapters.metrics import METRIC_ROLES
from clustersync.runtime.cluster_metrics import CLUSTER_GAUGES
from clustersync.runtime.http import health_site
from clustersync.runtime.services import api_site

try:  # `python -m pytest` from the repo root
    from tests.runtime.harness import (
        ACCOUNT,
        CLUSTER_A,
        CONFIGMAPS,
        World,
        configmap,
        eventually,
    )
except ImportError:  # plain `pytest`: the test directory itself is on sys.path
    from harness import (  # type: ignore[no-redef]
        ACCOUNT,
        CLUSTER_A,
        CONFIGMAPS,
        World,
        configmap,
        eventually,
    )

Samples = dict[str, list[tuple[dict[str, str], float]]]


def test_every_family_of_ours_has_its_roles() -> None:
    ours = {f.name for f in REGISTRY.collect() if f.name.startswith("clustersync_")}
    assert ours - set(METRIC_ROLES) == set(), "assign these in adapters/metrics.METRIC_ROLES"
    assert set(METRIC_ROLES) - ours == set(), "METRIC_ROLES names metrics nobody declares"


async def scrape(http: aiohttp.ClientSession, url: str) -> Samples:
    async with http.get(f"{url}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {
        family.name: [(dict(s.labels), s.value) for s in family.samples]
        for family in text_string_to_metric_families(text)
    }


async def test_backend_agent_and_api_each_show_their_own(synced: World) -> None:
    world = synced
    await world.api_put(CLUSTER_A, configmap("via-api"))
    cluster = world.clusters[CLUSTER_A]
    await eventually(lambda: cluster.get(CONFIGMAPS, "shop", "via-api"), what="the write applied")
    await CLUSTER_GAUGES.refresh(world.store)  # what the ingester's periodic task does

    backend = await scrape(world.http, world.backend.url)
    assert "clustersync_connected_agents" in backend
    assert "clustersync_agent_reconnects" not in backend
    assert "clustersync_apply_seconds" not in backend
    here = {"account": ACCOUNT, "cluster": CLUSTER_A}
    assert (here, 1.0) in backend["clustersync_cluster_connected"]
    configmaps = {**here, "kind": "/v1/configmaps"}
    # Three seeded outside kube-system, plus the one written through the API.
    assert (configmaps, 4.0) in backend["clustersync_cluster_objects"]
    assert any(labels == here for labels, _ in backend["clustersync_cluster_sync_lag_seconds"])
    assert any(labels == here for labels, _ in
               backend["clustersync_cluster_last_message_timestamp_seconds"])
    lag_count = [v for labels, v in backend["clustersync_ingest_lag_seconds"]
                 if labels.get("le") is None and v > 0]
    assert lag_count, "no agent message measured for lag"

    agent_site = health_site(roles=["agent"])
    url = await agent_site.start()
    try:
        agent = await scrape(world.http, url)
    finally:
        await agent_site.stop()
    for name in ("clustersync_connected_agents", "clustersync_cluster_objects",
                 "clustersync_ingest_seconds", "clustersync_dead_letters"):
        assert name not in agent, name
    assert "clustersync_agent_reconnects" in agent
    puts = [v for labels, v in agent["clustersync_apply_seconds"]
            if labels.get("verb") == "put" and "le" not in labels]
    assert puts and max(puts) >= 1  # the write above was timed

    api = api_site(world.store, world.bus, world.backend.tokens)
    url = await api.start()
    try:
        only_api = await scrape(world.http, url)
    finally:
        await api.stop()
    for name in ("clustersync_connected_agents", "clustersync_cluster_objects",
                 "clustersync_agent_reconnects", "clustersync_messages"):
        assert name not in only_api, name
    assert "clustersync_bad_input" in only_api

