"""Per-cluster gauges of the fleet: connected, objects per kind, time of the last message and
sync lag, exported by ingesters.

Connection facts and counts come from the shared store (refreshed every ``REFRESH_INTERVAL``),
so every ingester replica exports the same values: alert on ``max by (account, cluster)``. The
lag is this replica's own: the age of the last agent message it handled, as published by the
server (a single replica sees only its share of the work queue).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from clustersync.adapters.metrics import INGEST_LAG_SECONDS
from clustersync.adapters.store import Store, StoreError
from clustersync.runtime.status import Key, load_states

log = logging.getLogger("clustersync.ingester")

REFRESH_INTERVAL = 15.0  # seconds; a scrape every 15-30 s sees values at most this old


@dataclass
class Snapshot:
    connected: dict[Key, bool] = field(default_factory=dict)
    objects: dict[tuple[str, str, str], int] = field(default_factory=dict)
    last_message: dict[Key, float] = field(default_factory=dict)


class ClusterGauges:
    """A Prometheus collector over the latest snapshot (swapped whole, so a scrape never sees
    half a refresh) and the lags observed since the start."""

    def __init__(self) -> None:
        self.snapshot = Snapshot()
        self.lag: dict[Key, float] = {}

    def observe_lag(self, account: str, cluster: str, published_at: float) -> None:
        lag = max(0.0, time.time() - published_at)
        self.lag[(account, cluster)] = lag
        INGEST_LAG_SECONDS.observe(lag)

    async def refresh(self, store: Store) -> None:
        states = await load_states(store)
        snapshot = Snapshot()
        for key, state in states.items():
            snapshot.connected[key] = bool(state.get("connected"))
            last = state.get("lastMessage")
            if isinstance(last, int | float):
                snapshot.last_message[key] = float(last)
        for count in await store.count_kinds():
            snapshot.objects[(count.account, count.cluster, str(count.kind))] = count.count
        self.snapshot = snapshot

    async def refresh_periodically(self, store: Store) -> None:
        while True:
            try:
                await self.refresh(store)
            except StoreError as exc:  # the gauges keep their last values meanwhile
                log.warning("cluster gauges not refreshed: %s", exc)
            await asyncio.sleep(REFRESH_INTERVAL)  # a timer, not synchronisation

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        connected = GaugeMetricFamily(
            "clustersync_cluster_connected",
            "1 while the cluster's agent is connected to some server replica, else 0",
            labels=["account", "cluster"],
        )
        for (account, cluster), up in sorted(snap.connected.items()):
            connected.add_metric([account, cluster], 1.0 if up else 0.0)
        objects = GaugeMetricFamily(
            "clustersync_cluster_objects",
            "Objects the backend holds, per cluster and kind",
            labels=["account", "cluster", "kind"],
        )
        for labels, n in sorted(snap.objects.items()):
            objects.add_metric(list(labels), float(n))
        last = GaugeMetricFamily(
            "clustersync_cluster_last_message_timestamp_seconds",
            "When the cluster's agent last sent a message (epoch seconds, as last reported)",
            labels=["account", "cluster"],
        )
        for (account, cluster), at in sorted(snap.last_message.items()):
            last.add_metric([account, cluster], at)
        lag = GaugeMetricFamily(
            "clustersync_cluster_sync_lag_seconds",
            "Age of the cluster's last agent message when this ingester handled it",
            labels=["account", "cluster"],
        )
        for (account, cluster), seconds in sorted(self.lag.items()):
            lag.add_metric([account, cluster], seconds)
        yield from (connected, objects, last, lag)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # families are built at collection time


CLUSTER_GAUGES = ClusterGauges()
REGISTRY.register(CLUSTER_GAUGES)
