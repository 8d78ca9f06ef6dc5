"""One active connection per cluster across server replicas (see protocol/takeover.py).

A replica's own notices come back to it as well; they change nothing, since a connection is only
closed for a notice newer than its own claim. A notice replayed from the bus's history (a new
replica reads it from the start) is older than any connection made since, so it closes nothing.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from clustersync.adapters.bus import Bus, Delivery, Subscription
from clustersync.adapters.metrics import bad_input
from clustersync.protocol.envelope import durable_token
from clustersync.protocol.takeover import (
    TAKEOVER_SUBJECT,
    Notice,
    NoticeError,
    decode_notice,
    encode_notice,
)

log = logging.getLogger("clustersync.server")

Key = tuple[str, str]

# A replica's durable is named after it, and by default the name is random per process: every
# restart leaves the last one's durable behind, unread. The bus may forget it after this long.
IDLE_EXPIRY = 900.0


class Takeovers:
    def __init__(
        self, bus: Bus, on_newer_claim: Callable[[Key, int], None], replica: str = ""
    ) -> None:
        self.bus = bus
        self.replica = replica or uuid.uuid4().hex[:12]
        self.newest: dict[Key, int] = {}  # the newest claim seen per cluster (its bus seq)
        self._on_newer_claim = on_newer_claim
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        self._subscription = await self.bus.subscribe(
            TAKEOVER_SUBJECT,
            f"takeover-{durable_token(self.replica)}",
            self._on_notice,
            idle_expiry=IDLE_EXPIRY,
        )

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.stop()
            self._subscription = None

    async def claim(self, account: str, cluster: str) -> int:
        """Announce a new connection of this cluster here; returns its claim (a bus seq)."""
        seq = await self.bus.publish(
            TAKEOVER_SUBJECT, encode_notice(Notice(account, cluster, self.replica))
        )
        self._note((account, cluster), seq)
        return seq

    async def _on_notice(self, delivery: Delivery) -> None:
        try:
            notice = decode_notice(delivery.data)
        except NoticeError as exc:
            bad_input("server", "bad_takeover_notice")
            log.warning("ignored a takeover notice (seq %d): %s", delivery.seq, exc)
            return
        if notice.replica != self.replica:
            log.debug("%s/%s claimed by replica %s", notice.account, notice.cluster,
                      notice.replica)
        self._note((notice.account, notice.cluster), delivery.seq)

    def _note(self, key: Key, seq: int) -> None:
        if seq > self.newest.get(key, 0):
            self.newest[key] = seq
            self._on_newer_claim(key, seq)
