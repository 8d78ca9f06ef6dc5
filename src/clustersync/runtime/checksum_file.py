"""The agent's checksum file in its data directory: loaded at start, saved atomically.

The format and every check on it are in protocol.checksum_cache; here the file is read and
written. Saving writes a temporary file beside it, flushes it to disk, and renames it over the
old one (then flushes the directory), so a crash at any moment leaves the previous file or the
new one, and at worst a partial temporary file, which the next start removes. Anything wrong
with the file (unreadable, torn, edited, written under other rules) is logged once with a
metric, and the agent starts without it: the file only saves time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from clustersync.adapters.metrics import CHECKSUM_CACHE
from clustersync.protocol.checksum_cache import Entry, decode, encode
from clustersync.protocol.sealed import RejectedFileError

log = logging.getLogger("clustersync.agent")

FILE_NAME = "checksums.v1"


class ChecksumFile:
    def __init__(self, directory: Path, fingerprint: str) -> None:
        self.directory = directory
        self.fingerprint = fingerprint
        self.path = directory / FILE_NAME
        self.temporary = directory / f".{FILE_NAME}.tmp"

    async def load(self) -> list[Entry]:
        """The saved entries, or none (with a log line and a metric) if the file is unusable."""
        return await asyncio.to_thread(self._load)

    def _load(self) -> list[Entry]:
        remove_unfinished(self.temporary)
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            CHECKSUM_CACHE.labels("absent").inc()
            log.info("no checksum file at %s: every object is hashed", self.path)
            return []
        except OSError as exc:
            return self._discard("unreadable", f"cannot read it: {exc}")
        try:
            entries = decode(data, self.fingerprint)
        except RejectedFileError as exc:
            return self._discard(exc.reason, exc.detail)
        CHECKSUM_CACHE.labels("loaded").inc()
        log.info("loaded %d checksums from %s", len(entries), self.path)
        return entries

    def _discard(self, reason: str, detail: str) -> list[Entry]:
        CHECKSUM_CACHE.labels(f"discarded_{reason}").inc()
        log.warning("ignoring the checksum file %s (%s): %s", self.path, reason, detail)
        self.remove()
        return []

    def rejected(self, detail: str) -> None:
        """A sample of the loaded checksums did not match their objects: the file is wrong."""
        self._discard("mismatch", detail)

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()

    async def save(self, entries: Sequence[Entry]) -> bool:
        """Write the entries atomically; a failure is logged and counted, never raised.
        Encoding 100k entries takes a while: done in a thread, so the event loop (heartbeats)
        keeps its turns; ``entries`` must not change meanwhile (a snapshot)."""
        try:
            await asyncio.to_thread(self._write, entries)
        except OSError as exc:
            CHECKSUM_CACHE.labels("save_failed").inc()
            log.warning("cannot save checksums to %s: %s", self.path, exc)
            return False
        CHECKSUM_CACHE.labels("saved").inc()
        return True

    def _write(self, entries: Sequence[Entry]) -> None:  # in a worker thread
        write_atomically(self.path, self.temporary, encode(entries, self.fingerprint))


def write_atomically(path: Path, temporary: Path, data: bytes) -> None:
    """``path`` holds ``data`` afterwards, or (after a crash at any moment) what it held before;
    at worst a partial ``temporary`` is left, for the next load to remove."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(temporary, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself must survive a power cut
    finally:
        os.close(directory)


def remove_unfinished(temporary: Path) -> None:
    if temporary.exists():
        # A save that never finished (the agent was killed): the file beside it is whole.
        log.info("removing %s, left by an unfinished save", temporary)
        with contextlib.suppress(OSError):
            temporary.unlink()
