"""The agent session's inventory requests, without I/O.

How the session asks a clustersync backend what it holds of a kind: a reconciliation batch
without items, carrying the bucket digests of what the cluster has (so that the answer lists only
the buckets that differ) once the session holds checksums worth the cost, none on a first sync.
The answer is reconciled by protocol.agent_reconcile.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any

from clustersync.model import Kind, ObjectRef
from clustersync.protocol.agent_state import SessionState
from clustersync.protocol.agent_types import Cached, Listed, ref_of, reply_fields
from clustersync.protocol.digest import is_fast
from clustersync.protocol.inventory import bucket_digests
from clustersync.protocol.messages import BATCH_RECONCILIATION, Batch
from clustersync.protocol.shaping import ShapingError, is_filtered, shape


class Inventory(SessionState):
    """Inventory requests to a clustersync backend."""

    def inventory_request(self, kind: Kind, live_objects: Iterable[dict[str, Any]]) -> Batch:
        """Asks a clustersync backend for its inventory of ``kind`` (a reconciliation batch
        without items), carrying our bucket digests so that it lists only the buckets that
        differ; the answer, possibly empty, is handled by :meth:`reconcile`."""
        return self.inventory_batch(kind, self.inventory_entries(kind, live_objects))

    def inventory_entries(
        self, kind: Kind, live_objects: Iterable[dict[str, Any] | Cached | Listed]
    ) -> Iterator[tuple[ObjectRef, str]]:
        """The (ref, checksum) of every synced object, one at a time, so that a driver can pause
        between objects of a large kind (hashing 100k pods takes seconds). A :class:`Listed`
        object whose entry holds its fast digest is not even unpacked."""
        for item in live_objects:
            if isinstance(item, Listed):
                facts = self._decisive(item)
                if facts is not None:
                    if not self._filtered(item, facts):
                        ref = ObjectRef(kind, sys.intern(item.namespace), item.name)
                        yield ref, self._recorded(ref, facts)
                    continue
                live = item.cached().live
            else:
                live = item.live if isinstance(item, Cached) else item
            if not is_filtered(live, self.rules):
                ref = ref_of(kind, live)
                known = self._known(ref, live)  # a restart with saved checksums: most objects
                if known is not None:
                    yield ref, known
                    continue
                try:
                    shaped = shape(kind, live)
                except ShapingError:
                    continue  # reported when the answer is reconciled
                yield ref, self._checksum(ref, live, shaped)

    def inventory_needs_digests(self, kind: Kind) -> bool:
        """Whether an inventory request for ``kind`` should carry bucket digests: only once the
        session holds checksums of the kind by the link's algorithm (a reconnect, a periodic
        resync, a restart with saved checksums), when they cost little and the answer lists
        only what differs. Before that (a first sync) the digests would cost a pass that
        decompresses, parses, shapes and hashes every object before the request can leave, and
        the reconciliation would decompress, parse and shape each one again: a request without
        digests gets the whole inventory (nothing, for a new cluster) and the reconciliation
        alone does the work, once per object. The price is a full listing on the wire when the
        backend already holds a cluster this agent has not hashed yet (no saved checksums)."""
        return self.synced.holds_checksum(kind, lambda c: is_fast(c) == self.fast_digests)

    def inventory_batch(self, kind: Kind, entries: Iterable[tuple[ObjectRef, str]] | None) -> Batch:
        """The inventory request for ``kind``: with the bucket digests of ``entries``, or,
        with None, without digests (the backend answers with its whole inventory)."""
        return Batch(
            kind=kind,
            batch_type=BATCH_RECONCILIATION,
            digests=() if entries is None else bucket_digests(entries),
            **reply_fields(None),
        )
