"""What every API route shares: JSON answers, RFC 9457 problem documents, the operator check."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

from clustersync.adapters.metrics import bad_input
from clustersync.adapters.store import WriteRecord
from clustersync.model.identity import TokenTable

PROBLEM_JSON = "application/problem+json"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def problem(status: int, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    """A problem document; ``detail`` says what was wrong in one sentence. Counted as bad input
    of the API under its status, so a client hammering wrong requests shows in the metrics."""
    bad_input("api", str(status))
    doc = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status}
    doc["detail"] = detail
    return web.Response(
        body=orjson.dumps(doc), status=status, content_type=PROBLEM_JSON, headers=headers
    )


@web.middleware
async def problems_for_api(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own refusals on API paths (no such route, method not allowed, body too large)
    as problem documents too, so an API client parses every error the same way."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or not request.path.startswith("/api/"):
            raise
        if exc.status == 404:
            detail = f"no route serves {request.path!r}; see /api/v1/docs"
        elif exc.status == 405:
            allowed = exc.headers.get("Allow", "")
            detail = f"{request.method} is not allowed on {request.path} (allowed: {allowed})"
        else:
            detail = exc.text or exc.reason
        keep = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
        return problem(exc.status, detail.strip(), keep)


def json_response(
    doc: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(doc), status=status, content_type="application/json", headers=headers
    )


def refuse_unless_admin(tokens: TokenTable, request: web.Request) -> web.Response | None:
    """None for an operator's bearer token, else the 401 or 403 problem to answer with."""
    header = request.headers.get("Authorization", "")
    token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
    identity = tokens.identify(token)
    if identity is None:
        return problem(401, "missing or unknown bearer token")
    if not identity.admin:
        return problem(403, "this token may not use the backend API")
    return None


def write_json(write: WriteRecord) -> dict[str, Any]:
    """A backend write and its outcome, as ``GET /api/v1/writes/{id}`` answers it."""
    return {
        "id": write.id,
        "account": write.account,
        "cluster": write.cluster,
        "kind": str(write.ref.kind),
        "namespace": write.ref.namespace,
        "name": write.ref.name,
        "verb": write.verb,
        "status": write.status.value,
        "reason": write.reason,
        "createdAt": write.created_at,
        "updatedAt": write.updated_at,
    }
