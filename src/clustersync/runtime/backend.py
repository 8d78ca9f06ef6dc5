"""``clustersync backend``: server, ingester and API in one process, on one port."""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass, field

from aiohttp import web

from clustersync.adapters.bus import Bus
from clustersync.adapters.bus.memory import MemoryBus
from clustersync.adapters.metrics import BACKEND_ROLES
from clustersync.adapters.store import Store
from clustersync.model.identity import TokenTable
from clustersync.runtime.api import BackendApi, republish_pending
from clustersync.runtime.http import Site, add_health_routes
from clustersync.runtime.ingester import Ingester
from clustersync.runtime.listener import Gate, ListenerLimits
from clustersync.runtime.server import SyncServer
from clustersync.runtime.supervisor import Supervisor
from clustersync.runtime.ui import Dashboard, server_links

log = logging.getLogger("clustersync.backend")

MAX_BODY = 64 * 1024 * 1024  # objects such as SBOMs reach tens of MB


@dataclass
class Backend:
    bus: Bus
    store: Store
    tokens: TokenTable
    heartbeat: float = 20.0
    reconcile_interval: float = 600.0
    limits: ListenerLimits = field(default_factory=ListenerLimits)
    message_rate: float = 2000.0
    message_burst: int = 200_000
    replica: str = ""
    fast_digests: bool | None = None  # None: the server decides from the bus
    server: SyncServer = field(init=False)
    ingester: Ingester = field(init=False)
    url: str = ""
    _site: Site | None = None

    def __post_init__(self) -> None:
        self.server = SyncServer(
            self.bus,
            self.tokens,
            heartbeat=self.heartbeat,
            reconcile_interval=self.reconcile_interval,
            message_rate=self.message_rate,
            message_burst=self.message_burst,
            replica=self.replica,
            fast_digests=self.fast_digests,
        )
        self.ingester = Ingester(self.bus, self.store)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        add_health_routes(app, roles=BACKEND_ROLES)  # server, ingester and API in one
        api = BackendApi(self.store, self.bus, self.tokens)
        api.add_routes(app, root=False)  # the server's catch-all owns "/" (kubescape agents)
        self.server.fallback = api.queries.fallback  # plain HTTP on a path no route serves
        Dashboard(
            self.store, self.bus, self.tokens, states=api.cluster_states,
            links=lambda: server_links(
                self.server.connections, asyncio.get_running_loop().time
            ),
        ).add_routes(app)
        self.server.add_routes(app)  # last: its catch-all accepts websockets on any path
        return app

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None
    ) -> None:
        await self.ingester.start()
        if isinstance(self.bus, MemoryBus):
            # The embedded bus lost whatever it held when the process stopped; the store did not.
            await republish_pending(self.store, self.bus)
        self._site = Site(self.app(), "backend", self.limits)
        self.url = await self._site.start(host, port, tls)
        log.debug("backend serving on %s", self.url)  # the CLI prints the start line

    @property
    def supervisors(self) -> list[Supervisor]:
        """Every supervisor of this process's background tasks."""
        sites = [self._site.supervisor] if self._site is not None else []
        return [self.server.supervisor, self.ingester.supervisor, *sites]

    @property
    def gate(self) -> Gate:
        """The listener's connection table and limits (read per connection, so adjustable)."""
        assert self._site is not None, "start() first"
        return self._site.gate

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http")  # https -> wss

    async def stop(self) -> None:
        if self._site is not None:
            await self._site.stop()
            self._site = None
        await self.ingester.stop()
