"""The agent's X-SYNCHRONIZER-VERSION: kubescape servers send reconciliation batches only to a
semantic version (vX.Y.Z, at least v0.0.57), so ours is the package version in that form."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from clustersync.link.client import Credentials, PermanentLinkError, dial
from clustersync.runtime.config import ConfigError, parse_agent_config

# The one place the package version is written (pyproject.toml reads it from there too).
PACKAGE_INIT = Path(__file__).resolve().parents[2] / "src" / "clustersync" / "__init__.py"
PACKAGE_VERSION = re.search(r'^__version__ = "([^"]+)"$', PACKAGE_INIT.read_text(), re.M)[1]


def config_doc(**extra: Any) -> dict[str, Any]:
    return {
        "server": "ws://127.0.0.1:1/",
        "account": "acct",
        "cluster": "clus",
        "accessKey": "agent-key-123",
        "resources": [{"version": "v1", "resource": "configmaps"}],
        **extra,
    }


@pytest.fixture
async def recording_server() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """A server that records each upgrade request's headers, then refuses it with 401."""
    seen: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.headers))
        raise web.HTTPUnauthorized()

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"ws://127.0.0.1:{port}/", seen
    finally:
        await runner.cleanup()


def test_the_default_is_the_package_version_as_semver() -> None:
    assert parse_agent_config(config_doc()).version == f"v{PACKAGE_VERSION}"
    assert Credentials("k", "a", "c").synchronizer_version == f"v{PACKAGE_VERSION}"


@pytest.mark.parametrize("version", ["v0.0.57", "v1.2.3-rc.1", "v2.0.0+build.7"])
def test_a_semver_agent_version_is_configurable(version: str) -> None:
    assert parse_agent_config(config_doc(agentVersion=version)).version == version


@pytest.mark.parametrize("version", ["clustersync-0.1.0", "1.2.3", "v1.2", "v01.2.3", "", 7])
def test_a_version_a_kubescape_server_cannot_read_is_refused(version: Any) -> None:
    with pytest.raises(ConfigError, match="agentVersion must be a semantic version"):
        parse_agent_config(config_doc(agentVersion=version), "agent.yaml")


async def test_the_configured_version_is_the_header_on_the_wire(
    recording_server: tuple[str, list[dict[str, str]]],
) -> None:
    url, seen = recording_server
    config = parse_agent_config(config_doc(server=url, agentVersion="v3.4.5"))
    creds = Credentials(
        config.access_key, config.account, config.cluster, synchronizer_version=config.version
    )
    async with aiohttp.ClientSession() as http:
        with pytest.raises(PermanentLinkError):
            await dial(http, url, creds, heartbeat=20.0)
        first = len(seen)  # a refused dial may ask once more, to read the server's reason
        with pytest.raises(PermanentLinkError):
            await dial(http, url, Credentials("k", "a", "c"), heartbeat=20.0)
    assert first >= 1 and len(seen) > first
    assert {headers["X-SYNCHRONIZER-VERSION"] for headers in seen[:first]} == {"v3.4.5"}
    assert {headers["X-SYNCHRONIZER-VERSION"] for headers in seen[first:]} == {
        f"v{PACKAGE_VERSION}"
    }
