"""A real sandbox API server on loopback and a KubeClient connected to it through a kubeconfig."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clustersync.adapters.kube.client import KubeClient
from clustersync.sandbox import Sandbox


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    sb = Sandbox()
    sb.bookmark_interval = 0.2
    await sb.start()
    try:
        yield sb
    finally:
        await sb.stop()


@pytest.fixture
def kubeconfig(sandbox: Sandbox, tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    sandbox.write_kubeconfig(path)
    return path


@pytest.fixture
async def kube(kubeconfig: Path) -> AsyncIterator[KubeClient]:
    client = await KubeClient.connect(str(kubeconfig))
    try:
        yield client
    finally:
        await client.close()
