"""The backend's HTTP API: health, metrics, object queries and backend writes.

Operators authenticate with an admin bearer token. Writes are published on the bus (``cs.write``),
where the ingester stores them and forwards them to the cluster; the API answers 202 once the bus
has durably accepted the write.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiohttp import web

from clustersync.adapters.bus import Bus, BusError, BusFullError
from clustersync.adapters.metrics import bad_input
from clustersync.adapters.store import Store, StoredObject
from clustersync.model import Kind, KindError, ObjectRef
from clustersync.model.identity import TokenTable
from clustersync.model.plurals import guess_resource
from clustersync.protocol.envelope import Envelope, encode_envelope, write_subject
from clustersync.protocol.messages import ObjectDeleted, PutObject, new_msg_id

log = logging.getLogger("clustersync.api")


def _problem(status: int, message: str) -> web.Response:
    bad_input("api", str(status))
    return web.json_response({"error": message}, status=status)


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


def kind_of(obj: dict[str, Any], explicit: str | None) -> Kind:
    if explicit:
        return Kind.parse(explicit)
    api_version = obj.get("apiVersion")
    kind_name = obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind_name, str) or not kind_name:
        raise KindError("object needs apiVersion and kind (or give kind=group/version/resource)")
    group, _, version = api_version.rpartition("/")
    return Kind(group, version, guess_resource(kind_name))


class BackendApi:
    def __init__(self, store: Store, bus: Bus, tokens: TokenTable) -> None:
        self.store = store
        self.bus = bus
        self.tokens = tokens

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v1/objects", self.list_objects)
        app.router.add_post("/api/v1/objects", self.put_object)
        app.router.add_delete("/api/v1/objects", self.delete_object)

    def _admin(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        identity = self.tokens.identify(token)
        if identity is None:
            return _problem(401, "missing or unknown bearer token")
        if not identity.admin:
            return _problem(403, "this token may not use the backend API")
        return None

    async def list_objects(self, request: web.Request) -> web.Response:
        if (refused := self._admin(request)) is not None:
            return refused
        query = request.query
        try:
            kind = Kind.parse(query["kind"]) if query.get("kind") else None
        except KindError as exc:
            return _problem(400, str(exc))
        rows = await self.store.list(
            query.get("account") or None, query.get("cluster") or None, kind
        )
        full = query.get("full") in ("1", "true")
        return web.json_response(
            {"items": [row_json(row, full) for row in rows]},
            dumps=lambda v: orjson.dumps(v).decode(),
        )

    async def _body(self, request: web.Request) -> dict[str, Any] | web.Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _problem(400, "body is not JSON")
        if not isinstance(body, dict):
            return _problem(400, "body must be a JSON object")
        for field in ("account", "cluster"):
            if not isinstance(body.get(field), str) or not body[field]:
                return _problem(400, f"{field} is required")
        return body

    async def _publish(
        self, account: str, cluster: str, msg: PutObject | ObjectDeleted
    ) -> web.Response:
        try:
            seq = await self.bus.publish(
                write_subject(account, cluster), encode_envelope(Envelope(account, cluster, msg))
            )
        except BusFullError as exc:  # that cluster's queue is full: the caller slows down
            log.warning("backend write refused: %s", exc)
            return web.json_response({"error": str(exc)}, status=429, headers={"Retry-After": "5"})
        except BusError as exc:
            log.error("backend write not accepted by the bus: %s", exc)
            return web.json_response({"error": f"bus unavailable: {exc}"}, status=503)
        return web.json_response({"accepted": True, "seq": seq, "msgId": msg.msg_id}, status=202)

    async def put_object(self, request: web.Request) -> web.Response:
        if (refused := self._admin(request)) is not None:
            return refused
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        obj = body.get("object")
        if not isinstance(obj, dict):
            return _problem(400, "object must be a Kubernetes object")
        meta = obj.get("metadata")
        if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
            return _problem(400, "object needs metadata.name")
        try:
            kind = kind_of(obj, body.get("kind"))
        except KindError as exc:
            return _problem(400, str(exc))
        ref = ObjectRef(kind, str(meta.get("namespace") or ""), meta["name"])
        msg = PutObject(
            ref=ref, checksum="", object=orjson.dumps(obj), depth=0, msg_id=new_msg_id()
        )
        return await self._publish(body["account"], body["cluster"], msg)

    async def delete_object(self, request: web.Request) -> web.Response:
        if (refused := self._admin(request)) is not None:
            return refused
        query = request.query
        missing = [f for f in ("account", "cluster", "kind", "name") if not query.get(f)]
        if missing:
            return _problem(400, f"missing query parameters: {', '.join(missing)}")
        try:
            kind = Kind.parse(query["kind"])
        except KindError as exc:
            return _problem(400, str(exc))
        ref = ObjectRef(kind, query.get("namespace", ""), query["name"])
        msg = ObjectDeleted(ref=ref, depth=0, msg_id=new_msg_id())
        return await self._publish(query["account"], query["cluster"], msg)
