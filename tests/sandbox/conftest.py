"""Fixtures for the sandbox API server tests.

Every HTTP call goes through kubernetes_asyncio's ApiClient configured from
the kubeconfig the sandbox writes, so auth/TLS set-up is exercised as a real
consumer would use it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client, config

from clustersync.sandbox import Sandbox


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    sb = Sandbox()
    sb.bookmark_interval = 0.05
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
async def api(kubeconfig: Path) -> AsyncIterator[client.ApiClient]:
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    async with client.ApiClient(configuration=cfg) as api_client:
        yield api_client
