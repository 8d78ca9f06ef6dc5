"""The agent's upkeep across runs and after bursts of work.

:class:`Housekeeping` loads the checksums saved by the last run (checking a sample against the
live objects before trusting them), restores the informers' saved caches, saves both
periodically and at shutdown, and hands memory freed after a burst back to the system once the
agent is idle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from clustersync.adapters.kube.informer import UnusableSnapshotError
from clustersync.model import Kind
from clustersync.protocol.agent_types import object_version
from clustersync.protocol.checksum_cache import Entry, sample
from clustersync.protocol.shaping import ShapingError
from clustersync.runtime.agent_core import AgentCore


class Housekeeping(AgentCore):
    """Saved checksums and informer caches, and memory released after bursts."""

    async def _release_memory(self, release: Callable[[], None]) -> None:
        """After a burst of work (an initial sync, a reconnect's repairs), once the agent is idle,
        hand the memory it freed back to the system: its RSS follows what it holds, not its
        peak. Checked every few seconds; a trim only follows work."""
        busy = False
        while True:
            await asyncio.sleep(self.release_check_interval)  # a period, not synchronisation
            idle = not self.link.outbox and len(self.coalescer) == 0
            if busy and idle:
                release()
            busy = not idle or self.session.synced.checksum_changes != self._last_seen_changes
            self._last_seen_changes = self.session.synced.checksum_changes

    async def _load_checksums(self) -> None:
        if self.checksum_file is None:
            return
        entries = await self.checksum_file.load()
        self.session.preload_checksums(entries)
        by_kind: dict[Kind, list[Entry]] = {}
        for entry in entries:
            by_kind.setdefault(entry.ref.kind, []).append(entry)
        del entries
        self._checksum_samples = {kind: sample(group) for kind, group in by_kind.items()}
        self._saved_at_change = self.session.synced.checksum_changes  # nothing new to save

    def _check_checksum_samples(self, kind: Kind) -> None:
        """Before the loaded checksums of a kind are first used, re-hash a random sample of
        those that match their live object's version; one disagreement discards them all."""
        samples = self._checksum_samples.pop(kind, None)
        if not samples or self.checksum_file is None:
            return
        cache = self.informers[kind].cache
        for entry in samples:
            live = cache.get((entry.ref.namespace, entry.ref.name))
            if live is None or object_version(live) != entry.version:
                continue  # never used: the object changed or went
            try:
                agrees = self.session.checksum_agrees(kind, live)
            except ShapingError:
                continue
            if not agrees:
                self.session.forget_checksums()
                self._checksum_samples.clear()
                self.checksum_file.rejected(f"{entry.ref} hashes otherwise than saved")
                return

    async def _save_checksums_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.checksum_save_interval)  # a period, not synchronisation
            await self.save_checksums()
            await self.save_caches()

    async def _restore_caches(self) -> None:
        for kind, file in self.cache_files.items():
            snapshot = await file.load()
            if snapshot is None:
                continue
            try:
                self.informers[kind].restore(snapshot)
            except UnusableSnapshotError as exc:
                file.rejected(str(exc))

    async def save_caches(self) -> None:
        """Save each informer's cache whose resourceVersion moved since the last save (a cache
        in the middle of a list is not exact and keeps its older, still valid, file)."""
        for kind, file in self.cache_files.items():
            snapshot = self.informers[kind].snapshot()
            if snapshot is not None and snapshot.resource_version != file.saved_version:
                await file.save(snapshot)

    async def save_checksums(self) -> None:
        """Save the held checksums if any changed since the last save."""
        changes = self.session.synced.checksum_changes
        if self.checksum_file is None or changes == self._saved_at_change:
            return
        if await self.checksum_file.save(list(self.session.checksum_entries())):
            self._saved_at_change = changes
