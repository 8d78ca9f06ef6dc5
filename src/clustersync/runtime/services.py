"""The backend's parts as separately deployable processes (``server``, ``ingester``, ``api``).

``clustersync backend`` runs all three in one process on the embedded bus; these builders let
each run alone, N replicas of each, sharing NATS (or Pulsar) and PostgreSQL.
"""

from __future__ import annotations

from aiohttp import web

from clustersync.adapters.bus import Bus
from clustersync.adapters.metrics import API, SERVER
from clustersync.adapters.store import DeadLetter, Store
from clustersync.model.identity import TokenTable
from clustersync.runtime.api import BackendApi
from clustersync.runtime.backend import MAX_BODY
from clustersync.runtime.http import Site, add_health_routes
from clustersync.runtime.listener import ListenerLimits
from clustersync.runtime.server import SyncServer
from clustersync.runtime.ui import Dashboard


def server_site(server: SyncServer, limits: ListenerLimits | None = None) -> Site:
    app = web.Application(client_max_size=MAX_BODY)
    add_health_routes(app, roles=[SERVER])
    server.add_routes(app)
    return Site(app, "server", limits)


def api_site(
    store: Store, bus: Bus, tokens: TokenTable, limits: ListenerLimits | None = None
) -> Site:
    app = web.Application(client_max_size=MAX_BODY)
    add_health_routes(app, roles=[API])
    api = BackendApi(store, bus, tokens)
    api.add_routes(app)
    # No agent sockets here: connection state as replicas shared it, else unknown.
    Dashboard(store, bus, tokens, states=api.cluster_states).add_routes(app)
    return Site(app, "api", limits)


async def replay_dead_letter(store: Store, bus: Bus, letter: DeadLetter) -> int:
    """Publish a parked message again on its subject, then drop it; returns the new seq."""
    seq = await bus.publish(letter.subject, letter.data)
    await store.drop_dead_letter(letter.id)
    return seq
