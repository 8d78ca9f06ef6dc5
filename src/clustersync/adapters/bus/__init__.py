"""Message buses: the backend's event log (embedded in-process, NATS JetStream, Pulsar)."""

from clustersync.adapters.bus.base import (
    Bus,
    BusError,
    BusFullError,
    BusMessageTooLargeError,
    Delivery,
    Handler,
    Subscription,
)

__all__ = ["Bus", "BusError", "BusFullError",
    "BusMessageTooLargeError",
    "Delivery", "Handler", "Subscription"]
