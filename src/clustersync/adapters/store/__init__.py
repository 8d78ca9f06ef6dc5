"""Object stores: the backend's copy of every synced object (SQLite embedded, PostgreSQL)."""

from clustersync.adapters.store.base import (
    ClusterInfo,
    ClusterState,
    DeadLetter,
    Delete,
    KindCount,
    ObjectKey,
    Store,
    StoredObject,
    StoreError,
    StoreUnavailableError,
    Write,
    WriteRecord,
)

__all__ = [
    "ClusterInfo",
    "ClusterState",
    "DeadLetter",
    "Delete",
    "KindCount",
    "ObjectKey",
    "Store",
    "StoreError",
    "StoreUnavailableError",
    "StoredObject",
    "Write",
    "WriteRecord",
]
