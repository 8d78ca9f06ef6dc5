"""The agent: watches the cluster, talks to the server, applies the backend's writes.

A driver around two sans-I/O cores: :class:`AgentSession` (what to send for a cluster change or a
backend message) and :class:`LinkSession` (outbox bounds, acks, awaiting-inventory, resync
timing). Informers feed a coalescer; a flusher turns due entries into messages while connected;
the link loop dials, resyncs on each (re)connect, and handles the backend's messages in arrival
order. While disconnected, changes wait in the coalescer (latest per object). Producers wait for
room in the bounded outbox, and informers wait while the coalescer is full, so memory stays
bounded; long walks over a kind yield to the event loop, so heartbeats are never missed.

The agent is put together from its parts: runtime.agent_core (state, coalescer intake, outbox),
runtime.agent_flusher, runtime.agent_link, runtime.agent_resync, runtime.agent_backend and
runtime.agent_housekeeping; this module adds running them and the readiness it reports.

Background tasks are supervised: an informer or the flusher that fails is logged and restarted
(and stops the agent with an error if it keeps failing); a failing per-connection task is logged
and ends the connection, which redials and starts it again.
"""

from __future__ import annotations

import asyncio

from clustersync.link.client import LinkError
from clustersync.runtime.agent_flusher import Flusher
from clustersync.runtime.agent_link import LinkLoop, use_fast_deflate
from clustersync.runtime.memtrim import trimmer


class Agent(LinkLoop, Flusher):
    """The agent process's work for one cluster (see the module docstring)."""

    def busy(self) -> str:
        """What the agent still has to do ("" when nothing): read-only, so that tests wait for
        an idle agent on its own state rather than for its traffic to pause."""
        sync, listings = self.progress.current, self.progress.listings()
        if sync is None:
            syncing = True
        elif all(listing.complete for listing in listings.values()):
            syncing = sync.finished_at is None  # done and its last report sent
        else:  # a kind not listed (yet, or not served at all) holds back only itself
            syncing = any(
                listing.complete and not sync.kind_done(kind, listing)
                for kind, listing in listings.items()
            )
        pending = {
            "not connected": not self.connected.is_set(),
            "sync after connect under way": syncing,
            "changes to flush": len(self.coalescer) + self._flushing,
            "frames to send": len(self.link.outbox) + len(self.link.acks),
            "backend messages to handle": self._unhandled,
        }
        return ", ".join(f"{what} ({n})" if n is not True else what
                         for what, n in pending.items() if n)

    def ready(self) -> bool:
        """Connected to a server, with every resource listed at least once."""
        return not self.waiting_for()

    def waiting_for(self) -> str:
        """What keeps the agent from being ready ("" when ready), for /readyz's body."""
        unlisted = [str(k) for k, inf in self.informers.items() if not inf.synced.is_set()]
        if unlisted:
            return f"waiting for the first list of: {', '.join(unlisted)}"
        if not self.connected.is_set():
            return f"waiting for the connection to {self.config.server}"
        return ""

    async def run(self) -> None:
        """Run until cancelled; raises PermanentLinkError if the server refuses the agent, and
        TaskFailedError if an informer or the flusher keeps failing."""
        if self.config.compress:
            use_fast_deflate()
        await self._load_checksums()
        await self._restore_caches()
        for kind, informer in self.informers.items():
            self.supervisor.spawn(f"informer {kind}", informer.run)
        self.supervisor.spawn("flusher", self._flush_loop)
        if self.checksum_file is not None:
            self.supervisor.spawn("checksum saver", self._save_checksums_periodically)
        release = trimmer()
        if release is not None:
            self.supervisor.spawn("memory release", lambda: self._release_memory(release))
        link = asyncio.create_task(self._link_loop(), name="agent:link")
        failed = asyncio.create_task(self.supervisor.failed.wait())
        try:
            await asyncio.wait({link, failed}, return_when=asyncio.FIRST_COMPLETED)
            if link.done():
                link.result()  # the refusal or giving up that ended it
                raise LinkError("the link loop ended")  # it never returns on its own
            assert self.supervisor.failure is not None
            raise self.supervisor.failure
        finally:
            for task in (link, failed):
                task.cancel()
            await asyncio.gather(link, failed, return_exceptions=True)
            await self.supervisor.stop()
            await self.save_checksums()  # on the way out, so the next start need not hash
            await self.save_caches()  # nor list
