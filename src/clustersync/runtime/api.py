"""The backend's HTTP API: health, metrics, object queries and backend writes.

Operators authenticate with an admin bearer token. A write is first checked against what the
backend knows (the cluster exists; its agent syncs the kind; the namespace fits the kind), then
recorded as pending in the store under its id, then published on the bus (``cs.write``), where the
ingester stores it and forwards it to the cluster. The API answers 202 with the write's location,
``/api/v1/writes/{id}``, where its outcome can be read. Errors are RFC 9457 problem documents.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import orjson
from aiohttp import web

from clustersync.adapters.bus import Bus, BusError, BusFullError
from clustersync.adapters.store import Store, StoreError, StoreUnavailableError, WriteRecord
from clustersync.model import Kind, KindError, ObjectRef
from clustersync.model.identity import TokenTable
from clustersync.model.kind_names import KindInfo
from clustersync.model.plurals import guess_resource
from clustersync.protocol.envelope import Envelope, encode_envelope, write_subject
from clustersync.protocol.messages import (
    ACK_PROTOCOL,
    ObjectDeleted,
    PutObject,
    WriteStatus,
    new_msg_id,
)
from clustersync.runtime.api_http import json_response as _json
from clustersync.runtime.api_http import (
    problem,
    problems_for_api,
    refuse_unless_admin,
    write_json,
)
from clustersync.runtime.queries import QueryApi
from clustersync.runtime.status import Key, load_states

log = logging.getLogger("clustersync.api")


def kind_of(obj: dict[str, Any], explicit: str | None) -> Kind:
    if explicit:
        return Kind.parse(explicit)
    api_version = obj.get("apiVersion")
    kind_name = obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind_name, str) or not kind_name:
        raise KindError("object needs apiVersion and kind (or give kind=group/version/resource)")
    group, _, version = api_version.rpartition("/")
    return Kind(group, version, guess_resource(kind_name))


def unknown_cluster(account: str, cluster: str) -> web.Response:
    return problem(
        404, f"unknown cluster {cluster!r} in account {account!r}: no agent token names it"
    )


def write_location(ident: str) -> str:
    return f"/api/v1/writes/{ident}"


class BackendApi:
    def __init__(self, store: Store, bus: Bus, tokens: TokenTable) -> None:
        self.store = store
        self.bus = bus
        self.tokens = tokens
        self.queries = QueryApi(store, tokens)

    async def cluster_states(self) -> dict[Key, dict[str, Any]]:
        """Connection facts and sync progress per cluster, as every replica shared them."""
        return await load_states(self.store)

    def add_routes(self, app: web.Application, *, root: bool = True) -> None:
        app.middlewares.append(problems_for_api)  # aiohttp's own 404/405/413 too
        self.queries.add_routes(app, root=root)  # index, documentation, fleet, object reads
        app.router.add_post("/api/v1/objects", self.put_object)
        app.router.add_delete("/api/v1/objects", self.delete_object)
        app.router.add_get("/api/v1/writes/{id}", self.get_write)

    def _admin(self, request: web.Request) -> web.Response | None:
        return refuse_unless_admin(self.tokens, request)

    async def get_write(self, request: web.Request) -> web.Response:
        if (refused := self._admin(request)) is not None:
            return refused
        ident = request.match_info["id"]
        try:
            write = await self.store.get_write(ident)
        except StoreError as exc:
            log.error("cannot read write %s: %s", ident, exc)
            return problem(503, f"the store is unavailable: {exc}")
        if write is None:
            return problem(404, f"no backend write with id {ident!r}")
        return _json(write_json(write))

    async def _body(self, request: web.Request) -> dict[str, Any] | web.Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return problem(400, "body is not JSON")
        if not isinstance(body, dict):
            return problem(400, "body must be a JSON object")
        for field in ("account", "cluster"):
            if not isinstance(body.get(field), str) or not body[field]:
                return problem(400, f"{field} is required")
        return body

    async def _kind_info(self, text: str, account: str, cluster: str) -> KindInfo:
        """A kind as kubectl users write it, resolved among the built-in kinds, those the
        cluster's agent announced (with their scope) and those the store holds."""
        catalog = self.queries.catalog
        info = await self.store.cluster_info(account, cluster)
        for synced in info.kinds if info is not None else ():
            catalog.learn(synced.kind, synced.namespaced)
        try:
            return catalog.resolve(text)
        except KindError:
            for count in await self.store.count_kinds():
                catalog.learn(count.kind)
            return catalog.resolve(text)

    async def _check_target(
        self, account: str, cluster: str, ref: ObjectRef
    ) -> web.Response | None:
        """Refuse what the backend can know is wrong before anything is published."""
        try:
            info = await self.store.cluster_info(account, cluster)
        except StoreUnavailableError as exc:
            # The bus still takes writes while the database is away: check what the token
            # table alone can say (an account key may then cover a cluster not seen yet).
            log.warning(
                "cluster info unavailable, checking %s/%s by token only: %s", account, cluster, exc
            )
            if not self.tokens.may_connect(account, cluster):
                return unknown_cluster(account, cluster)
            return None
        if not self._names(account, cluster, seen=info is not None):
            return unknown_cluster(account, cluster)
        if info is None or info.protocol != ACK_PROTOCOL:
            return None  # its agent has not said what it syncs: the agent itself will judge
        synced = {k.kind: k for k in info.kinds}
        if ref.kind not in synced:
            names = ", ".join(sorted(str(k) for k in synced)) or "nothing"
            return problem(
                422, f"the agent of {account}/{cluster} does not sync {ref.kind} (it syncs {names})"
            )
        namespaced = synced[ref.kind].namespaced
        if namespaced and not ref.namespace:
            return problem(422, f"{ref.kind} is namespaced: the object needs a namespace")
        if namespaced is False and ref.namespace:
            return problem(
                422,
                f"{ref.kind} is cluster-scoped: the object must not name "
                f"a namespace (got {ref.namespace!r})",
            )
        return None

    def _names(self, account: str, cluster: str, *, seen: bool) -> bool:
        """Whether a token of the table names this cluster. An account-wide token (one without
        a cluster) names the clusters of its account whose agent has connected (``seen``)."""
        return any(
            not identity.admin
            and identity.account == account
            and (identity.cluster == cluster or (identity.account_wide and seen))
            for identity in self.tokens.tokens.values()
        )

    async def _accept(
        self, account: str, cluster: str, msg: PutObject | ObjectDeleted
    ) -> web.Response:
        """Record the write (pending), then publish it; 202 with where to read its outcome."""
        try:
            if (refused := await self._check_target(account, cluster, msg.ref)) is not None:
                return refused
            subject = write_subject(account, cluster)
            data = encode_envelope(Envelope(account, cluster, msg))
            record = WriteRecord.pending(account, cluster, msg, subject, data)
            await self.store.add_write(record)
        except StoreUnavailableError as exc:
            # The database is away (restarting): the bus still takes the write, and the ingester
            # records it once the database is back, before the write reaches the agent.
            log.warning("write %s published before it could be recorded: %s", msg.msg_id, exc)
        except StoreError as exc:
            log.error("backend write not recorded: %s", exc)
            return problem(503, f"the store is unavailable: {exc}")
        try:
            seq = await self.bus.publish(subject, data)
        except BusFullError as exc:  # that cluster's queue is full: the caller slows down
            log.warning("backend write refused: %s", exc)
            await self._not_published(msg, f"not accepted by the bus: {exc}")
            return problem(429, str(exc), {"Retry-After": "5"})
        except BusError as exc:
            log.error("backend write not accepted by the bus: %s", exc)
            await self._not_published(msg, f"bus unavailable: {exc}")
            return problem(503, f"bus unavailable: {exc}")
        location = write_location(msg.msg_id)
        doc = {
            "id": msg.msg_id,
            "status": WriteStatus.PENDING.value,
            "location": location,
            "accepted": True,
            "seq": seq,
            "msgId": msg.msg_id,
        }
        return _json(doc, 202, {"Location": location})

    async def _not_published(self, msg: PutObject | ObjectDeleted, reason: str) -> None:
        """A recorded write the bus refused: settle it so that it is never published later."""
        with contextlib.suppress(StoreError):  # the error answer says it all if this fails too
            await self.store.settle_write(msg.msg_id, WriteStatus.FAILED, reason)

    async def put_object(self, request: web.Request) -> web.Response:
        if (refused := self._admin(request)) is not None:
            return refused
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        obj = body.get("object")
        if not isinstance(obj, dict):
            return problem(400, "object must be a Kubernetes object")
        meta = obj.get("metadata")
        if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
            return problem(400, "object needs metadata.name")
        namespace = meta.get("namespace") or ""
        if not isinstance(namespace, str):
            return problem(400, "metadata.namespace must be a string")
        try:
            explicit = body.get("kind")
            if explicit is not None and not isinstance(explicit, str):
                raise KindError("kind must be a string such as configmaps or apps/v1/deployments")
            if explicit:
                kind = (await self._kind_info(explicit, body["account"], body["cluster"])).kind
            else:
                kind = kind_of(obj, None)
        except KindError as exc:
            return problem(422 if explicit else 400, str(exc))
        except StoreError as exc:
            return problem(503, f"the store is unavailable: {exc}")
        ref = ObjectRef(kind, namespace, meta["name"])
        msg = PutObject(
            ref=ref, checksum="", object=orjson.dumps(obj), depth=0, msg_id=new_msg_id()
        )
        return await self._accept(body["account"], body["cluster"], msg)

    async def delete_object(self, request: web.Request) -> web.Response:
        if (refused := self._admin(request)) is not None:
            return refused
        query = request.query
        missing = [f for f in ("account", "cluster", "kind", "name") if not query.get(f)]
        if missing:
            return problem(400, f"missing query parameters: {', '.join(missing)}")
        try:
            info = await self._kind_info(query["kind"], query["account"], query["cluster"])
        except KindError as exc:
            return problem(422, str(exc))
        except StoreError as exc:
            return problem(503, f"the store is unavailable: {exc}")
        ref = ObjectRef(info.kind, query.get("namespace", ""), query["name"])
        msg = ObjectDeleted(ref=ref, depth=0, msg_id=new_msg_id())
        return await self._accept(query["account"], query["cluster"], msg)


async def republish_pending(store: Store, bus: Bus) -> int:
    """Publish again every write still pending: the embedded bus loses what it held when the
    process dies, while the API had answered 202. Returns how many were published.

    A write that had in fact reached the agent is applied twice, which is harmless: the agent
    creates or replaces, and only the first final outcome is kept."""
    pending = await store.pending_writes()
    for write in pending:
        await bus.publish(write.subject, write.data)
    if pending:
        log.warning("published %d pending backend writes again after a restart", len(pending))
    return len(pending)
