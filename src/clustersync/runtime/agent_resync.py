"""The agent's resync after each (re)connect, and its reconciliations.

:class:`Resync` tells a clustersync server which kinds the agent syncs, then asks for its
inventory of each kind as soon as it is listed (and periodically after), and reconciles each
answer in steps, over the list as it arrives on a first sync. A kubescape server instead gets
every object announced by checksum through the coalescer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Iterator

from clustersync.adapters.kube import KubeError
from clustersync.adapters.kube.informer import Informer
from clustersync.model import Kind, ObjectRef
from clustersync.protocol.agent_reconcile import ReconcilePasses
from clustersync.protocol.agent_types import Listed
from clustersync.protocol.messages import AgentInfo, Batch, SyncedKind
from clustersync.runtime.agent_core import Pacer
from clustersync.runtime.agent_housekeeping import Housekeeping

log = logging.getLogger("clustersync.agent")


class Resync(Housekeeping):
    """What follows each connect: kinds described, inventories asked for and reconciled."""

    async def _announce_all(self) -> None:
        """Re-announce every synced object, so the backend can ask for what it lacks.

        Announcements go through the coalescer as ADDED events, unless a change of that object is
        already pending there: the pending change says more, and nothing is sent twice.
        """
        for informer in self.informers.values():
            await informer.synced.wait()
        pacer = Pacer()
        for kind, informer in self.informers.items():
            for (namespace, name), obj in informer.cache.items():
                key = (kind, namespace, name)
                if key not in self.coalescer:
                    self.coalescer.offer(key, (kind, "ADDED", obj), time.monotonic())
                    self._wake_flusher.set()
                await pacer.tick()

    async def _request_inventories(self) -> None:
        """Ask the backend what it holds of each kind, as soon as that kind is listed;
        :meth:`AgentSession.reconcile_steps` then sends exactly what is missing or different,
        and deletes what the cluster no longer has. A kind that cannot be listed (a CRD not
        installed) holds back only itself."""
        await asyncio.gather(*(self._request_inventory(kind) for kind in self.informers))
        # Periodically too: digests make an unchanged cluster cost a few kilobytes, and a repair
        # never waits for the next reconnect.
        while True:
            delay = self.link.resync_delay(time.monotonic())
            if delay is None:
                return
            await asyncio.sleep(delay)
            for kind, informer in self.informers.items():
                if informer.synced.is_set():  # an unlisted kind must never look empty
                    await self._send_inventory_request(kind)
            self.link.resynced(time.monotonic())

    async def _request_inventory(self, kind: Kind) -> None:
        informer = self.informers[kind]
        if await self._first_list_under_way(kind):
            # A first sync: the request carries no digests, so it need not wait for the list,
            # and the answer is reconciled as the list goes on (see _reconcile). Additions keep
            # going unannounced until the list is complete: the reconciliation covers them.
            await self._outbox_room()
            self._queue([self.session.inventory_batch(kind, None)])
            await informer.synced.wait()
            self.link.inventory_requested(kind)
            if informer.first_list_failed:
                # The answer was (or will be) dropped, see _reconcile: ask again, now listed.
                await self._send_inventory_request(kind)
            return
        await informer.synced.wait()
        self._check_checksum_samples(kind)
        # Pending additions are covered by the reconciliation, which reads the same cache.
        self.coalescer.discard_where(lambda pending: pending[0] == kind and pending[1] == "ADDED")
        self._pending_drained.set()
        self.link.inventory_requested(kind)
        await self._send_inventory_request(kind)

    async def _first_list_under_way(self, kind: Kind) -> bool:
        """Whether the kind's inventory may be requested before its list is complete: a first
        sync (no digests to compute, no saved checksums to check first) of a kind whose first
        list has begun (the API serves the kind: its answer never waits for a list that cannot
        come). Returns False at once once the kind is listed, and where digests are needed."""
        informer = self.informers[kind]
        if kind in self._checksum_samples or self.session.inventory_needs_digests(kind):
            return False
        while not informer.synced.is_set():
            informer.list_progressed.clear()
            if informer.arrivals is not None:
                return True
            await informer.list_progressed.wait()
        return False

    async def _send_inventory_request(self, kind: Kind) -> None:
        if not self.session.inventory_needs_digests(kind):
            # A first sync: the reconciliation of the whole answer does the hashing, once.
            await self._outbox_room()
            self._queue([self.session.inventory_batch(kind, None)])
            return
        pacer = Pacer()
        entries = []
        cache = self.informers[kind].cache
        listed = (Listed(ns, name, entry, cache) for (ns, name), entry in cache.current_entries())
        for entry in self.session.inventory_entries(kind, listed):
            entries.append(entry)
            await pacer.tick()
        await self._outbox_room()
        self._queue([self.session.inventory_batch(kind, entries)])

    async def _describe_kinds(self) -> None:
        """Learn which synced kinds are namespaced (the write policy needs it) and tell a
        clustersync server which kinds this agent syncs, so its API refuses writes of others."""
        kinds = []
        for kind in self.informers:
            try:
                info = await self.kube.resource_info(kind)
            except KubeError as exc:  # not served yet (a CRD to come): the API server judges
                log.debug("cannot describe %s: %s", kind, exc)
                kinds.append(SyncedKind(kind, None))
                continue
            self.session.namespaced[kind] = info.namespaced
            kinds.append(SyncedKind(kind, info.namespaced))
        if self._extensions:
            self._queue([AgentInfo(kinds=tuple(kinds))])

    async def _reconcile(self, msg: Batch) -> None:
        """Repair a kind in steps: each step's messages are queued (waiting for room in the
        outbox) before the next is computed, and the loop keeps running in between.

        An answer that arrives while the kind's first list is still under way (a first sync,
        see _request_inventory) is reconciled in passes over what the list has added so far;
        the final pass, once the list is complete, walks the rest and only then deletes what
        the backend holds and the cluster lacks."""
        informer = self.informers.get(msg.kind)
        passes = ReconcilePasses()
        walked: dict[tuple[str, str], bytes] = {}  # key -> the entry a pass reconciled
        listing = informer is not None and not informer.synced.is_set()
        if informer is not None and listing and msg.kind in self.session.strategies:
            if not await self._reconcile_while_listing(msg, informer, passes, walked):
                # The first list failed midway, and the list may keep failing (the kind gone, a
                # permission revoked): backend messages must not wait behind it. What was sent
                # stands; _request_inventory asks again once the kind is listed.
                log.info("first list of %s failed midway: its inventory is asked for again "
                         "once it is listed", msg.kind)
                return
            # Additions are announced from now on (the final pass covers the ones before).
            self.link.inventory_requested(msg.kind)
        live: Iterable[Listed] = (
            (
                Listed(namespace, name, entry, informer.cache)
                for (namespace, name), entry in informer.cache.current_entries()
                if walked.get((namespace, name)) is not entry
            )
            if informer
            else iter(())
        )
        await self._reconcile_pass(msg, live, passes, informer, final=True)

    async def _reconcile_while_listing(
        self,
        msg: Batch,
        informer: Informer,
        passes: ReconcilePasses,
        walked: dict[tuple[str, str], bytes],
    ) -> bool:
        """Reconcile what the kind's first list adds, as it adds it, until the list is complete
        (True), or until that list fails midway (False: it restarts as a diff without an arrival
        log, and nothing here may wait for it)."""
        arrivals = None
        position = 0
        while not informer.synced.is_set():
            informer.list_progressed.clear()
            if informer.first_list_failed:
                return False
            current = informer.arrivals
            if current is not None and current is not arrivals:
                arrivals, position = current, 0
            if arrivals is None or arrivals.abandoned or position >= len(arrivals.keys):
                await informer.list_progressed.wait()
                continue
            keys = arrivals.keys[position:]
            position += len(keys)
            await self._reconcile_pass(
                msg, self._arrived(informer, keys, walked), passes, informer, final=False
            )
        return not informer.first_list_failed  # one rule: after a failure, the new answer decides

    @staticmethod
    def _arrived(
        informer: Informer, keys: list[tuple[str, str]], walked: dict[tuple[str, str], bytes]
    ) -> Iterator[Listed]:
        for key in keys:
            entry = informer.cache.entry(key)
            if entry is not None:
                walked[key] = entry
                yield Listed(key[0], key[1], entry, informer.cache)

    async def _reconcile_pass(
        self,
        msg: Batch,
        live: Iterable[Listed],
        passes: ReconcilePasses,
        informer: Informer | None,
        *,
        final: bool,
    ) -> None:
        def still_absent(ref: ObjectRef) -> bool:
            return informer is None or (ref.namespace, ref.name) not in informer.cache

        pacer = Pacer()
        steps = self.session.reconcile_steps(
            msg, live, still_absent=still_absent, passes=passes, final=final
        )
        for step in steps:
            await self._outbox_room()
            self._carry_out(step)
            await pacer.tick()
