"""The real kubectl against the sandbox, through the written kubeconfig."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import orjson
import pytest
from sandbox_helpers import WAIT

from clustersync.sandbox import Sandbox

KUBECTL = shutil.which("kubectl")

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed (not on PATH)"),
]

CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: default
  labels: {{app: demo}}
data:
  mode: "{mode}"
"""

PROFILE = """\
apiVersion: spdx.softwarecomposition.kubescape.io/v1beta1
kind: ApplicationProfile
metadata:
  name: web-profile
  namespace: default
spec:
  containers: []
"""


class Kubectl:
    def __init__(self, kubeconfig: Path, cache: Path) -> None:
        assert KUBECTL is not None
        self.base = [KUBECTL, "--kubeconfig", str(kubeconfig), "--cache-dir", str(cache)]

    async def __call__(self, *args: str) -> str:
        # A subprocess keeps the event loop (and so the server) running.
        proc = await asyncio.create_subprocess_exec(
            *self.base,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
        assert proc.returncode == 0, f"kubectl {' '.join(args)} failed: {err.decode()}"
        return out.decode()


@pytest.fixture
def kubectl(kubeconfig: Path, tmp_path: Path) -> Kubectl:
    return Kubectl(kubeconfig, tmp_path / "kube-cache")


async def test_kubectl_workflow(kubectl: Kubectl, sandbox: Sandbox, tmp_path: Path) -> None:
    manifest = tmp_path / "cm.yaml"
    manifest.write_text(CONFIGMAP.format(mode="create"))
    assert "created" in await kubectl("create", "-f", str(manifest))
    stored = sandbox.get("", "v1", "configmaps", "default", "settings")
    assert stored is not None and stored["data"] == {"mode": "create"}
    await kubectl("delete", "configmap", "settings")

    manifest.write_text(CONFIGMAP.format(mode="one"))
    assert "created" in await kubectl("apply", "-f", str(manifest))
    manifest.write_text(CONFIGMAP.format(mode="two"))
    assert "configured" in await kubectl("apply", "-f", str(manifest))
    obj = orjson.loads(await kubectl("get", "cm", "settings", "-o", "json"))
    assert obj["data"] == {"mode": "two"} and obj["metadata"]["labels"] == {"app": "demo"}
    listing = orjson.loads(await kubectl("get", "cm", "-o", "json"))
    assert [i["metadata"]["name"] for i in listing["items"]] == ["settings"]

    sandbox.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "sys-pod", "namespace": "kube-system"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        }
    )
    pods = await kubectl("get", "pods", "-A")
    header, row = pods.splitlines()[:2]
    assert header.split()[:3] == ["NAMESPACE", "NAME", "AGE"]
    assert row.split()[:2] == ["kube-system", "sys-pod"]

    profile = tmp_path / "profile.yaml"
    profile.write_text(PROFILE)
    await kubectl("create", "-f", str(profile))
    profiles = await kubectl("get", "applicationprofiles", "-n", "default")
    assert "web-profile" in profiles

    # Rendered client-side, then applied: kubectl 1.36 and later send `create deployment`'s body
    # as protobuf, which the sandbox refuses with 415 (tested below); apply always sends JSON.
    deployment = tmp_path / "deployment.yaml"
    rendered = await kubectl(
        "create", "deployment", "web", "--image=nginx", "--dry-run=client", "-o", "yaml"
    )
    deployment.write_text(rendered)
    await kubectl("apply", "-f", str(deployment))
    assert "scaled" in await kubectl("scale", "deployment", "web", "--replicas=3")
    deploy = sandbox.get("apps", "v1", "deployments", "default", "web")
    assert deploy is not None and deploy["spec"]["replicas"] == 3
    assert "deployment.apps/web" in await kubectl("get", "all")

    assert "deleted" in await kubectl("delete", "-f", str(manifest))
    assert sandbox.get("", "v1", "configmaps", "default", "settings") is None


async def test_kubectl_watch(kubeconfig: Path, sandbox: Sandbox, tmp_path: Path) -> None:
    assert KUBECTL is not None
    sandbox.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "watched", "namespace": "default"},
            "data": {"v": "0"},
        }
    )
    proc = await asyncio.create_subprocess_exec(
        KUBECTL,
        "--kubeconfig",
        str(kubeconfig),
        "--cache-dir",
        str(tmp_path / "cache"),
        "get",
        "cm",
        "--watch",
        "-o",
        "json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        decoder_buffer = ""

        async def next_object() -> dict[str, object]:
            # kubectl prints pretty JSON objects back to back; a line that is
            # exactly "}" closes one.
            nonlocal decoder_buffer
            while True:
                async with asyncio.timeout(WAIT):
                    line = await proc.stdout.readline()  # type: ignore[union-attr]
                assert line, "kubectl --watch ended early"
                decoder_buffer += line.decode()
                if line.rstrip(b"\n") == b"}":
                    obj: dict[str, object] = orjson.loads(decoder_buffer)
                    decoder_buffer = ""
                    return obj

        first = await next_object()
        assert first["data"] == {"v": "0"}
        sandbox.patch("", "v1", "configmaps", "default", "watched", {"data": {"v": "1"}})
        second = await next_object()
        assert second["data"] == {"v": "1"}
    finally:
        proc.kill()
        await proc.wait()
