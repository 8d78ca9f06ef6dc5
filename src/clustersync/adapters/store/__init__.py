"""Object stores: the backend's copy of every synced object (SQLite embedded, PostgreSQL)."""

from clustersync.adapters.store.base import (
    BadObjectError,
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
    UnparsedObject,
    Write,
    WriteRecord,
)

__all__ = [
    "BadObjectError",
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
    "UnparsedObject",
    "Write",
    "WriteRecord",
]
