"""The agent's side of the protocol, without I/O.

The driver feeds it watch events and backend messages together with the live objects it looked
up, and carries out what it returns: messages to send and writes to make in the cluster. It owns
the shadow copies (what the backend last received of each patch-strategy object), which is what
makes merge patches possible.

:class:`AgentSession` is put together from its parts: the per-object state and message building
(protocol.agent_state), inventory requests (protocol.agent_inventory), reconciliation
(protocol.agent_reconcile) and backend messages (protocol.agent_backend); it adds the messages
for a change seen in the cluster. The types it shares with the driver are in
protocol.agent_types.
"""

from __future__ import annotations

from typing import Any

from clustersync.model import Kind
from clustersync.protocol.agent_backend import BackendMessages
from clustersync.protocol.agent_inventory import Inventory
from clustersync.protocol.agent_reconcile import Reconciliation
from clustersync.protocol.agent_types import WatchEvent, precomputed_checksum, ref_of, reply_fields
from clustersync.protocol.messages import Message, NewChecksum, ObjectDeleted
from clustersync.protocol.shaping import is_filtered, shape


class AgentSession(BackendMessages, Inventory, Reconciliation):
    """The agent's protocol decisions for one cluster (see the module docstring)."""

    def local_change(self, kind: Kind, event: WatchEvent, live: dict[str, Any]) -> list[Message]:
        """Messages for a (coalesced) watch event."""
        if kind not in self.strategies or is_filtered(live, self.rules):
            return []
        ref = ref_of(kind, live)
        if event is WatchEvent.DELETED:
            self.synced.forget(ref)
            return [ObjectDeleted(ref=ref, **reply_fields(None))]
        shaped = shape(kind, live)
        checksum = self._checksum(ref, live, shaped)
        if event is WatchEvent.ADDED:
            return [NewChecksum(ref=ref, checksum=checksum, **reply_fields(None))]
        # The modification shortcut: the backend almost never has the new version yet, so skip
        # the checksum round trip and send the change itself.
        canonical = checksum if precomputed_checksum(live) is None else None
        msg = self._put_or_patch(ref, shaped, checksum, None, skip_noop=True, canonical=canonical)
        return [msg] if msg else []
