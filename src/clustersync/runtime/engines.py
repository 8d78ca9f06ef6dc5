"""Opening stores and buses from URLs (``sqlite:///x.db``, ``postgresql://…``, ``memory``, ``nats://…``)."""

from __future__ import annotations

from clustersync.adapters.bus import Bus, BusError
from clustersync.adapters.store import Store, StoreError


async def open_store(url: str) -> Store:
    if url.startswith("sqlite:"):
        from clustersync.adapters.store.sqlite import open_sqlite

        return await open_sqlite(url)
    if url.startswith(("postgresql:", "postgres:")):
        from clustersync.adapters.store.postgres import open_postgres

        return await open_postgres(url)
    raise StoreError(f"unsupported database URL {url!r} (use sqlite:///PATH or postgresql://…)")


async def open_bus(url: str, *, version_floor: int = 0) -> Bus:
    """``version_floor``: for the embedded bus, the highest version the store holds (see
    ``Store.highest_version``), so that a restarted bus numbers above it even if the clock
    stepped back. Buses that outlive the process ignore it."""
    if url in ("", "memory", "memory://"):
        from clustersync.adapters.bus.memory import MemoryBus

        return MemoryBus(version_floor=version_floor)
    if url.startswith(("nats://", "tls://")):
        from clustersync.adapters.bus.nats import open_nats

        return await open_nats(url)
    if url.startswith(("pulsar://", "pulsar+ssl://")):
        from clustersync.adapters.bus.pulsar import open_pulsar

        return await open_pulsar(url)
    raise BusError(f"unsupported bus URL {url!r} (use memory, nats://HOST:PORT or pulsar://…)")
