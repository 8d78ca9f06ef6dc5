"""KubeClient and Informer against a misbehaving API server (a real aiohttp server on loopback).

Whatever the server sends, the client raises KubeError (never a JSON decoding error), and an
informer treats it as transient instead of dying and taking the agent with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from clustersync.adapters.kube import KubeError
from clustersync.adapters.kube.client import KubeClient
from clustersync.adapters.kube.informer import Informer
from clustersync.model import Kind
from clustersync.protocol.backoff import Backoff

CONFIGMAPS = Kind("", "v1", "configmaps")
WAIT = 10.0
HTML = b"<html>\n<body>\nPlease log in\n</body>\n</html>\n"
DISCOVERY = {
    "kind": "APIResourceList",
    "groupVersion": "v1",
    "resources": [{"name": "configmaps", "kind": "ConfigMap", "namespaced": True,
                   "verbs": ["list", "watch"]}],
}


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@dataclass
class Faulty:
    url: str
    watch_body: bytes = b'{"type":"ADDED","object":{"metadata":{"name":"cut'  # cut off
    list_body: bytes = b'{"kind":"ConfigMapList","metadata":{"resourceVersion":"5"},"items":[]}'
    watches: int = 0
    lists: int = 0


@pytest.fixture
async def faulty(tmp_path: Path) -> AsyncIterator[Faulty]:
    state = Faulty("")

    async def version(request: web.Request) -> web.Response:
        return web.Response(body=HTML, content_type="text/html")

    async def discovery(request: web.Request) -> web.Response:
        return web.json_response(DISCOVERY)

    async def configmaps(request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") == "true":
            state.watches += 1
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
            await response.write(state.watch_body)
            await response.write_eof()
            return response
        state.lists += 1
        return web.Response(body=state.list_body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/version", version)
    app.router.add_get("/api/v1", discovery)
    app.router.add_get("/api/v1/configmaps", configmaps)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    state.url = f"http://{host}:{port}"
    try:
        yield state
    finally:
        await runner.cleanup()


@pytest.fixture
async def kube(faulty: Faulty, tmp_path: Path) -> AsyncIterator[KubeClient]:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "f",
        "clusters": [{"name": "f", "cluster": {"server": faulty.url}}],
        "users": [{"name": "f", "user": {"token": "faulty-token"}}],
        "contexts": [{"name": "f", "context": {"cluster": "f", "user": "f"}}],
    }))
    client = await KubeClient.connect(str(path))
    try:
        yield client
    finally:
        await client.close()


async def test_html_instead_of_json_is_a_kube_error(kube: KubeClient) -> None:
    with pytest.raises(KubeError, match="not JSON"):
        await kube.server_version()


async def test_list_that_is_not_json(faulty: Faulty, kube: KubeClient) -> None:
    faulty.list_body = HTML
    with pytest.raises(KubeError, match="not JSON"):
        await kube.list(CONFIGMAPS)


@pytest.mark.parametrize(
    "body",
    [
        b'{"type":"ADDED","object":{"metadata":{"name":"cut',  # connection cut mid-event
        b"<html>oops</html>\n",
        b'["not", "an", "event"]\n',
        b'{"type":"ADDED","object":"a string"}\n',
    ],
)
async def test_broken_watch_stream_is_a_kube_error(
    faulty: Faulty, kube: KubeClient, body: bytes
) -> None:
    faulty.watch_body = body
    with pytest.raises(KubeError):
        async with asyncio.timeout(WAIT):
            async with contextlib.aclosing(kube.watch(CONFIGMAPS, "5")) as stream:
                async for _ in stream:
                    pass


async def test_informer_survives_a_broken_watch_stream(
    faulty: Faulty, kube: KubeClient
) -> None:
    events: list[tuple[str, Any]] = []
    informer = Informer(
        kube, CONFIGMAPS, lambda t, o: events.append((t, o)),
        backoff=Backoff(initial=0.01, multiplier=1.0, ceiling=0.01, jitter=0.0),
    )
    task = asyncio.create_task(informer.run())
    try:
        await wait_until(lambda: faulty.watches >= 3, "three watch attempts")
        assert not task.done(), task
        assert informer.synced.is_set()
        assert informer.lists == 1  # a transient error resumes the watch, it does not relist
        assert informer.resource_version == "5"
        assert events == []
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
