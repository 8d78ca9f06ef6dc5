"""Read routes of the API: the index, the OpenAPI document and its reference page, the fleet's
status, objects (filtered, paginated) and single objects as JSON or YAML."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import yaml
from aiohttp import web

from clustersync import __version__
from clustersync.adapters.store import ObjectKey, Store, StoredObject, StoreError
from clustersync.model import Kind, KindError, ObjectRef
from clustersync.model.identity import TokenTable
from clustersync.model.kind_names import KindCatalog
from clustersync.runtime.api_http import (
    json_response,
    problem,
    refuse_unless_admin,
    write_json,
)
from clustersync.runtime.openapi import openapi_document, render_reference
from clustersync.runtime.status import fleet_status, load_states
from clustersync.sandbox.errors import SandboxError
from clustersync.sandbox.selectors import parse_label_selector

MAX_LIMIT = 5000
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")
Handler = Callable[[web.Request], Awaitable[web.Response]]


def row_json(row: StoredObject, full: bool) -> dict[str, Any]:
    ref = row.key.ref
    doc: dict[str, Any] = {
        "account": row.key.account,
        "cluster": row.key.cluster,
        "kind": str(ref.kind),
        "namespace": ref.namespace,
        "name": ref.name,
        "uid": row.uid,
        "resourceVersion": row.resource_version,
        "checksum": row.checksum,
        "updatedAt": row.updated_at,
    }
    if full:
        doc["object"] = orjson.loads(row.object)
    return doc


def encode_continue(key: ObjectKey) -> str:
    kind = key.ref.kind
    fields = [key.account, key.cluster, kind.group, kind.version, kind.resource]
    raw = orjson.dumps([*fields, key.ref.namespace, key.ref.name])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_continue(token: str) -> ObjectKey:
    """The last key of the previous page; ValueError for anything this API did not write."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        parts = orjson.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("the continue token is not one this API wrote") from exc
    if not isinstance(parts, list) or len(parts) != 7 or not all(isinstance(p, str) for p in parts):
        raise ValueError("the continue token is not one this API wrote")
    try:
        kind = Kind(parts[2], parts[3], parts[4])
    except KindError as exc:
        raise ValueError("the continue token is not one this API wrote") from exc
    return ObjectKey(parts[0], parts[1], ObjectRef(kind, parts[5], parts[6]))


def wants_yaml(accept: str) -> bool | None:
    """True for YAML, False for JSON, None when ``Accept`` allows neither (406)."""
    if not accept.strip():
        return False
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(accept.split(",")):
        media, *params = (p.strip() for p in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            ranked.append((-quality, position, media.lower()))
    for _, _, media in sorted(ranked):
        if media in YAML_TYPES:
            return True
        if media in ("application/json", "application/*", "*/*"):
            return False
    return None


class QueryApi:
    def __init__(self, store: Store, tokens: TokenTable) -> None:
        self.store = store
        self.tokens = tokens
        self.catalog = KindCatalog()

    def add_routes(self, app: web.Application, *, root: bool = True) -> None:
        """``root=False`` where a websocket catch-all owns ``/`` (the backend, whose server
        hands plain HTTP requests to :meth:`fallback`)."""
        if root:
            app.router.add_get("/", self.root)
        app.router.add_get("/api/v1", self.api_index)
        app.router.add_get("/api/v1/", self.api_index)
        app.router.add_get("/api/v1/openapi.json", self.openapi)
        app.router.add_get("/api/v1/docs", self.docs)
        app.router.add_get("/api/v1/clusters", self._guarded(self.list_clusters))
        app.router.add_get("/api/v1/clusters/{account}/{cluster}", self._guarded(self.get_cluster))
        app.router.add_get(
            "/api/v1/clusters/{account}/{cluster}/objects/{kind}/{name}",
            self._guarded(self.get_object),
        )
        app.router.add_get(
            "/api/v1/clusters/{account}/{cluster}/objects/{kind}/{name}/writes",
            self._guarded(self.object_writes),
        )
        app.router.add_get("/api/v1/objects", self._guarded(self.list_objects))

    def _guarded(self, handler: Handler) -> Handler:
        """The operator check, and a store that cannot answer as a 503 problem."""

        async def guarded(request: web.Request) -> web.Response:
            if (refused := refuse_unless_admin(self.tokens, request)) is not None:
                return refused
            try:
                return await handler(request)
            except StoreError as exc:
                return problem(503, f"the store cannot answer right now: {exc}")

        return guarded

    # ------------------------------------------------------------ index and documentation

    async def root(self, request: web.Request) -> web.Response:
        return json_response(
            {
                "name": "clustersync",
                "version": __version__,
                "links": {
                    "api": "/api/v1",
                    "openapi": "/api/v1/openapi.json",
                    "docs": "/api/v1/docs",
                    "health": "/healthz",
                    "metrics": "/metrics",
                },
            }
        )

    async def fallback(self, request: web.Request) -> web.Response:
        """A plain HTTP request on a path no route serves."""
        if request.path == "/":
            return await self.root(request)
        return problem(404, f"no route serves {request.path!r}; see /api/v1/docs")

    async def api_index(self, request: web.Request) -> web.Response:
        return json_response(
            {
                "version": "v1",
                "links": {
                    "clusters": "/api/v1/clusters",
                    "objects": "/api/v1/objects",
                    "openapi": "/api/v1/openapi.json",
                    "docs": "/api/v1/docs",
                },
            }
        )

    async def openapi(self, request: web.Request) -> web.Response:
        return json_response(openapi_document())

    async def docs(self, request: web.Request) -> web.Response:
        return web.Response(text=render_reference(openapi_document()), content_type="text/html")

    # ------------------------------------------------------------ the fleet

    async def list_clusters(self, request: web.Request) -> web.Response:
        account = request.query.get("account") or None
        items = await fleet_status(self.store, self.tokens, await load_states(self.store), account)
        return json_response({"items": items})

    async def get_cluster(self, request: web.Request) -> web.Response:
        account, cluster = request.match_info["account"], request.match_info["cluster"]
        states = await load_states(self.store)
        items = await fleet_status(self.store, self.tokens, states, account, cluster)
        if not items:
            return problem(
                404,
                f"unknown cluster {cluster!r} in account {account!r}: "
                "no token names it and the backend holds nothing of it",
            )
        return json_response(items[0])

    # ------------------------------------------------------------ objects

    async def _resolve_kind(self, text: str) -> Kind:
        """A kind in any of kubectl's forms; KindError (with a "did you mean") otherwise.
        Kinds the store holds are learned first, so custom resources resolve too."""
        try:
            return self.catalog.resolve(text).kind
        except KindError:
            for count in await self.store.count_kinds():
                self.catalog.learn(count.kind)
            return self.catalog.resolve(text).kind

    async def list_objects(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            limit = int(query["limit"]) if query.get("limit") else None
        except ValueError:
            return problem(400, f"limit must be a whole number, not {query['limit']!r}")
        if limit is not None and not 1 <= limit <= MAX_LIMIT:
            return problem(400, f"limit must be between 1 and {MAX_LIMIT}")
        try:
            after = decode_continue(query["continue"]) if query.get("continue") else None
        except ValueError as exc:
            return problem(400, str(exc))
        try:
            selector = parse_label_selector(query.get("labelSelector"))
        except SandboxError as exc:
            return problem(400, f"labelSelector: {exc.message}")
        try:
            kind = await self._resolve_kind(query["kind"]) if query.get("kind") else None
        except KindError as exc:
            return problem(422, str(exc))
        full = query.get("full") in ("1", "true")
        items: list[dict[str, Any]] = []
        more = False
        # Labels live inside the objects: read pages of the key order until enough match.
        while True:
            chunk = MAX_LIMIT if limit is None else max(limit - len(items), 100)
            rows = await self.store.list(
                query.get("account") or None,
                query.get("cluster") or None,
                kind,
                namespace=query.get("namespace"),
                name=query.get("name") or None,
                after=after,
                limit=chunk,
            )
            for row in rows:
                if limit is not None and len(items) == limit:
                    more = True
                    break
                after = row.key
                if selector and not all(match(orjson.loads(row.object)) for match in selector):
                    continue
                items.append(row_json(row, full))
            if more or len(rows) < chunk:
                break
        doc: dict[str, Any] = {"items": items}
        if more and after is not None:
            doc["continue"] = encode_continue(after)
        return json_response(doc)

    async def object_writes(self, request: web.Request) -> web.Response:
        """The backend writes of one object, newest first (kept as long as outcomes are)."""
        info = request.match_info
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            return problem(400, f"limit must be a whole number, not {request.query['limit']!r}")
        if not 1 <= limit <= MAX_LIMIT:
            return problem(400, f"limit must be between 1 and {MAX_LIMIT}")
        try:
            kind = await self._resolve_kind(info["kind"])
        except KindError as exc:
            return problem(422, str(exc))
        ref = ObjectRef(kind, request.query.get("namespace", ""), info["name"])
        writes = await self.store.recent_writes(info["account"], info["cluster"], ref, limit)
        return json_response({"items": [write_json(w) for w in writes]})

    async def get_object(self, request: web.Request) -> web.Response:
        as_yaml = wants_yaml(request.headers.get("Accept", ""))
        if as_yaml is None:
            return problem(406, "this route answers application/json or application/yaml")
        info = request.match_info
        try:
            kind = await self._resolve_kind(info["kind"])
        except KindError as exc:
            return problem(422, str(exc))
        ref = ObjectRef(kind, request.query.get("namespace", ""), info["name"])
        row = await self.store.get(ObjectKey(info["account"], info["cluster"], ref))
        if row is None:
            return problem(404, f"{info['account']}/{info['cluster']} has no {ref} in the backend")
        if as_yaml:  # the object itself, as `kubectl get -o yaml` shows it
            body = yaml.safe_dump(orjson.loads(row.object), sort_keys=False)
            return web.Response(text=body, content_type="application/yaml")
        return json_response(row_json(row, True))
