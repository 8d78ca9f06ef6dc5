"""Helpers shared by the sandbox tests (raw calls, watch reading)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
from kubernetes_asyncio import client

WAIT = 10.0  # seconds: upper bound for any single condition wait


async def raw(
    api: client.ApiClient,
    method: str,
    path: str,
    *,
    query: list[tuple[str, Any]] | None = None,
    body: Any = None,
    content_type: str | None = None,
    accept: str = "application/json",
    timeout: float = WAIT,
) -> aiohttp.ClientResponse:
    headers = {"Accept": accept}
    if content_type:
        headers["Content-Type"] = content_type
    resp: aiohttp.ClientResponse = await api.call_api(
        path,
        method,
        query_params=query or [],
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
        _preload_content=False,
        _request_timeout=timeout,
    )
    return resp


async def call(
    api: client.ApiClient,
    method: str,
    path: str,
    **kwargs: Any,
) -> tuple[int, Any]:
    """One request; returns (HTTP status, parsed JSON body)."""
    resp = await raw(api, method, path, **kwargs)
    async with resp:
        data = await resp.read()
    return resp.status, orjson.loads(data) if data else None


def cm(name: str, namespace: str = "default", **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "data": {"k": name},
    }


class WatchReader:
    """Reads newline-delimited watch events with a timeout per event."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp

    async def next(self, timeout: float = WAIT) -> dict[str, Any] | None:
        """The next event, or None at end of stream."""
        async with asyncio.timeout(timeout):
            line = await self.resp.content.readline()
        if not line:
            return None
        event: dict[str, Any] = orjson.loads(line)
        return event

    async def next_non_bookmark(self, timeout: float = WAIT) -> dict[str, Any] | None:
        while True:
            event = await self.next(timeout)
            if event is None or event["type"] != "BOOKMARK":
                return event

    async def take(self, count: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for _ in range(count):
            event = await self.next_non_bookmark()
            assert event is not None, f"stream ended after {out}"
            out.append(event)
        return out

    def close(self) -> None:
        self.resp.close()


async def open_watch(
    api: client.ApiClient, path: str, query: list[tuple[str, Any]] | None = None
) -> WatchReader:
    resp = await raw(api, "GET", path, query=[("watch", "true"), *(query or [])], timeout=60)
    assert resp.status == 200, await resp.text()
    return WatchReader(resp)
