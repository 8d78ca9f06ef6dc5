"""The agent's HTTP ingest endpoint: kubescape's node-agent and operator POST objects here, and
the agent sends them to the backend as the Go synchronizer does (see
:mod:`clustersync.protocol.ingest` for the mapping).

Plain HTTP on the configured port (8089 in kubescape's chart), ``GET /healthz`` and ``GET
/readyz`` beside the ingest path. A request is answered 202 once its message is in the agent's
outbox (it travels when the link is up, and survives reconnects); bad input gets a 4xx with the
reason, a log line (at most one per reason per interval) and a count in
``clustersync_bad_input_total{component="ingest"}``; a body over the limit is refused with 413
before it is read, and one that takes longer than the read timeout to arrive with 408; request
heads are bound by the same timeout and connections by a limit, as on every listener.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from clustersync.adapters.metrics import INGESTED, bad_input
from clustersync.protocol.ingest import IngestRefusedError, ingest
from clustersync.protocol.messages import Message
from clustersync.runtime.config import IngestConfig
from clustersync.runtime.http import Site
from clustersync.runtime.listener import ListenerLimits

log = logging.getLogger("clustersync.ingest")

Submit = Callable[[list[Message]], Awaitable[None]]
WARN_EVERY = 10.0  # seconds between warnings of one reason
RETRY_AFTER = 5  # seconds, with a 503 when the agent cannot queue more
MAX_CONNECTIONS = 256  # node-agents (one per node) and the operator; more waits or gets 503


class _Warnings:
    """One log line per reason per interval, with how many were left out."""

    def __init__(self, every: float) -> None:
        self.every = every
        self._last: dict[str, float] = {}
        self._quiet: dict[str, int] = {}

    def warn(self, reason: str, text: str) -> None:
        now = time.monotonic()
        last = self._last.get(reason)
        if last is not None and now - last < self.every:
            self._quiet[reason] = self._quiet.get(reason, 0) + 1
            return
        left_out = self._quiet.pop(reason, 0)
        self._last[reason] = now
        suffix = f" ({left_out} more like it not logged)" if left_out else ""
        log.warning("ingest refused (%s): %s%s", reason, text, suffix)


class IngestEndpoint:
    """The HTTP server; ``submit`` hands messages to the agent's send path."""

    def __init__(
        self, config: IngestConfig, submit: Submit, *, warn_every: float = WARN_EVERY
    ) -> None:
        self.config = config
        self._resources = {spec.kind: spec.strategy for spec in config.resources}
        self._submit = submit
        self._warnings = _Warnings(warn_every)
        self._started = False
        app = web.Application(client_max_size=config.max_body_bytes)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_route("*", "/{tail:.*}", self._ingest)
        # The listener's limits (header timeout, connection limit) as on every other port.
        limits = ListenerLimits(header_timeout=config.read_timeout, max_connections=MAX_CONNECTIONS)
        self.site = Site(app, "ingest", limits)

    @property
    def url(self) -> str:
        return self.site.url

    async def start(self) -> str:
        url = await self.site.start(self.config.host, self.config.port)
        self._started = True
        log.info("ingest endpoint on %s", url)
        return url

    async def stop(self) -> None:
        self._started = False
        await self.site.stop()

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        if self._started:
            return web.Response(text="ready\n")
        return web.Response(text="not ready\n", status=503)

    async def _ingest(self, request: web.Request) -> web.Response:
        try:
            body = await self._body(request)
            message = ingest(request.method, request.path, body, self._resources)
        except IngestRefusedError as refused:
            return self._refuse(refused)
        try:
            await self._submit([message])
        except Exception as exc:  # the agent could not take it: the caller should retry
            bad_input("ingest", "not_queued")
            self._warnings.warn("not_queued", f"cannot queue {message.ref}: {exc}")
            return web.Response(
                status=503,
                text=f"cannot queue the object: {exc}\n",
                headers={"Retry-After": str(RETRY_AFTER)},
            )
        INGESTED.labels(type(message).__name__).inc()
        return web.Response(status=202, text="accepted\n")

    async def _body(self, request: web.Request) -> bytes:
        limit = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise IngestRefusedError(413, "too_large", f"body over the limit of {limit} bytes")
        try:
            async with asyncio.timeout(self.config.read_timeout):
                return await request.read()
        except TimeoutError:
            raise IngestRefusedError(
                408, "slow_body", f"body not received within {self.config.read_timeout:g}s"
            ) from None
        except web.HTTPRequestEntityTooLarge:  # chunked, without a length up front
            raise IngestRefusedError(
                413, "too_large", f"body over the limit of {limit} bytes"
            ) from None

    def _refuse(self, refused: IngestRefusedError) -> web.Response:
        bad_input("ingest", refused.reason)
        self._warnings.warn(refused.reason, refused.text)
        return web.Response(status=refused.status, text=f"{refused.text}\n")
