"""List responses assembled from stored objects' bytes, streamed when large.

A list of 100k pods is about 600 MB of JSON; building it as one body would hold it all at
once (twice, while joining). Items are already encoded, so the body is written in chunks of
about ``CHUNK`` bytes with chunked transfer encoding; small lists keep a plain body with a
Content-Length.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from . import jsonio

CHUNK = 1024 * 1024


def _envelope(head: dict[str, Any]) -> tuple[bytes, bytes]:
    """The bytes before the first item and after the last: ``{...,"items":[`` and ``]}``."""
    encoded = jsonio.dumps({**head, "items": []})
    assert encoded.endswith(b"[]}")
    return encoded[:-2], b"]}"


async def stream_list(
    request: web.Request, head: dict[str, Any], items: list[bytes]
) -> web.StreamResponse:
    opening, closing = _envelope(head)
    if sum(len(raw) for raw in items) <= CHUNK:
        body = opening + b",".join(items) + closing
        return web.Response(body=body, content_type="application/json")
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    batch, size = [opening], len(opening)
    for index, raw in enumerate(items):
        if index:
            batch.append(b",")
        batch.append(raw)
        size += len(raw) + 1
        if size >= CHUNK:
            await resp.write(b"".join(batch))
            batch, size = [], 0
    batch.append(closing)
    await resp.write(b"".join(batch))
    await resp.write_eof()
    return resp
