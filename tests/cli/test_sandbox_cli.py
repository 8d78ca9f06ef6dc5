"""``clustersync sandbox --seed FILE``: seeding the sandbox cluster, and refusing bad seeds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clustersync.adapters.kube.client import KubeClient
from clustersync.model import Kind

from .clitools import free_port, run_cli
from .conftest import start_sandbox

SEED = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: shop
data:
  color: blue
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {app: web}
spec:
  replicas: 3
---
# an empty document is skipped
---
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: ConfigMap
    metadata: {name: from-list, namespace: default}
  - apiVersion: v1
    kind: Namespace
    metadata: {name: extra}
---
apiVersion: v1
kind: Node
metadata: {name: node-1}
"""


async def test_seed_objects_are_served(tmp_path: Path) -> None:
    seed = tmp_path / "seed.yaml"
    seed.write_text(SEED)
    cluster = await start_sandbox(tmp_path, seed)
    try:
        kube = await KubeClient.connect(str(cluster.kubeconfig))
        try:
            configmaps, _ = await kube.list(Kind("", "v1", "configmaps"))
            deployments, _ = await kube.list(Kind("apps", "v1", "deployments"))
            namespaces, _ = await kube.list(Kind("", "v1", "namespaces"))
            nodes, _ = await kube.list(Kind("", "v1", "nodes"))
        finally:
            await kube.close()
        assert sorted((c["metadata"]["namespace"], c["metadata"]["name"]) for c in configmaps) == [
            ("default", "from-list"),
            ("shop", "settings"),
        ]
        settings = next(c for c in configmaps if c["metadata"]["name"] == "settings")
        assert settings["data"] == {"color": "blue"}
        assert [(d["metadata"]["name"], d["spec"]["replicas"]) for d in deployments] == [
            ("web", 3)
        ]
        # "shop" did not exist: it was created for the seed objects that live in it.
        assert {n["metadata"]["name"] for n in namespaces} >= {
            "default", "kube-system", "kube-public", "shop", "extra"
        }
        assert [n["metadata"]["name"] for n in nodes] == ["node-1"]
        assert cluster.process.returncode is None
    finally:
        await cluster.process.stop()


async def test_json_seed(tmp_path: Path) -> None:
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps([
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "j", "namespace": "default"}}
    ]))
    cluster = await start_sandbox(tmp_path, seed)
    try:
        kube = await KubeClient.connect(str(cluster.kubeconfig))
        try:
            items, _ = await kube.list(Kind("", "v1", "configmaps"))
        finally:
            await kube.close()
        assert [c["metadata"]["name"] for c in items] == ["j"]
    finally:
        await cluster.process.stop()


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("bad.yaml", "kind: [unclosed\n", "invalid YAML"),
        ("bad.json", "{\"kind\": ", "invalid JSON"),
        ("nokind.yaml", "apiVersion: v1\nmetadata: {name: x}\n", "missing kind"),
        ("noname.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n", "metadata.name"),
        ("scalar.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n42\n",
         "object 2"),
        ("unknown.yaml", "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n",
         "Widget"),
        ("dup.yaml",
         "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: default}\n---\n"
         "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: default}\n",
         "already exists"),
    ],
)
async def test_bad_seed_exits_2_with_one_line(
    tmp_path: Path, name: str, content: str, needle: str
) -> None:
    seed = tmp_path / name
    seed.write_text(content)
    result = await run_cli("sandbox", "--port", str(free_port()),
                           "--kubeconfig", str(tmp_path / "kubeconfig"), "--seed", str(seed))
    assert result.code == 2, result
    line = result.error_line()
    assert needle in line, line
    assert name in line, line
    assert result.stdout == ""  # it never announced itself as serving


async def test_missing_seed_file(tmp_path: Path) -> None:
    seed = tmp_path / "absent.yaml"
    result = await run_cli("sandbox", "--port", str(free_port()),
                           "--kubeconfig", str(tmp_path / "kubeconfig"), "--seed", str(seed))
    assert result.code == 2, result
    line = result.error_line()
    assert "cannot read" in line and "absent.yaml" in line
