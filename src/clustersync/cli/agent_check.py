"""``clustersync agent --check``: is this agent ready to run? A line per check, then the exit.

The configuration was loaded before (a bad one exits 2 there). Then: the Kubernetes API answers,
every configured resource can be listed, and the server accepts the websocket with this token.
The server check connects once as the agent would, so a running agent of the same cluster is
replaced for a moment (it reconnects by itself).
"""

from __future__ import annotations

import aiohttp

from clustersync.adapters.kube import KubeError
from clustersync.cli.common import CommandError
from clustersync.link.client import (
    Credentials,
    LinkError,
    PermanentLinkError,
    dial,
    tls_context,
)
from clustersync.runtime.config import AgentConfig


def _line(ok: bool, what: str, detail: str) -> bool:
    print(f"{'ok  ' if ok else 'FAIL'}  {what}: {detail}", flush=True)
    return ok


async def _check_cluster(config: AgentConfig, kubeconfig: str | None) -> bool:
    from clustersync.adapters.kube.client import KubeClient

    try:
        kube = await KubeClient.connect(kubeconfig)
    except KubeError as exc:
        return _line(False, "kubernetes", str(exc))
    try:
        try:
            version = await kube.server_version()
        except KubeError as exc:
            return _line(False, "kubernetes", f"cannot reach the API server: {exc}")
        _line(True, "kubernetes", f"API server {version}")
        good = True
        for spec in config.resources:
            try:
                items, _ = await kube.list(spec.kind)
            except KubeError as exc:
                good = _line(False, f"list {spec.kind}", str(exc)) and good
            else:
                _line(True, f"list {spec.kind}", f"{len(items)} objects")
        return good
    finally:
        await kube.close()


async def _check_server(config: AgentConfig) -> bool:
    creds = Credentials(
        config.access_key, config.account, config.cluster, synchronizer_version=config.version
    )
    async with aiohttp.ClientSession() as http:
        try:
            ws = await dial(http, config.server, creds, config.heartbeat,
                            tls=tls_context(config.ca_file), compress=config.compress)  # fmt: skip
        except PermanentLinkError as exc:
            return _line(False, "server", f"{config.server} refused the token: {exc}")
        except LinkError as exc:
            return _line(False, "server", str(exc))
        await ws.close()
    return _line(True, "server", f"{config.server} accepted {config.account}/{config.cluster}")


async def run_checks(config: AgentConfig, kubeconfig: str | None) -> None:
    """Raise CommandError (exit 1) if any check failed; print a line for each."""
    _line(True, "config", f"{config.account}/{config.cluster}, {len(config.resources)} resources")
    cluster_ok = await _check_cluster(config, kubeconfig)
    server_ok = await _check_server(config)
    if not (cluster_ok and server_ok):
        raise CommandError("agent checks failed (see the FAIL lines above)")
