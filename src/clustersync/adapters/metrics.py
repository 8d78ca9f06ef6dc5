"""Prometheus metrics, one set per process (served at /metrics by the server and the agent)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
