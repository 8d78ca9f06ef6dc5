"""HTTP plumbing shared by every process: health, readiness, metrics, and serving an app."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from clustersync.adapters.metrics import EVERY_ROLE, RoleView
from clustersync.runtime.listener import Gate, Listener, ListenerLimits, head_middleware
from clustersync.runtime.supervisor import Supervisor


def add_health_routes(
    app: web.Application,
    ready: Callable[[], bool] = lambda: True,
    waiting: Callable[[], str] | None = None,
    roles: Iterable[str] = EVERY_ROLE,
) -> None:
    """``waiting`` says what the process waits for while not ready (the body of a 503);
    ``/metrics`` shows the metrics of ``roles`` only."""
    view = RoleView(roles)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ready\n")
        why = waiting() if waiting is not None else ""
        return web.Response(text=f"not ready: {why}\n" if why else "not ready\n", status=503)

    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(view)  # the registry as this process's roles see it
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)


def server_tls(cert_file: str | None, key_file: str | None) -> ssl.SSLContext | None:
    """A TLS context from a certificate chain and key, or None to serve plain HTTP."""
    if not cert_file and not key_file:
        return None
    if not cert_file or not key_file:
        raise ValueError("TLS needs both a certificate and a key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


class Site:
    """One aiohttp application on one port, behind the listener's limits."""

    def __init__(
        self, app: web.Application, name: str = "http", limits: ListenerLimits | None = None
    ) -> None:
        self.app = app
        self.url = ""
        self.gate = Gate(name, limits or ListenerLimits())
        app.middlewares.append(head_middleware(self.gate))
        self._runner: web.AppRunner | None = None
        self._listener: Listener | None = None
        self.supervisor = Supervisor(f"listener-{name}")

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None
    ) -> str:
        self._runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await self._runner.setup()
        self._listener = Listener(self._runner, self.gate, tls, self.supervisor)
        bound_host, bound_port = await self._listener.start(host, port)
        self.url = f"{'https' if tls else 'http'}://{bound_host}:{bound_port}"
        return self.url

    async def stop(self) -> None:
        if self._listener is not None:
            await self._listener.stop()  # no new connections; open ones end with the runner
            self._listener = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def health_site(
    ready: Callable[[], bool] = lambda: True,
    waiting: Callable[[], str] | None = None,
    *,
    roles: Iterable[str],
) -> Site:
    """Health, readiness and the metrics of ``roles`` (the agent's or the ingester's). Here,
    not with the backend's sites in runtime.services, so that an agent never loads those."""
    app = web.Application()
    add_health_routes(app, ready, waiting, roles)
    return Site(app, "health")
