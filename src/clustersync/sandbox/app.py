"""aiohttp application: URL routing, auth, and the REST verbs over ``Store``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml
from aiohttp import web

from . import discovery, jsonio, openapi
from .errors import SandboxError, bad_request, invalid, not_found, status_object
from .listbody import stream_list
from .patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from .resources import ResourceType
from .scale import apply_scale, is_scalable, to_scale
from .selectors import Filter
from .state import Store, decode
from .watch import WatchStream

log = logging.getLogger(__name__)

_HEALTH = {"healthz", "livez", "readyz"}
_YAML = ("application/yaml", "application/x-yaml")


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=jsonio.dumps(data), status=status, content_type="application/json")


def _not_found_path(path: str) -> SandboxError:
    msg = f"the server could not find the requested resource ({path})"
    return SandboxError(404, "NotFound", msg)


def _method_not_allowed(method: str) -> SandboxError:
    msg = f"the server does not allow this method ({method})"
    return SandboxError(405, "MethodNotAllowed", msg)


@dataclass
class Target:
    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None


def _flag(query: Any, name: str) -> bool:
    return str(query.get(name, "")).lower() in ("true", "1")


def _int_param(query: Any, name: str) -> int | None:
    raw = query.get(name)
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise bad_request(f"invalid {name} {raw!r}") from None


def _dry_run(request: web.Request) -> bool:
    return "All" in request.query.getall("dryRun", [])


class Api:
    """Request handling; ``Sandbox`` owns one and tweaks its settings."""

    def __init__(self, store: Store, token: str) -> None:
        self.store = store
        self.token = token
        self.bookmark_interval = 1.0
        # Fault injection for tests: the next N API requests fail with this status.
        self.failures_left = 0
        self.failure_status = 500

    def _injected_failure(self) -> web.Response | None:
        if self.failures_left <= 0:
            return None
        self.failures_left -= 1
        status = self.failure_status
        reason = "TooManyRequests" if status == 429 else "InternalError"
        response = json_response(status_object(status, reason, "injected fault"), status)
        if status == 429:
            response.headers["Retry-After"] = "1"
        return response

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._dispatch(request)
        except SandboxError as err:
            return json_response(err.to_status(), err.status)
        except Exception as exc:  # never let a bad request take the server down
            log.exception("sandbox: internal error on %s %s", request.method, request.path)
            return json_response(status_object(500, "InternalError", f"internal error: {exc}"), 500)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        segs = [s for s in request.path.split("/") if s]
        if len(segs) == 1 and segs[0] in _HEALTH:
            return web.Response(text="ok")
        if (failure := self._injected_failure()) is not None:
            return failure
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            raise SandboxError(401, "Unauthorized", "Unauthorized")
        doc = self._discovery(segs)
        if doc is not None:
            if request.method != "GET":
                raise _method_not_allowed(request.method)
            return json_response(doc)
        target = self._parse_target(segs)
        if target is None:
            raise _not_found_path(request.path)
        return await self._serve(request, target)

    def _discovery(self, segs: list[str]) -> dict[str, Any] | None:
        reg = self.store.registry
        if segs == ["version"]:
            return discovery.version_info()
        if segs == ["api"]:
            return discovery.api_versions(reg)
        if segs == ["apis"]:
            return discovery.api_group_list(reg)
        if len(segs) == 2 and segs[0] == "api":
            return discovery.api_resource_list(reg, "", segs[1])
        if len(segs) == 2 and segs[0] == "apis":
            versions = reg.group_versions().get(segs[1])
            return discovery.api_group(segs[1], versions) if versions and segs[1] else None
        if len(segs) == 3 and segs[0] == "apis":
            return discovery.api_resource_list(reg, segs[1], segs[2])
        if segs[:2] == ["openapi", "v3"]:
            if len(segs) == 2:
                return openapi.openapi_v3_root(reg)
            if len(segs) == 4 and segs[2] == "api":
                return openapi.openapi_v3_group_version(reg, "", segs[3])
            if len(segs) == 5 and segs[2] == "apis":
                return openapi.openapi_v3_group_version(reg, segs[3], segs[4])
        return None

    def _parse_target(self, segs: list[str]) -> Target | None:
        if len(segs) >= 3 and segs[0] == "api":
            group, version, rest = "", segs[1], segs[2:]
        elif len(segs) >= 4 and segs[0] == "apis":
            group, version, rest = segs[1], segs[2], segs[3:]
        else:
            return None
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] != "status":
            namespace, rest = rest[1], rest[2:]
        if len(rest) > 3:
            return None
        rt = self.store.registry.find(group, version, rest[0])
        if rt is None or (namespace is not None and not rt.namespaced):
            return None
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if rt.namespaced and namespace is None and name is not None:
            return None  # e.g. /api/v1/pods/foo is not a real path
        if sub not in (None, "status") and not (sub == "scale" and is_scalable(rt)):
            return None
        return Target(rt, namespace, name, sub)

    async def _serve(self, request: web.Request, t: Target) -> web.StreamResponse:
        method = request.method
        if t.name is None:
            if method == "GET":
                return await self._list_or_watch(request, t)
            if method == "POST" and (t.namespace is not None or not t.rt.namespaced):
                body = await _read_json(request)
                obj = self.store.create(t.rt, t.namespace, body, dry_run=_dry_run(request))
                return json_response(obj, 201)
            if method == "DELETE":
                return await self._delete_collection(request, t)
            raise _method_not_allowed(method)
        if method == "GET":
            if _flag(request.query, "watch"):
                return await self._list_or_watch(request, t)
            raw = self.store.get_raw(t.rt, t.namespace or "", t.name)
            if raw is None:
                raise not_found(t.rt, t.name)
            if t.subresource == "scale":
                return json_response(to_scale(decode(raw)))
            return self._object_response(request, raw)
        if method == "PUT" and t.subresource == "scale":
            body = await _read_json(request)
            obj = self.store.update_with(
                t.rt,
                t.namespace,
                t.name,
                lambda cur: apply_scale(t.rt, cur, body),
                dry_run=_dry_run(request),
            )
            return json_response(to_scale(obj))
        if method == "PUT":
            body = await _read_json(request)
            dry = _dry_run(request)
            obj = self.store.replace(
                t.rt, t.namespace, t.name, body, dry_run=dry, subresource=t.subresource,
                owned=request.content_type not in _YAML,  # parsed JSON: nobody else holds it
            )  # fmt: skip
            return self._written_response(t, obj, dry)
        if method == "PATCH":
            return await self._patch(request, t)
        if method == "DELETE" and t.subresource is None:
            return await self._delete(request, t)
        raise _method_not_allowed(method)

    def _object_response(self, request: web.Request, raw: bytes) -> web.Response:
        include = self._table_mode(request)
        if include is not None:
            return json_response(discovery.to_table([decode(raw)], {}, include))
        return web.Response(body=raw, content_type="application/json")

    @staticmethod
    def _table_mode(request: web.Request) -> str | None:
        if discovery.wants_table(request.headers.get("Accept", "")):
            return str(request.query.get("includeObject", "Metadata"))
        return None

    async def _list_or_watch(self, request: web.Request, t: Target) -> web.StreamResponse:
        q = request.query
        field_sel = q.get("fieldSelector")
        if t.name is not None:  # watch on a single object path
            field_sel = ",".join(filter(None, [field_sel, f"metadata.name={t.name}"]))
        flt = Filter.build(t.namespace, q.get("labelSelector"), field_sel)
        if _flag(q, "watch"):
            watcher = self.store.watch(
                t.rt,
                flt,
                q.get("resourceVersion"),
                send_initial_events=_flag(q, "sendInitialEvents"),
            )
            timeout = _int_param(q, "timeoutSeconds")
            stream = WatchStream(
                self.store,
                t.rt,
                watcher,
                bookmarks=_flag(q, "allowWatchBookmarks"),
                bookmark_interval=lambda: self.bookmark_interval,
                timeout=float(timeout) if timeout else None,
                table=self._table_mode(request),
            )
            return await stream.run(request)
        result = self.store.list_objects(
            t.rt,
            flt,
            limit=_int_param(q, "limit"),
            continue_token=q.get("continue"),
            resource_version=q.get("resourceVersion"),
            rv_match=q.get("resourceVersionMatch"),
        )
        meta: dict[str, Any] = {"resourceVersion": str(result.resource_version)}
        if result.continue_token:
            meta["continue"] = result.continue_token
            if result.remaining is not None and not flt.has_selector:
                meta["remainingItemCount"] = result.remaining
        include = self._table_mode(request)
        if include is not None:
            return json_response(discovery.to_table(result.items, meta, include))
        head = {"kind": t.rt.list_kind, "apiVersion": t.rt.api_version, "metadata": meta}
        return await stream_list(request, head, result.raw)

    async def _patch(self, request: web.Request, t: Target) -> web.Response:
        assert t.name is not None
        ctype = request.content_type
        raw = await request.read()
        dry = _dry_run(request)
        if ctype == "application/apply-patch+yaml":
            try:
                applied = yaml.safe_load(raw.decode() or "null")
            except (yaml.YAMLError, UnicodeDecodeError) as exc:
                raise bad_request(f"invalid apply body: {exc}") from exc
            if not isinstance(applied, dict):
                raise bad_request("the apply body must be an object")
            if self.store.get(t.rt, t.namespace or "", t.name) is None:
                # Server-side apply creates missing objects.
                applied.setdefault("metadata", {}).setdefault("name", t.name)
                created = self.store.create(t.rt, t.namespace, applied, dry_run=dry)
                return json_response(created, 201)
            # Approximation: no field-ownership tracking; the applied
            # configuration is merged over the live object.
            patch: Any = applied
            fn: Callable[[Any, Any], Any] = merge_patch
        else:
            patch = _parse_json(raw)
            if ctype == "application/json-patch+json":
                fn = json_patch
            elif ctype == "application/merge-patch+json":
                fn = merge_patch
            elif ctype == "application/strategic-merge-patch+json":
                fn = strategic_merge_patch
            else:
                raise SandboxError(415, "UnsupportedMediaType", f"unsupported patch type {ctype!r}")
            if ctype != "application/json-patch+json" and not isinstance(patch, dict):
                raise bad_request("a merge patch must be a JSON object")

        scaling = t.subresource == "scale"

        def apply(cur: dict[str, Any]) -> Any:
            try:
                if scaling:  # patch the Scale view, then map it back
                    return apply_scale(t.rt, cur, fn(to_scale(cur), patch))
                return fn(cur, patch)
            except PatchError as exc:
                raise invalid(t.rt, t.name or "", str(exc)) from exc

        sub = None if scaling else t.subresource
        # Parsed JSON patches (not YAML apply bodies, which may hold non-JSON values) give
        # results made of fresh JSON data only.
        owned = ctype != "application/apply-patch+yaml"
        obj = self.store.update_with(
            t.rt, t.namespace, t.name, apply, dry_run=dry, subresource=sub, owned=owned
        )
        if scaling:
            return json_response(to_scale(obj))
        return self._written_response(t, obj, dry)

    def _written_response(self, t: Target, obj: dict[str, Any], dry: bool) -> web.Response:
        """The object after a write: the bytes just stored (encoded once, at commit) unless it
        was a dry run, which stored nothing."""
        raw = None if dry else self.store.get_raw(t.rt, t.namespace or "", t.name or "")
        return (
            json_response(obj)
            if raw is None
            else web.Response(body=raw, content_type="application/json")
        )

    async def _delete(self, request: web.Request, t: Target) -> web.Response:
        assert t.name is not None
        raw = await request.read()
        opts = _parse_json(raw) if raw.strip() else {}
        precondition = None
        dry = _dry_run(request)
        if isinstance(opts, dict):
            precondition = (opts.get("preconditions") or {}).get("resourceVersion")
            dry = dry or "All" in (opts.get("dryRun") or [])
        obj = self.store.delete(
            t.rt, t.namespace, t.name, dry_run=dry, precondition_rv=precondition
        )
        return json_response(obj)

    async def _delete_collection(self, request: web.Request, t: Target) -> web.Response:
        q = request.query
        flt = Filter.build(t.namespace, q.get("labelSelector"), q.get("fieldSelector"))
        items = self.store.list_objects(t.rt, flt).items
        deleted = [
            self.store.delete(
                t.rt,
                o["metadata"].get("namespace"),
                o["metadata"]["name"],
                dry_run=_dry_run(request),
            )
            for o in items
        ]
        return json_response(
            {
                "kind": t.rt.list_kind,
                "apiVersion": t.rt.api_version,
                "metadata": {"resourceVersion": str(self.store.rv)},
                "items": deleted,
            }
        )


def _parse_json(raw: bytes) -> Any:
    try:
        return jsonio.loads(raw)
    except ValueError as exc:  # orjson's and json's decode errors alike
        raise bad_request(f"invalid JSON in request body: {exc}") from exc


async def _read_json(request: web.Request) -> Any:
    if "protobuf" in request.content_type:
        # Newer kubectl sends typed objects as protobuf; say so plainly rather than failing to
        # parse the bytes as JSON.
        raise SandboxError(
            415, "UnsupportedMediaType",
            f"the sandbox accepts JSON and YAML bodies, not {request.content_type}",
        )  # fmt: skip
    raw = await request.read()
    if not raw.strip():
        raise bad_request("the request body is empty")
    if request.content_type in _YAML:
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise bad_request(f"invalid YAML in request body: {exc}") from exc
    return _parse_json(raw)
