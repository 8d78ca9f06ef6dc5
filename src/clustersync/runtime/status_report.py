"""What a server replica tells the rest of the backend about its agent connections, so that the
fleet status is the same whichever replica or API process is asked.

On connect, every ``LINK_REPORT_INTERVAL`` while connected, and on disconnect, the replica
publishes a ``link`` control on the cluster's report subject with the connection's facts; the
ingester keeps the latest per cluster in the store (runtime/status_recorder.py). A cluster whose
replica died without saying so shows its last report's time: an operator (and the alert rules)
read ``lastReport`` older than a few intervals as disconnected.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from aiohttp import web

from clustersync.adapters.bus import Bus, BusError
from clustersync.protocol.envelope import CONTROL_LINK, Envelope, encode_envelope, report_subject

log = logging.getLogger("clustersync.server")

LINK_REPORT_INTERVAL = 15.0  # seconds between reports of a live connection


class LinkFacts(Protocol):
    """The parts of a server connection a report reads (runtime/server.py's ``Connection``)."""

    account: str
    cluster: str
    ws: web.WebSocketResponse
    last_read: float  # loop time
    protocol: str  # the negotiated subprotocol, or "kubescape"
    client: tuple[tuple[str, str], ...]


CONNECT, ALIVE, DISCONNECT = "connect", "alive", "disconnect"


def link_facts(
    conn: LinkFacts, replica: str, event: str, *, now: float, loop_now: float, since: float
) -> tuple[tuple[str, str], ...]:
    """The facts as an envelope's ``client`` pairs (strings, like the connect headers).
    ``event`` is CONNECT (a new connection: it replaces what the backend knew), ALIVE or
    DISCONNECT (news of that same connection only)."""
    client = dict(conn.client)
    last_message = now - max(0.0, loop_now - conn.last_read)
    facts = {
        "connectionId": client.get("connectionId", ""),
        "event": event,
        "connected": "false" if event == DISCONNECT else "true",
        "replica": replica,
        "connectionTime": client.get("connectionTime", ""),
        "synchronizerVersion": client.get("synchronizerVersion", ""),
        "protocol": conn.protocol,
        "connectedSince": f"{since:.3f}",
        "lastMessage": f"{last_message:.3f}",
        "reportedAt": f"{now:.3f}",
    }
    return tuple(sorted(facts.items()))


class LinkReporter:
    def __init__(self, bus: Bus, replica: str, interval: float = LINK_REPORT_INTERVAL) -> None:
        self.bus = bus
        self.replica = replica
        self.interval = interval
        self._since: dict[str, float] = {}  # connection id -> epoch seconds of its connect

    async def report(self, conn: LinkFacts, event: str) -> None:
        """Publish one report; a bus failure is logged, never raised (the next report, or the
        agent's reconnect, says it again)."""
        loop_now, now = asyncio.get_running_loop().time(), time.time()
        connection_id = dict(conn.client).get("connectionId", "")
        since = self._since.setdefault(connection_id, now)
        if event == DISCONNECT:
            self._since.pop(connection_id, None)
        client = link_facts(
            conn, self.replica, event, now=now, loop_now=loop_now, since=since
        )
        env = Envelope(conn.account, conn.cluster, control=CONTROL_LINK, client=client)
        try:
            await self.bus.publish(report_subject(conn.account, conn.cluster), encode_envelope(env))
        except BusError as exc:
            log.warning(
                "link status of %s/%s not reported: %s", conn.account, conn.cluster, exc
            )

    async def report_periodically(
        self,
        connections: Iterable[LinkFacts],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Forever: every live connection's facts, each ``interval``, spread evenly over it.

        A thousand connections reported at once made a burst of a thousand store writes that
        queued at the ingester (one at a time on the report subjects) for seconds, and delayed
        the object writes sharing the database; spread, they are a steady trickle."""
        loop = asyncio.get_running_loop()
        while True:
            live = [conn for conn in list(connections) if not conn.ws.closed]
            if not live:
                await sleep(self.interval)  # a timer, not synchronisation
                continue
            start, step = loop.time(), self.interval / len(live)
            for i, conn in enumerate(live, 1):
                # Due times, not fixed pauses: the publishes' own time is absorbed in the round.
                await sleep(max(0.0, start + i * step - loop.time()))  # a timer
                if not conn.ws.closed:
                    await self.report(conn, ALIVE)
