"""An informer's saved cache in the agent's data directory: loaded at start, saved atomically.

One file per kind, beside the checksum file and written the same way (see runtime.checksum_file):
the format and its checks are in protocol.cache_snapshot. Anything wrong with a file
(unreadable, torn, edited, of another kind or cluster) is logged once with a metric, and that
informer lists as it would without it: the file only saves time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from clustersync.adapters.metrics import INFORMER_SNAPSHOT
from clustersync.model import Kind
from clustersync.protocol.cache_snapshot import (
    CacheSnapshot,
    decode,
    encode,
)
from clustersync.protocol.sealed import RejectedFileError
from clustersync.runtime.checksum_file import remove_unfinished, write_atomically

log = logging.getLogger("clustersync.agent")


def file_name(kind: Kind) -> str:
    return f"informer.{kind.group or 'core'}.{kind.version}.{kind.resource}.v1"


class CacheSnapshotFile:
    def __init__(self, directory: Path, kind: Kind, fingerprint: str) -> None:
        self.kind = kind
        self.fingerprint = fingerprint
        self.path = directory / file_name(kind)
        self.temporary = directory / f".{file_name(kind)}.tmp"
        self.saved_version = ""  # the resourceVersion of the last file saved or loaded

    async def load(self) -> CacheSnapshot | None:
        """The saved cache, or None (with a log line and a metric) if the file is unusable.
        Read, checked and decoded in a thread: tens of megabytes at 100k pods."""
        snapshot = await asyncio.to_thread(self._load)
        if snapshot is not None:
            self.saved_version = snapshot.resource_version
        return snapshot

    def _load(self) -> CacheSnapshot | None:
        remove_unfinished(self.temporary)
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            INFORMER_SNAPSHOT.labels("absent").inc()
            log.info("no saved cache of %s at %s: listing", self.kind, self.path)
            return None
        except OSError as exc:
            self._discard("unreadable", f"cannot read it: {exc}")
            return None
        try:
            snapshot = decode(data, self.fingerprint)
        except RejectedFileError as exc:
            self._discard(exc.reason, exc.detail)
            return None
        INFORMER_SNAPSHOT.labels("loaded").inc()
        log.info(
            "loaded %d %s as of resourceVersion %s from %s",
            len(snapshot.entries), self.kind, snapshot.resource_version, self.path,
        )
        return snapshot

    def _discard(self, reason: str, detail: str) -> None:
        INFORMER_SNAPSHOT.labels(f"discarded_{reason}").inc()
        log.warning("ignoring the saved cache %s (%s): %s", self.path, reason, detail)
        with contextlib.suppress(OSError):
            self.path.unlink()

    def rejected(self, detail: str) -> None:
        """A sample of the loaded entries was not what it claimed: the file is wrong."""
        self._discard("mismatch", detail)

    async def save(self, snapshot: CacheSnapshot) -> bool:
        """Write the snapshot atomically (encoded in a thread, so the event loop keeps its
        turns); a failure is logged and counted, never raised."""
        try:
            await asyncio.to_thread(self._write, snapshot)
        except OSError as exc:
            INFORMER_SNAPSHOT.labels("save_failed").inc()
            log.warning("cannot save the cache of %s to %s: %s", self.kind, self.path, exc)
            return False
        INFORMER_SNAPSHOT.labels("saved").inc()
        self.saved_version = snapshot.resource_version
        return True

    def _write(self, snapshot: CacheSnapshot) -> None:  # in a worker thread
        write_atomically(self.path, self.temporary, encode(snapshot, self.fingerprint))
