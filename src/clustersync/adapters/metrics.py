"""Prometheus metrics, and which process role exports each.

Metrics live in the process-wide registry (several roles share one process in ``backend`` and
the demo); a process's ``/metrics`` shows only the families of its roles (:class:`RoleView`), so
an agent never shows ``clustersync_connected_agents``. :data:`METRIC_ROLES` assigns every family;
a test fails for a family it does not name.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric

BAD_INPUT = Counter(
    "clustersync_bad_input_total",
    "Inputs rejected as malformed or not allowed, by component and reason",
    ["component", "reason"],
)
MESSAGES = Counter(
    "clustersync_messages_total",
    "Protocol messages handled, by component, direction and event",
    ["component", "direction", "event"],
)
FRAME_BYTES = Counter(
    "clustersync_frame_bytes_total",
    "Websocket payload bytes, by component and direction",
    ["component", "direction"],
)
CONNECTED_AGENTS = Gauge("clustersync_connected_agents", "Agents connected to this server")
RECONNECTS = Counter("clustersync_agent_reconnects_total", "Websocket reconnects by the agent")
DEAD_LETTERS = Counter(
    "clustersync_dead_letters_total", "Bus messages parked in the dead-letter table", ["reason"]
)
CLUSTER_WRITES = Counter(
    "clustersync_cluster_writes_total", "Backend writes applied to the cluster", ["verb", "result"]
)
SUPERSEDED_WRITES = Counter(
    "clustersync_superseded_writes_total",
    "Backend writes not forwarded because a newer write to the same object went out first",
)
INGEST_SECONDS = Histogram(
    "clustersync_ingest_seconds", "Time to handle one bus message in the ingester"
)


def bad_input(component: str, reason: str) -> None:
    BAD_INPUT.labels(component, reason).inc()


BUS_EVICTED = Counter(
    "clustersync_bus_evicted_total",
    "Queued bus messages the bus itself discarded before every consumer acknowledged them",
    ["bus", "reason"],
)
BUS_FULL = Counter(
    "clustersync_bus_full_total",
    "Publishes refused because the sender's cluster already had its bound of messages queued",
    ["bus"],
)
STALE_WRITES = Counter(
    "clustersync_stale_writes_total",
    "Store writes refused because the row already holds an equal or higher version",
    ["source"],
)
SKIPPED_OBJECTS = Counter(
    "clustersync_agent_skipped_objects_total",
    "Objects the agent could not handle and skipped (see its /deadletters list), by reason",
    ["reason"],
)
INGESTED = Counter(
    "clustersync_ingested_objects_total",
    "Objects the agent's HTTP ingest endpoint accepted and queued for the backend, by message",
    ["message"],
)

APPLY_SECONDS = Histogram(
    "clustersync_apply_seconds",
    "Time for the agent to carry out one backend write in the cluster (retries included)",
    ["verb"],
)
INGEST_LAG_SECONDS = Histogram(
    "clustersync_ingest_lag_seconds",
    "From the server publishing an agent's message to the ingester having handled it",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)

AGENT_QUEUED = Gauge(
    "clustersync_agent_queued",
    "Changes waiting in the agent: keys in the coalescer, frames in the outbox to the backend",
    ["queue"],
)

CHECKSUM_CACHE = Counter(
    "clustersync_agent_checksum_cache_total",
    "The agent's persisted checksum file: loaded, saved, or discarded (and why)",
    ["outcome"],
)

INFORMER_SNAPSHOT = Counter(
    "clustersync_agent_informer_snapshot_total",
    "The agent's saved informer caches: loaded, resumed (watched without a list), relisted "
    "instead (410, an error), saved, or discarded (and why)",
    ["outcome"],
)

TASK_FAILURES = Counter(
    "clustersync_task_failures_total",
    "Background task failures (each logged, then restarted or fatal), by component and task",
    ["component", "task"],
)

AGENT, SERVER, INGESTER, API = "agent", "server", "ingester", "api"
EVERY_ROLE = frozenset({AGENT, SERVER, INGESTER, API})
BACKEND_ROLES = frozenset({SERVER, INGESTER, API})

# Family names (counters without ``_total``) and the roles that export them.
METRIC_ROLES: dict[str, frozenset[str]] = {
    "clustersync_bad_input": EVERY_ROLE,
    "clustersync_log_suppressed": EVERY_ROLE,
    "clustersync_task_failures": EVERY_ROLE,
    "clustersync_listener_events": EVERY_ROLE,
    "clustersync_open_connections": EVERY_ROLE,
    "clustersync_messages": frozenset({AGENT, SERVER, INGESTER}),
    "clustersync_frame_bytes": frozenset({AGENT, SERVER}),
    "clustersync_bus_evicted": BACKEND_ROLES,
    "clustersync_bus_full": BACKEND_ROLES,
    "clustersync_agent_reconnects": frozenset({AGENT}),
    "clustersync_cluster_writes": frozenset({AGENT}),
    "clustersync_agent_skipped_objects": frozenset({AGENT}),
    "clustersync_ingested_objects": frozenset({AGENT}),
    "clustersync_apply_seconds": frozenset({AGENT}),
    "clustersync_agent_queued": frozenset({AGENT}),
    "clustersync_agent_checksum_cache": frozenset({AGENT}),
    "clustersync_agent_informer_snapshot": frozenset({AGENT}),
    "clustersync_connected_agents": frozenset({SERVER}),
    "clustersync_dead_letters": frozenset({INGESTER}),
    "clustersync_ingest_seconds": frozenset({INGESTER}),
    "clustersync_ingest_lag_seconds": frozenset({INGESTER}),
    "clustersync_stale_writes": frozenset({INGESTER}),
    "clustersync_superseded_writes": frozenset({INGESTER}),
    # The fleet's per-cluster gauges (runtime/cluster_metrics.py), from the shared store.
    "clustersync_cluster_connected": frozenset({INGESTER}),
    "clustersync_cluster_objects": frozenset({INGESTER}),
    "clustersync_cluster_last_message_timestamp_seconds": frozenset({INGESTER}),
    "clustersync_cluster_sync_lag_seconds": frozenset({INGESTER}),
}


def exported_by(name: str, roles: Iterable[str]) -> bool:
    """Whether a process of ``roles`` exports the family ``name``: ours by the table (a family
    missing from it everywhere, so nothing is ever hidden by mistake), others (``process_``,
    ``python_``) always."""
    if not name.startswith("clustersync_") or name not in METRIC_ROLES:
        return True
    return not METRIC_ROLES[name].isdisjoint(roles)


class RoleView:
    """The process registry seen by a process of some roles (``generate_latest`` reads it)."""

    def __init__(self, roles: Iterable[str]) -> None:
        self.roles = frozenset(roles)
        unknown = self.roles - EVERY_ROLE
        if unknown:
            raise ValueError(f"unknown metric roles: {sorted(unknown)}")

    def collect(self) -> Iterator[Metric]:
        for family in REGISTRY.collect():
            if exported_by(family.name, self.roles):
                yield family
