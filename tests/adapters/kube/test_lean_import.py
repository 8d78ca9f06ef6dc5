"""The agent's lean import of kubernetes_asyncio still loads kubeconfigs and talks to a server."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from clustersync.sandbox import Sandbox

from .test_informer import configmap

PROGRAM = """
import asyncio, sys
from clustersync.adapters.kube.lean import load_transport_only
assert load_transport_only()
from clustersync.adapters.kube.client import KubeClient
from clustersync.model import Kind

async def main():
    kube = await KubeClient.connect(sys.argv[1])
    try:
        items, _ = await kube.list(Kind("", "v1", "configmaps"), page_size=1)
        print(sorted(o["metadata"]["name"] for o in items))
    finally:
        await kube.close()
    # The generated API and models were never imported.
    print(any(".models.v1" in name or ".client.api." in name for name in sys.modules))
asyncio.run(main())
"""


async def test_lean_client_lists_through_a_kubeconfig(sandbox: Sandbox, kubeconfig: Path) -> None:
    for name in ("one", "two"):
        sandbox.create(configmap(name))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PROGRAM, str(kubeconfig),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert out.decode().split("\n")[:2] == ["['one', 'two']", "False"]


def test_does_nothing_once_the_package_is_imported() -> None:
    import kubernetes_asyncio.client  # noqa: F401  (the ordinary, whole package)

    from clustersync.adapters.kube.lean import load_transport_only

    assert load_transport_only() is False
    assert hasattr(sys.modules["kubernetes_asyncio.client"], "CoreV1Api")
