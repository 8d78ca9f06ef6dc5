"""The agent session's reconciliation passes, without I/O.

Given the backend's inventory of a kind (the answer to an inventory request) and the cluster's
objects, the session sends whole what the backend lacks or holds otherwise and deletes there what
the cluster does not have. :class:`ReconcilePasses` carries a reconciliation across passes over a
list still arriving; only the final pass decides deletions. Objects whose cache entry holds
their shaped JSON and fast digest are decided on the entry's facts, never parsed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from clustersync.model import ObjectRef
from clustersync.protocol.agent_state import SessionState
from clustersync.protocol.agent_types import Cached, Listed, Outcome, ref_of, reply_fields
from clustersync.protocol.cache_entry import Facts
from clustersync.protocol.inventory import bucket_of
from clustersync.protocol.messages import BATCH_RECONCILIATION, Batch, ObjectDeleted, PutObject
from clustersync.protocol.shaping import ShapingError, is_filtered, shape


@dataclass(slots=True)
class ReconcilePasses:
    """What a reconciliation done in several passes over the cluster keeps between them (see
    :meth:`AgentSession.reconcile_steps`): the objects met so far, and the backend's inventory
    indexed once. A driver whose list is still arriving reconciles each new part as it comes,
    and only the final pass, once the list is complete, may decide deletions."""

    synced: set[ObjectRef] = field(default_factory=set)
    backend: dict[ObjectRef, str] | None = None

    def backend_of(self, batch: Batch) -> dict[ObjectRef, str]:
        if self.backend is None:
            self.backend = {item.ref: item.checksum for item in batch.new_checksum}
        return self.backend


class Reconciliation(SessionState):
    """Reconciles the backend's inventory of a kind with the cluster's objects."""

    def reconcile(
        self, batch: Batch, live_objects: Iterable[dict[str, Any] | Cached | Listed]
    ) -> Outcome:
        """Repair every difference between the backend's inventory of a kind and the cluster."""
        out = Outcome()
        for step in self.reconcile_steps(batch, live_objects):
            out.send.extend(step.send)
            out.errors.extend(step.errors)
        return out

    def reconcile_steps(
        self,
        batch: Batch,
        live_objects: Iterable[dict[str, Any] | Cached | Listed],
        *,
        step: int = 100,
        still_absent: Callable[[ObjectRef], bool] = lambda ref: True,
        passes: ReconcilePasses | None = None,
        final: bool = True,
    ) -> Iterator[Outcome]:
        """:meth:`reconcile` in pieces of at most ``step`` objects, so that a driver can send
        each piece (and let other work run) before computing the next: the repairs of a large
        kind never all wait in memory at once. ``still_absent`` is asked before deleting an
        object the backend holds and the walk did not meet (it may have appeared meanwhile).

        The walk may be split into passes over successive parts of the cluster (a list still
        arriving): each call with the same ``passes`` continues the same reconciliation, and
        only a ``final`` pass, which must come once the cluster's list is complete, deletes
        what no pass met. Without ``passes``, one call is the whole reconciliation.

        A :class:`Listed` object whose entry holds its shaped JSON and fast digest (with fast
        digests on this link) is decided on its entry's facts: not parsed, shaped nor hashed
        again, and sent as the JSON the entry holds; any other is parsed and handled as before.
        """
        out = Outcome()
        if batch.batch_type != BATCH_RECONCILIATION:
            out.errors.append(
                ("bad_batch", f"batch type {batch.batch_type!r} is not reconciliation")
            )
            yield out
            return
        if batch.kind not in self.strategies:
            # Never turn "not configured here" into mass deletes (a kubescape pitfall).
            out.errors.append(("unknown_kind", f"reconciliation for unsynced kind {batch.kind}"))
            yield out
            return
        passes = passes if passes is not None else ReconcilePasses()
        backend = passes.backend_of(batch)
        # An answer to a digest request lists only the buckets that differ; the others match.
        covered = None if batch.covered is None else frozenset(batch.covered)
        synced = passes.synced
        meta = reply_fields(batch)  # every reply to the batch has the same depth and id
        walked = 0
        for item in live_objects:
            walked += 1
            if walked % step == 0:
                yield out
                out = Outcome()
            if isinstance(item, Listed):
                facts = self._decisive(item)
                if facts is not None:
                    whole = self._reconcile_listed(
                        batch, item, facts, backend=backend, covered=covered, synced=synced,
                        meta=meta,
                    )
                    if whole is not None:
                        out.send.append(whole)
                    continue
                live, entry = item.reader.parse(item.entry), item.entry
            elif isinstance(item, Cached):
                live, entry = item.live, item.entry
            else:
                live, entry = item, None
            if is_filtered(live, self.rules):
                continue  # and if the backend holds it, it is deleted there below
            ref = ref_of(batch.kind, live)
            if covered is not None and bucket_of(ref) not in covered:
                continue
            synced.add(ref)
            known = self._known(ref, live)
            if known is not None and backend.get(ref) == known:
                continue  # the backend holds this version: no need to shape it
            try:
                shaped = shape(batch.kind, live)
            except ShapingError as exc:
                out.errors.append(("unshapeable", f"{ref}: not sent, as kubescape: {exc}"))
                continue
            checksum = self._checksum(ref, live, shaped)
            if backend.get(ref) != checksum:
                # The backend lacks it, or holds something our shadow does not describe: send
                # it whole (kubescape announces a checksum first; we already know the answer).
                self.shadows.discard(ref)
                self._sent.pop(ref, None)
                reply = self._put_or_patch(
                    ref, shaped, checksum, batch, skip_noop=False, entry=entry
                )
                if reply is not None:
                    out.send.append(reply)
        if not final:
            yield out
            return
        for ref in sorted(backend.keys() - synced):
            if still_absent(ref):
                self.shadows.discard(ref)
                out.send.append(ObjectDeleted(ref=ref, **reply_fields(batch)))
        yield out

    def _reconcile_listed(
        self,
        batch: Batch,
        item: Listed,
        facts: Facts,
        *,
        backend: Mapping[ObjectRef, str],
        covered: frozenset[int] | None,
        synced: set[ObjectRef],
        meta: dict[str, Any],
    ) -> PutObject | None:
        """One step of :meth:`reconcile_steps` for an object decided on its entry's facts: what
        to send of it, if anything."""
        if self._filtered(item, facts):
            return None
        ref = ObjectRef(batch.kind, sys.intern(item.namespace), item.name)
        if covered is not None and bucket_of(ref) not in covered:
            return None
        synced.add(ref)
        checksum = facts.digest
        assert checksum is not None  # a decisive entry holds it
        self.synced.hold(ref, facts.version, checksum)  # as _recorded, in one lookup
        if backend.get(ref) == checksum:
            return None
        body = item.reader.shaped_json(item.entry, facts)  # its header is read once
        assert body is not None  # a shaped entry holds it
        return self._put_whole(ref, body, checksum, meta, item.entry)
