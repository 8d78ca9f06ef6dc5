"""KubeApi over kubernetes_asyncio, used only for its configuration and authenticated transport.

kubernetes_asyncio brings kubeconfig parsing, exec plugins, in-cluster service accounts and token
rotation; its raw ``call_api(..., _preload_content=False)`` path returns the aiohttp response, so
bodies are parsed once with orjson into plain dicts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.config.config_exception import ConfigException

from clustersync.adapters.kube.base import (
    KubeConflictError,
    KubeError,
    KubeGoneError,
    KubeNotFoundError,
    ListPage,
    ResourceInfo,
    Unreadable,
    WatchItem,
)
from clustersync.adapters.kube.lines import Oversized, split_lines
from clustersync.adapters.kube.page_items import read_page
from clustersync.model import Kind, ObjectRef
from clustersync.protocol.messages import MAX_FRAME

_JSON = "application/json"
_REQUEST_TIMEOUT = 30.0


async def load_configuration(kubeconfig: str | None) -> Any:
    """A client configuration from a kubeconfig file, or in-cluster credentials if none given."""
    cfg = k8s_client.Configuration()
    if kubeconfig and not await asyncio.to_thread(Path(kubeconfig).exists):
        # The client library calls this "Invalid kube-config file": say what is wrong.
        raise KubeError(
            f"cannot load Kubernetes credentials: the kubeconfig {kubeconfig} does not exist"
        )
    try:
        if kubeconfig:
            await k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        else:
            try:
                k8s_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            except ConfigException:
                await k8s_config.load_kube_config(client_configuration=cfg)
    except (ConfigException, OSError, TypeError) as exc:
        raise KubeError(f"cannot load Kubernetes credentials: {exc}") from None
    return cfg


def _api_root(kind: Kind) -> str:
    return f"/apis/{kind.group}/{kind.version}" if kind.group else f"/api/{kind.version}"


def _error(status: int, body: bytes, what: str) -> KubeError:
    try:
        doc = orjson.loads(body)
        message, reason = str(doc.get("message", "")), str(doc.get("reason", ""))
    except (orjson.JSONDecodeError, AttributeError):
        message, reason = body[:200].decode(errors="replace"), ""
    text = f"{what}: HTTP {status} {reason} {message}".strip()
    if status == 404:
        return KubeNotFoundError(text, status, reason)
    if status == 409:
        return KubeConflictError(text, status, reason)
    if status == 410:
        return KubeGoneError(text, status, reason)
    return KubeError(text, status, reason)


def _decode(data: bytes, what: str) -> Any:
    """JSON from the server; anything else (a proxy's HTML page, a cut-off line) is a KubeError."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise KubeError(f"{what}: the answer is not JSON: {exc}") from None


class KubeClient:
    def __init__(self, api_client: Any, *, max_event_bytes: int = MAX_FRAME) -> None:
        self._api = api_client
        self._infos: dict[Kind, ResourceInfo] = {}
        # A watch event longer than this is skipped: its object could not fit in a frame anyway.
        self.max_event_bytes = max_event_bytes

    @classmethod
    async def connect(
        cls, kubeconfig: str | None = None, *, max_event_bytes: int = MAX_FRAME
    ) -> KubeClient:
        cfg = await load_configuration(kubeconfig)
        return cls(k8s_client.ApiClient(configuration=cfg), max_event_bytes=max_event_bytes)

    @property
    def server_url(self) -> str:
        """The API server's address, as configured."""
        return str(self._api.configuration.host)

    async def close(self) -> None:
        await self._api.close()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = _JSON,
        timeout: float | aiohttp.ClientTimeout = _REQUEST_TIMEOUT,
    ) -> aiohttp.ClientResponse:
        try:
            response: aiohttp.ClientResponse = await self._api.call_api(
                path,
                method,
                query_params=query or [],
                header_params={"Accept": _JSON, "Content-Type": content_type},
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=timeout,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubeError(f"{method} {path}: {exc or type(exc).__name__}") from None
        return response

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return _decode(await self._body(method, path, **kwargs), f"{method} {path}")

    async def _body(self, method: str, path: str, **kwargs: Any) -> bytes:
        """The answer's bytes; an error status raises its KubeError."""
        response = await self._call(method, path, **kwargs)
        try:
            body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubeError(f"{method} {path}: {exc or type(exc).__name__}") from None
        finally:
            response.release()
        if response.status >= 300:
            raise _error(response.status, body, f"{method} {path}")
        return body

    # ------------------------------------------------------------ discovery

    async def resource_info(self, kind: Kind) -> ResourceInfo:
        cached = self._infos.get(kind)
        if cached is not None:
            return cached
        doc = await self._json("GET", _api_root(kind))
        for item in doc.get("resources", []):
            if item.get("name") == kind.resource:
                info = ResourceInfo(kind, str(item["kind"]), bool(item.get("namespaced")))
                self._infos[kind] = info
                return info
        raise KubeNotFoundError(f"the server does not serve {kind}", 404, "NotFound")

    async def server_version(self) -> str:
        doc = await self._json("GET", "/version")
        return str(doc.get("gitVersion", ""))

    def _collection(self, info: ResourceInfo, namespace: str) -> str:
        root = _api_root(info.kind)
        if info.namespaced and namespace:
            return f"{root}/namespaces/{namespace}/{info.kind.resource}"
        return f"{root}/{info.kind.resource}"

    async def _object_path(self, ref: ObjectRef) -> str:
        info = await self.resource_info(ref.kind)
        return f"{self._collection(info, ref.namespace)}/{ref.name}"

    # ------------------------------------------------------------ reads

    async def list(self, kind: Kind, page_size: int = 500) -> tuple[list[dict[str, Any]], str]:
        items: list[dict[str, Any]] = []
        resource_version = ""
        async for page in self.list_pages(kind, page_size):
            items += page.items
            resource_version = page.resource_version
        return items, resource_version

    async def list_pages(self, kind: Kind, page_size: int = 500) -> AsyncIterator[ListPage]:
        info = await self.resource_info(kind)
        path = self._collection(info, "")
        what = f"GET {path}"

        def fetch(token: str) -> asyncio.Task[bytes]:
            query = [("limit", str(page_size))]
            if token:
                query.append(("continue", token))
            return asyncio.create_task(self._body("GET", path, query=query))

        # List items carry no kind; checksums and filters need it.
        defaults = {"apiVersion": kind.api_version, "kind": info.kind_name}
        # While the caller takes in one page, the next one is already on its way (as bytes:
        # each item is parsed when the caller reaches it, see page_items).
        pending = fetch("")
        try:
            while True:
                head, items = read_page(await pending, defaults, what)
                meta = head.get("metadata")
                meta = meta if isinstance(meta, dict) else {}
                token = meta.get("continue") or ""
                if token:
                    pending = fetch(token)
                yield ListPage(items, str(meta.get("resourceVersion", "")))
                if not token:
                    return
        finally:
            if not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, KubeError):
                    await pending
            elif not pending.cancelled():
                pending.exception()  # a page the caller no longer wants: its error is moot

    async def watch(
        self,
        kind: Kind,
        resource_version: str,
        timeout_seconds: int = 300,
        *,
        on_open: Callable[[], None] | None = None,
    ) -> AsyncIterator[WatchItem | Unreadable]:
        info = await self.resource_info(kind)
        query = [
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout_seconds)),
        ]
        if resource_version:
            query.append(("resourceVersion", resource_version))
        # The read timeout notices a dead connection; the server ends the stream first.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout_seconds + 30)
        response = await self._call("GET", self._collection(info, ""), query=query, timeout=timeout)
        try:
            if response.status >= 300:
                raise _error(response.status, await response.read(), f"watch {kind}")
            if on_open is not None:
                on_open()
            lines = split_lines(response.content.iter_any(), self.max_event_bytes)
            while True:
                try:
                    line = await anext(lines, None)
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    raise KubeError(f"watch {kind}: {exc or type(exc).__name__}") from None
                if line is None:
                    return
                if isinstance(line, Oversized):
                    namespace, name = line.guessed_key()
                    limit = self.max_event_bytes
                    yield Unreadable(
                        "too_large", f"{line.size} bytes, over {limit}", namespace, name
                    )
                elif line.strip():
                    yield self._watch_item(kind, info, line)
        finally:
            response.release()

    @staticmethod
    def _watch_item(kind: Kind, info: ResourceInfo, line: bytes) -> WatchItem | Unreadable:
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            return Unreadable("undecodable", f"not JSON ({exc}): {line[:200]!r}")
        obj = event.get("object") if isinstance(event, dict) else None
        if not isinstance(obj, dict):
            return Unreadable("undecodable", f"an event without an object: {line[:200]!r}")
        kind_of_event = event.get("type")
        if kind_of_event == "ERROR":
            code = obj.get("code")
            status = code if isinstance(code, int) and 100 <= code < 600 else 500
            raise _error(status, orjson.dumps(obj), f"watch {kind}")
        if kind_of_event not in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK"):
            return Unreadable("undecodable", f"unknown event type {kind_of_event!r}")
        if kind_of_event != "BOOKMARK":
            obj.setdefault("apiVersion", kind.api_version)
            obj.setdefault("kind", info.kind_name)
        return WatchItem(str(kind_of_event), obj)

    async def get(self, ref: ObjectRef) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = await self._json("GET", await self._object_path(ref))
        except KubeNotFoundError:
            return None
        return obj

    # ------------------------------------------------------------ writes

    async def create(self, ref: ObjectRef, obj: dict[str, Any]) -> dict[str, Any]:
        info = await self.resource_info(ref.kind)
        created: dict[str, Any] = await self._json(
            "POST", self._collection(info, ref.namespace), body=obj
        )
        return created

    async def replace(self, ref: ObjectRef, obj: dict[str, Any]) -> dict[str, Any]:
        replaced: dict[str, Any] = await self._json("PUT", await self._object_path(ref), body=obj)
        return replaced

    async def delete(self, ref: ObjectRef) -> bool:
        try:
            await self._json("DELETE", await self._object_path(ref))
        except KubeNotFoundError:
            return False
        return True
