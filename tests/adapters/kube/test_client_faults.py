"""KubeClient and Informer against a misbehaving API server (a real aiohttp server on loopback).

Whatever the server sends, the client either reports one event as Unreadable and reads on, or
raises KubeError (never a JSON decoding error), and an informer skips the one object or treats
the error as transient, instead of dying and taking the agent with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from clustersync.adapters.kube import KubeError
from clustersync.adapters.kube.base import Unreadable, WatchItem
from clustersync.adapters.kube.client import KubeClient
from clustersync.adapters.kube.informer import Informer, SkippedObject
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
    # Set: only the first watch gets ``watch_body``; later ones stay open, silent, until the end.
    first_watch_only: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)


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
            if state.first_watch_only and state.watches > 1:
                await state.done.wait()
            else:
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
        state.done.set()
        await runner.cleanup()


@pytest.fixture
def kubeconfig_for_faulty(faulty: Faulty, tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "f",
        "clusters": [{"name": "f", "cluster": {"server": faulty.url}}],
        "users": [{"name": "f", "user": {"token": "faulty-token"}}],
        "contexts": [{"name": "f", "context": {"cluster": "f", "user": "f"}}],
    }))
    return path


@pytest.fixture
async def kube(kubeconfig_for_faulty: Path) -> AsyncIterator[KubeClient]:
    client = await KubeClient.connect(str(kubeconfig_for_faulty))
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


async def test_a_watch_stream_cut_mid_event_is_a_kube_error(
    faulty: Faulty, kube: KubeClient
) -> None:
    faulty.watch_body = b'{"type":"ADDED","object":{"metadata":{"name":"cut'
    with pytest.raises(KubeError, match="ended inside an event"):
        async with asyncio.timeout(WAIT):
            async with contextlib.aclosing(kube.watch(CONFIGMAPS, "5")) as stream:
                async for _ in stream:
                    pass


GOOD_EVENT = b'{"type":"ADDED","object":{"metadata":{"name":"good","namespace":"shop"}}}\n'


@pytest.mark.parametrize(
    "body",
    [
        b"<html>oops</html>\n",
        b'["not", "an", "event"]\n',
        b'{"type":"ADDED","object":"a string"}\n',
        b'{"type":"SOMETHING-NEW","object":{}}\n',
        b"\xff\xfe not utf-8\n",
    ],
)
async def test_an_unreadable_watch_event_is_reported_and_the_stream_goes_on(
    faulty: Faulty, kube: KubeClient, body: bytes
) -> None:
    faulty.watch_body = body + GOOD_EVENT
    got = await _watch_all(kube)
    assert len(got) == 2
    assert isinstance(got[0], Unreadable) and got[0].reason == "undecodable"
    assert isinstance(got[1], WatchItem) and got[1].object["metadata"]["name"] == "good"


async def test_a_watch_event_over_the_limit_is_skipped_whole(
    faulty: Faulty, kubeconfig_for_faulty: Path
) -> None:
    big = (
        b'{"type":"MODIFIED","object":{"metadata":{"name":"sbom","namespace":"shop"},'
        b'"data":{"blob":"' + b"x" * 300_000 + b'"}}}\n'
    )
    faulty.watch_body = big + GOOD_EVENT
    client = await KubeClient.connect(str(kubeconfig_for_faulty), max_event_bytes=100_000)
    try:
        got = await _watch_all(client)
    finally:
        await client.close()
    assert len(got) == 2
    assert got[0] == Unreadable(
        "too_large", f"{len(big) - 1} bytes, over 100000", "shop", "sbom"
    )
    assert isinstance(got[1], WatchItem) and got[1].object["metadata"]["name"] == "good"


async def test_a_watch_event_far_over_aiohttps_line_buffer_is_read(
    faulty: Faulty, kube: KubeClient
) -> None:
    # aiohttp's own readline gave up at 4 MiB with LineTooLong; the default limit is the frame's.
    blob = b"y" * (6 * 1024 * 1024)
    faulty.watch_body = (
        b'{"type":"ADDED","object":{"metadata":{"name":"sbom","namespace":"shop"},'
        b'"data":{"blob":"' + blob + b'"}}}\n'
    )
    got = await _watch_all(kube)
    assert len(got) == 1 and isinstance(got[0], WatchItem)
    assert got[0].object["data"]["blob"].encode() == blob


async def _watch_all(client: KubeClient) -> list[WatchItem | Unreadable]:
    got: list[WatchItem | Unreadable] = []
    async with asyncio.timeout(WAIT):
        async with contextlib.aclosing(client.watch(CONFIGMAPS, "5")) as stream:
            async for item in stream:
                got.append(item)
    return got


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


# ---------------------------------------------------------------- one bad object, fuzzed


def _event(kind: str, name: str, **extra: Any) -> bytes:
    obj = {"metadata": {"name": name, "namespace": "shop", "resourceVersion": "7"}, **extra}
    return json.dumps({"type": kind, "object": obj}).encode()


def _nested(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = {"d": value}
    return value


def _garbage(rng: random.Random, serial: int) -> tuple[bytes, str]:
    """One line no informer can take in, and the skip reason it must be reported with."""
    choice = rng.randrange(8)
    if choice == 0:
        noise = bytes(rng.randrange(256) for _ in range(rng.randrange(200)))
        return b"!" + noise.replace(b"\n", b" "), "undecodable"
    if choice == 1:
        good = _event("ADDED", f"cut-{serial}")
        return good[: rng.randrange(1, len(good))], "undecodable"  # never valid JSON
    if choice == 2:
        doc = rng.choice([1, "text", [1, 2], None, {"type": "ADDED"}, {"object": {}}])
        return json.dumps(doc).encode(), "undecodable"
    if choice == 3:
        bad = json.dumps({"type": "ADDED", "object": rng.choice(["s", 5, [], None])})
        return bad.encode(), "undecodable"
    if choice == 4:
        return _event(rng.choice(["UPSERTED", "", "added"]), f"odd-{serial}"), "undecodable"
    if choice == 5:  # decodable, but too deep for the encoder (orjson stops at 255 levels)
        return _event("ADDED", f"deep-{serial}", spec=_nested(rng.randrange(260, 900))), "too_deep"
    if choice == 6:  # too deep even to decode (and for the stdlib encoder: written by hand)
        spec = b'{"d":' * 1100 + b"0" + b"}" * 1100
        head = _event("ADDED", f"abyss-{serial}")[:-2]  # without the closing "}}"
        return head + b', "spec": ' + spec + b"}}", "undecodable"
    return _event("ADDED", f"huge-{serial}", data={"blob": "z" * 70_000}), "too_large"


@pytest.mark.parametrize("seed", range(5))
async def test_fuzzed_watch_stream_never_stops_the_informer(
    faulty: Faulty, kubeconfig_for_faulty: Path, seed: int
) -> None:
    rng = random.Random(seed)
    lines: list[bytes] = []
    want_events: list[tuple[str, str]] = []
    want_skips: list[str] = []
    for serial in range(60):
        if rng.random() < 0.5:
            line, reason = _garbage(rng, serial)
            want_skips.append(reason)
        else:
            name = f"good-{serial}"
            line = _event("ADDED", name)
            want_events.append(("ADDED", name))
        lines.append(line)
    faulty.watch_body = b"\n".join(lines) + b"\n"
    faulty.first_watch_only = True
    client = await KubeClient.connect(str(kubeconfig_for_faulty), max_event_bytes=64_000)
    events: list[tuple[str, str]] = []
    skips: list[SkippedObject] = []
    informer = Informer(
        client, CONFIGMAPS, lambda t, o: events.append((t, o["metadata"]["name"])),
        on_skip=skips.append,
    )
    task = asyncio.create_task(informer.run())
    try:
        await wait_until(lambda: len(events) + len(skips) >= len(lines), "every line handled")
        await wait_until(lambda: faulty.watches >= 2, "the watch resumed")
        assert not task.done(), task
        assert events == want_events
        assert [s.reason for s in skips] == want_skips
        assert set(informer.cache) == {("shop", name) for _, name in want_events}
        assert informer.lists == 1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.close()


async def test_an_object_too_deep_to_encode_is_skipped_at_list_time(
    faulty: Faulty, kube: KubeClient
) -> None:
    deep = {"metadata": {"name": "abyss", "namespace": "shop"}, "spec": _nested(300)}
    fine = {"metadata": {"name": "fine", "namespace": "shop"}}
    faulty.list_body = json.dumps(
        {"kind": "ConfigMapList", "metadata": {"resourceVersion": "5"}, "items": [deep, fine]}
    ).encode()
    faulty.first_watch_only = True
    faulty.watch_body = b""
    events: list[tuple[str, str]] = []
    skips: list[SkippedObject] = []
    informer = Informer(
        kube, CONFIGMAPS, lambda t, o: events.append((t, o["metadata"]["name"])),
        on_skip=skips.append,
    )
    task = asyncio.create_task(informer.run())
    try:
        await wait_until(informer.synced.is_set, "the list")
        assert events == [("ADDED", "fine")]
        assert [(s.namespace, s.name, s.reason) for s in skips] == [("shop", "abyss", "too_deep")]
        assert set(informer.cache) == {("shop", "fine")}
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_an_object_that_becomes_too_deep_counts_as_deleted(
    faulty: Faulty, kube: KubeClient
) -> None:
    faulty.list_body = json.dumps({
        "kind": "ConfigMapList", "metadata": {"resourceVersion": "5"},
        "items": [{"metadata": {"name": "grows", "namespace": "shop", "resourceVersion": "5"}}],
    }).encode()
    faulty.watch_body = _event("MODIFIED", "grows", spec=_nested(300)) + b"\n"
    faulty.first_watch_only = True
    events: list[tuple[str, str]] = []
    skips: list[SkippedObject] = []
    informer = Informer(
        kube, CONFIGMAPS, lambda t, o: events.append((t, o["metadata"]["name"])),
        on_skip=skips.append,
    )
    task = asyncio.create_task(informer.run())
    try:
        await wait_until(lambda: len(events) == 2, "the deletion of the stale copy")
        # The backend must not keep the older copy as if it were current.
        assert events == [("ADDED", "grows"), ("DELETED", "grows")]
        assert [s.reason for s in skips] == ["too_deep"]
        assert len(informer.cache) == 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
