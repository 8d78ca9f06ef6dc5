"""An agent configured for a custom resource whose CRD is installed only later picks it up."""

from __future__ import annotations

from pathlib import Path

try:  # `python -m pytest` from the repo root
    from tests.runtime.harness import CLUSTER_A, RESOURCES, World, configmap, eventually
except ImportError:  # plain `pytest`: the test directory itself is on sys.path
    from harness import (  # type: ignore[no-redef]
        CLUSTER_A,
        RESOURCES,
        World,
        configmap,
        eventually,
    )

from clustersync.model import Kind
from clustersync.protocol.agent_types import Strategy
from clustersync.runtime.config import ResourceSpec

WIDGETS = Kind("example.com", "v1", "widgets")

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [{"name": "v1", "served": True, "storage": True}],
    },
}


async def test_a_crd_installed_after_the_agent_started_is_synced(
    world: World, tmp_path: Path
) -> None:
    cluster = await world.add_cluster(
        CLUSTER_A,
        [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
         configmap("settings")],
    )  # fmt: skip
    agent = world.start_agent(
        CLUSTER_A, resources=(*RESOURCES, ResourceSpec(WIDGETS, Strategy.COPY))
    )
    settings = await eventually(
        lambda: world.row(CLUSTER_A, Kind("", "v1", "configmaps"), "shop", "settings"),
        what="the other kinds to sync while the CRD is missing",
    )
    assert settings is not None

    cluster.create(WIDGET_CRD)
    cluster.create(
        {"apiVersion": "example.com/v1", "kind": "Widget",
         "metadata": {"name": "gear", "namespace": "shop"}, "spec": {"size": 3}}
    )  # fmt: skip
    await eventually(
        lambda: world.matches_live(CLUSTER_A, WIDGETS, "shop", "gear"),
        timeout=40.0,
        what="the widget to reach the backend once its CRD exists",
    )
    assert agent.ready()
