"""Object stores: the backend's copy of every synced object (SQLite embedded, PostgreSQL)."""

from clustersync.adapters.store.base import (
    DeadLetter,
    Delete,
    ObjectKey,
    Store,
    StoredObject,
    StoreError,
    StoreUnavailableError,
    Write,
)

__all__ = [
    "DeadLetter",
    "Delete",
    "ObjectKey",
    "Store",
    "StoreError",
    "StoreUnavailableError",
    "StoredObject",
    "Write",
]
