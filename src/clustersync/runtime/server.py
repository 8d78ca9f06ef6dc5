"""The server: accepts agent websockets and bridges them to the bus.

Each connected cluster has one durable bus consumer on its ``cs.down`` subject, so messages for a
cluster wait in the bus while it is disconnected and reach it through whichever server replica it
reconnects to. A newer connection for the same cluster, on this replica or any other, supersedes
(and closes) the older one (see runtime/takeover.py).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from aiohttp import web

from clustersync.adapters.bus import (
    Bus,
    BusError,
    BusFullError,
    BusMessageTooLargeError,
    Delivery,
    Subscription,
)
from clustersync.adapters.bus.pulsar_layout import LAYOUT_KUBESCAPE
from clustersync.adapters.metrics import CONNECTED_AGENTS, bad_input
from clustersync.link.frames import Rejected, receive, send
from clustersync.link.server import accept, authenticate_agent
from clustersync.model.identity import TokenTable
from clustersync.protocol.backend import bridge_hop
from clustersync.protocol.codec import DecodeError
from clustersync.protocol.delivery import DeliveryLedger, DeliveryPolicy
from clustersync.protocol.envelope import (
    CONTROL_CONNECTED,
    CONTROL_RECONCILE,
    DEAD_SUBJECT,
    Envelope,
    decode_envelope,
    down_durable,
    down_subject,
    encode_dead_letter,
    encode_envelope,
    encode_relayed,
    partition_of,
    report_subject,
    up_subject,
)
from clustersync.protocol.messages import (
    BATCH_RECONCILIATION,
    Ack,
    AgentInfo,
    Batch,
    Message,
    ObjectDeleted,
    Ping,
    PutObject,
    Report,
    SyncProgress,
    WriteOutcome,
    WriteStatus,
    new_msg_id,
    speaks_clustersync,
)
from clustersync.protocol.outcomes import write_id
from clustersync.protocol.pulsar_codec import format_timestamp
from clustersync.protocol.ratelimit import TokenBucket
from clustersync.protocol.upbatch import halves
from clustersync.runtime.status_report import CONNECT, DISCONNECT, LinkReporter
from clustersync.runtime.supervisor import Supervisor, log_failure
from clustersync.runtime.takeover import Takeovers

log = logging.getLogger("clustersync.server")

SUPERSEDED = 4000  # websocket close code: a newer connection for this cluster took over
RATE_LIMITED = 1008  # websocket close code (policy violation): the agent sent too fast
READ_DEADLINE = 4001  # websocket close code: a kubescape agent sent nothing, not even its pings
# kubescape's Go agent sends an application Ping every 50 s and nothing else keeps the link
# alive. The server pings it back at the same interval, and gives up after two and a half of
# its intervals without a single message.
KUBESCAPE_PING_INTERVAL = 50.0
KUBESCAPE_READ_DEADLINE = 125.0
# Connections whose bus setup (down consumer, link report) runs at once. 1,000 agents connecting
# together made 1,000 JetStream consumer creations queue at NATS until most of them hit the
# client's request timeout, and those agents were closed with 1011; in turns, each creation is
# answered quickly and the storm clears at the bus's own pace.
SETUP_CONCURRENCY = 32


@dataclass(eq=False)
class Connection:
    account: str
    cluster: str
    ws: web.WebSocketResponse
    epoch: int
    claim: int = 0  # this connection's takeover notice (a bus seq); 0 until published
    last_read: float = 0.0  # loop time of the last frame from the agent
    protocol: str = "kubescape"  # the subprotocol negotiated at connect (none: kubescape's)
    unacked: DeliveryLedger[asyncio.Future[None]] = field(default_factory=DeliveryLedger)
    client: tuple[tuple[str, str], ...] = ()  # what the agent said of itself (connect_info)
    up_subjects: dict[int, str] = field(default_factory=dict)  # by partition, made once

    @property
    def acks(self) -> bool:
        """The agent acknowledges what it handled: one of our subprotocols was negotiated."""
        return speaks_clustersync(self.protocol)

    def acknowledge(self, ids: tuple[int, ...]) -> None:
        for waiter in self.unacked.settle(ids):
            if not waiter.done():
                waiter.set_result(None)

    def fail_unacked(self) -> None:
        for waiter in self.unacked.drain():
            if not waiter.done():
                waiter.set_exception(ConnectionError("connection closed before the agent acked"))


# The connect headers a kubescape server reports in ConnectedClients, by its field names.
_CLIENT_HEADERS = {
    "synchronizerVersion": "X-SYNCHRONIZER-VERSION",
    "helmVersion": "X-HELM-VERSION",
    "gitVersion": "X-GIT-VERSION",
    "cloudProvider": "X-CLOUD-PROVIDER",
}


def connect_info(headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """What an agent said of itself at connect, plus a connection id and time (for the bus's
    ConnectedClients report), as an envelope's ``client``."""
    info = {name: headers.get(header, "")[:256] for name, header in _CLIENT_HEADERS.items()}
    info["connectionId"] = str(uuid.uuid4())
    info["connectionTime"] = format_timestamp(datetime.now(UTC))
    return tuple(sorted(info.items()))


def kubescape_may_read(bus: Bus) -> bool:
    """Whether Go servers and backends may read what this server publishes: Pulsar in
    kubescape's layout, one topic they share with us. They verify checksums with kubescape's
    hash only, so fast digests there would fail every patch they check."""
    layout = getattr(bus, "layout", None)
    return getattr(layout, "name", None) == LAYOUT_KUBESCAPE


class SyncServer:
    def __init__(
        self,
        bus: Bus,
        tokens: TokenTable,
        *,
        heartbeat: float = 20.0,
        reconcile_interval: float = 600.0,
        extensions: bool = True,
        message_rate: float = 2000.0,
        message_burst: int = 200_000,
        replica: str = "",
        app_ping_interval: float = KUBESCAPE_PING_INTERVAL,
        read_deadline: float = KUBESCAPE_READ_DEADLINE,
        delivery: DeliveryPolicy | None = None,
        fast_digests: bool | None = None,
        setup_concurrency: int = SETUP_CONCURRENCY,
    ) -> None:
        self.bus = bus
        self.tokens = tokens
        self.heartbeat = heartbeat
        self.reconcile_interval = reconcile_interval
        self.extensions = extensions  # False: speak exactly kubescape's protocol (for testing)
        # Agree to clustersync.v2 (fast digests) with our agents; None: unless the bus is one a
        # Go backend may read too, which verifies every checksum with kubescape's hash.
        self.fast_digests = (
            not kubescape_may_read(bus) if fast_digests is None else fast_digests
        )
        # Per connection: the burst covers an initial sync of a large cluster, the rate an
        # agent's steady state with room to spare. A flood beyond both closes the socket.
        self.message_rate = message_rate
        self.app_ping_interval = app_ping_interval  # for kubescape agents (no websocket pings)
        self.read_deadline = read_deadline
        self.message_burst = message_burst
        self.delivery = delivery or DeliveryPolicy()
        self.connections: dict[tuple[str, str], Connection] = {}
        self.fallback: Callable[[web.Request], Awaitable[web.StreamResponse]] | None = None
        self._epochs = itertools.count(1)
        self.supervisor = Supervisor("server")  # background tasks: logged and restarted
        self._closing: set[asyncio.Task[bool]] = set()
        self._setup_slots = asyncio.Semaphore(setup_concurrency)
        # A newer connection of a cluster on any replica closes the older one (item: one active
        # connection per cluster), through notices on the bus.
        self.takeovers = Takeovers(bus, self._supersede_if_older, replica)
        # Connection facts for the fleet status, shared through the bus and the store.
        self.link_reports = LinkReporter(bus, self.takeovers.replica)

    def add_routes(self, app: web.Application) -> None:
        # kubescape agents may dial any path; the catch-all must come after every other route.
        app.router.add_get("/", self.handle)
        app.router.add_get("/{path:.*}", self.handle)
        app.on_startup.append(self._start)
        app.on_shutdown.append(self._shutdown)

    async def _start(self, app: web.Application) -> None:
        await self.takeovers.start()
        if self.reconcile_interval > 0:
            self.supervisor.spawn("reconcile", self._reconcile_periodically)
        self.supervisor.spawn(
            "link-status", lambda: self.link_reports.report_periodically(self.connections.values())
        )

    async def _shutdown(self, app: web.Application) -> None:
        await self.supervisor.stop()
        await self.takeovers.stop()
        for conn in list(self.connections.values()):
            await conn.ws.close(code=1001, message=b"server shutting down")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            if self.fallback is not None:  # the backend's API answers plain HTTP requests
                return await self.fallback(request)
            raise web.HTTPNotFound(text="not found\n")
        identity = authenticate_agent(request, self.tokens)
        ws = await accept(
            request, self.heartbeat, extensions=self.extensions, fast_digests=self.fast_digests
        )
        conn = Connection(identity.account, identity.cluster, ws, next(self._epochs))
        conn.protocol = ws.ws_protocol or "kubescape"
        conn.client = connect_info(request.headers)
        conn.last_read = asyncio.get_running_loop().time()
        key = (conn.account, conn.cluster)
        old = self.connections.get(key)
        self.connections[key] = conn
        CONNECTED_AGENTS.set(len(self.connections))
        if old is not None:
            log.info("%s/%s reconnected; closing the older connection", *key)
            self._supersede(old)
        log.info("agent connected: account=%s cluster=%s", *key)
        subscription: Subscription | None = None
        keepalive: asyncio.Task[None] | None = None
        if not conn.acks:  # no websocket pings: see link/server.py
            keepalive = asyncio.create_task(self._keep_alive_without_pings(conn))
            keepalive.add_done_callback(log_failure("server", "application keepalive"))
        try:
            conn.claim = await self.takeovers.claim(*key)
            if self.takeovers.newest[key] > conn.claim:  # a newer one arrived meanwhile
                self._supersede(conn)
            async with self._setup_slots:
                subscription = await self.bus.subscribe(
                    down_subject(*key),
                    down_durable(conn.account, conn.cluster),
                    lambda delivery: self._deliver(conn, delivery),
                )
                await self.link_reports.report(conn, CONNECT)
                if not conn.acks:
                    # Our agents request their inventories; a kubescape agent gets ours pushed.
                    await self._publish_control(conn, CONTROL_CONNECTED)
            await self._pump(conn)
        except BusFullError as exc:
            # This cluster has its bound of messages queued: push back on this agent only
            # (1013 "try again later"); it reconnects with backoff and resyncs.
            log.warning("closing %s/%s: %s", *key, exc)
            await ws.close(code=1013, message=b"too many messages queued for this cluster")
        except BusError as exc:
            # The agent re-announces everything when it reconnects, so nothing stays lost.
            log.error("bus unavailable, closing %s/%s: %s", *key, exc)
            await ws.close(code=1011, message=b"bus unavailable")
        finally:
            if keepalive is not None:
                keepalive.cancel()
            conn.fail_unacked()
            if subscription is not None:
                await subscription.stop()
            if self.connections.get(key) is conn:
                del self.connections[key]
            CONNECTED_AGENTS.set(len(self.connections))
            await self.link_reports.report(conn, DISCONNECT)
            log.info("agent disconnected: account=%s cluster=%s", *key)
        return ws

    async def _keep_alive_without_pings(self, conn: Connection) -> None:
        """kubescape's keepalive both ways: an application Ping every interval, and a read
        deadline that the agent's own 50 s pings keep meeting."""
        loop = asyncio.get_running_loop()
        tick = min(self.app_ping_interval, self.read_deadline / 5)
        next_ping = loop.time() + self.app_ping_interval
        while not conn.ws.closed:
            await asyncio.sleep(tick)  # a timer, not synchronisation
            now = loop.time()
            if now - conn.last_read > self.read_deadline:
                log.warning("%s/%s sent nothing for %.0f s; closing", conn.account,
                            conn.cluster, now - conn.last_read)
                await conn.ws.close(code=READ_DEADLINE, message=b"read deadline exceeded")
                return
            if now >= next_ping:
                next_ping = now + self.app_ping_interval
                try:
                    await send(conn.ws, Ping(depth=0, msg_id=new_msg_id()), "server")
                except ConnectionError:
                    return  # closing meanwhile: the handler cleans up

    def _supersede(self, conn: Connection) -> None:
        # In the background: a dead peer would hold the close handshake until its timeout.
        closing = asyncio.create_task(conn.ws.close(code=SUPERSEDED, message=b"superseded"))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)
        closing.add_done_callback(log_failure("server", "closing a superseded connection"))

    def _supersede_if_older(self, key: tuple[str, str], claim: int) -> None:
        conn = self.connections.get(key)
        if conn is not None and 0 < conn.claim < claim:
            log.info("%s/%s connected through another replica; closing this connection", *key)
            self._supersede(conn)

    async def _pump(self, conn: Connection) -> None:
        """Agent frames to the bus, tagged with the identity of the agent's token."""
        bucket = TokenBucket(self.message_rate, self.message_burst)
        clock = asyncio.get_running_loop().time
        # Frames go to the bus as the agent sent them, decoded only to check and route them,
        # their objects unparsed: the ingester parses each object once (and refuses a bad one)
        # where it needs its fields anyway.
        async for item, frame in receive(conn.ws, "server", check_payloads=False):
            conn.last_read = clock()
            if not bucket.take(clock()):
                bad_input("server", "message_rate")
                log.warning(
                    "%s/%s sent more than %d messages plus %.0f a second; closing",
                    conn.account,
                    conn.cluster,
                    self.message_burst,
                    self.message_rate,
                )
                await conn.ws.close(code=RATE_LIMITED, message=b"message rate limit exceeded")
                return
            if isinstance(item, Rejected | Ping):
                continue
            if isinstance(item, Ack):
                conn.acknowledge(item.ids)
                continue
            if isinstance(item, AgentInfo | WriteOutcome | SyncProgress):
                await self._publish_report(conn, item)
                continue
            forwarded = bridge_hop(item)  # one level deeper per hop, as kubescape's server does
            if forwarded is None:
                bad_input("server", "too_deep")
                continue
            partition = partition_of(forwarded)
            subject = conn.up_subjects.get(partition)
            if subject is None:  # escaping the names on every message cost more than the rest
                subject = conn.up_subjects[partition] = up_subject(
                    conn.account, conn.cluster, partition
                )
            await self._publish_up(conn, subject, forwarded, frame)

    async def _publish_up(
        self, conn: Connection, subject: str, msg: Message, frame: bytes | None = None
    ) -> None:
        """One agent message onto the bus. One the bus refuses for its size (an SBOM over NATS's
        ``max_payload``) is parked as a note naming its objects, and the link carries on: the
        bus is not down, and closing would only make the agent send it again. A batch too large
        as a whole goes out in halves on the same subject (order kept), halved again while too
        large, so only the oversized objects are parked. ``frame``: the agent's frame ``msg``
        was read from (one hop shallower), forwarded as it came instead of encoding ``msg``
        again."""
        data = (
            encode_envelope(Envelope(conn.account, conn.cluster, msg, at=time.time()))
            if frame is None
            else encode_relayed(conn.account, conn.cluster, frame, time.time())
        )
        try:
            await self.bus.publish(subject, data)
            return
        except BusMessageTooLargeError as exc:
            refusal = exc
        if (
            isinstance(msg, Batch)
            and msg.batch_type != BATCH_RECONCILIATION
            and len(msg.unrolled()) > 1
        ):
            # In halves, each halved again while too large: a batch of objects that escape
            # more than most costs a few more publishes, not one per object.
            for half in halves(msg):
                await self._publish_up(conn, subject, half)
            return
        bad_input("server", "too_large")
        singles = msg.unrolled() if isinstance(msg, Batch) else (msg,)
        refs = [str(m.ref) for m in singles if not isinstance(m, Ping)]
        log.error("%s/%s: %s not forwarded, %d bytes are too large for the bus: %s",
                  conn.account, conn.cluster, ", ".join(refs), len(data), refusal)
        note = orjson.dumps({"account": conn.account, "cluster": conn.cluster,
                             "objects": refs, "bytes": len(data)})
        reason = f"too large for the bus ({len(data)} bytes): {refusal}"
        await self.bus.publish(DEAD_SUBJECT, encode_dead_letter(subject, note, reason))

    async def _deliver(self, conn: Connection, delivery: Delivery) -> None:
        try:
            env = decode_envelope(delivery.data)
        except DecodeError as exc:
            bad_input("server", exc.reason)
            log.error("undeliverable bus message on %s: %s", delivery.subject, exc)
            # Redelivering cannot fix it: hand it to the ingester to park, then ack.
            await self._park(delivery, f"undeliverable: {exc}")
            return
        if (env.account, env.cluster) != (conn.account, conn.cluster):
            # Never hand one cluster's message to another, whatever put it on this subject.
            bad_input("server", "foreign_envelope")
            log.error(
                "bus message on %s is for %s/%s, not for the connected %s/%s; parking it",
                delivery.subject, env.account, env.cluster, conn.account, conn.cluster,
            )
            await self._park(delivery, f"addressed to {env.account}/{env.cluster}")
            return
        msg = None if env.message is None else bridge_hop(env.message)
        if msg is None:
            if env.message is not None:
                bad_input("server", "too_deep")
            return
        if conn.ws.closed:
            raise ConnectionError("agent connection closed")  # redelivered to the next one
        if not conn.acks:  # a kubescape agent: written to the socket is as far as we can know
            await send(conn.ws, msg, "server")
            # A kubescape agent cannot say what became of a backend write: record that it went.
            await self._report_write(conn, msg, WriteStatus.SENT)
            return
        if self.delivery.exhausted(delivery.subject, delivery.seq):
            # A poison message must not stall the cluster's down stream forever.
            log.error(
                "%s/%s: message %d on %s not acknowledged in %d deliveries; parking it",
                conn.account, conn.cluster, delivery.seq, delivery.subject,
                self.delivery.max_attempts,
            )
            self.delivery.settled(delivery.subject, delivery.seq)
            reason = f"not acknowledged in {self.delivery.max_attempts} deliveries"
            await self._park(delivery, reason)
            await self._report_write(conn, msg, WriteStatus.FAILED, f"parked: {reason}")
            return
        await self._deliver_acked(conn, msg, delivery)

    async def _deliver_acked(self, conn: Connection, msg: Message, delivery: Delivery) -> None:
        """Send with a delivery id and return once the agent acknowledges it; raise (so the bus
        redelivers) if the connection dies first or the ack does not come in time."""
        handled: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        delivery_id = conn.unacked.issue(handled)
        try:
            await send(conn.ws, msg, "server", delivery_id=delivery_id)
            async with asyncio.timeout(self.delivery.ack_timeout):
                await handled
        except TimeoutError:
            count = self.delivery.timed_out(delivery.subject, delivery.seq)
            log.warning(
                "%s/%s did not acknowledge delivery %d within %gs (%d of %d); "
                "the bus will deliver it again",
                conn.account, conn.cluster, delivery_id, self.delivery.ack_timeout,
                count, self.delivery.max_attempts,
            )
            raise
        finally:
            conn.unacked.forget(delivery_id)
        self.delivery.settled(delivery.subject, delivery.seq)

    async def _park(self, delivery: Delivery, reason: str) -> None:
        dead = encode_dead_letter(delivery.subject, delivery.data, reason)
        await self.bus.publish(DEAD_SUBJECT, dead)

    async def _publish_report(self, conn: Connection, report: Report) -> None:
        """Bridge an agent's report to the ingester, under the connection's verified identity."""
        env = Envelope(conn.account, conn.cluster, report=report)
        await self.bus.publish(report_subject(conn.account, conn.cluster), encode_envelope(env))

    async def _report_write(
        self, conn: Connection, msg: Message, status: WriteStatus, reason: str = ""
    ) -> None:
        """Record, in the agent's stead, what became of ``msg`` if it is a backend write."""
        ident = write_id(msg)
        if ident is not None and isinstance(msg, PutObject | ObjectDeleted):
            outcome = WriteOutcome(ref=msg.ref, status=status, reason=reason, msg_id=ident)
            await self._publish_report(conn, outcome)

    async def _publish_control(self, conn: Connection, control: str) -> None:
        client = conn.client if control == CONTROL_CONNECTED else ()
        env = Envelope(conn.account, conn.cluster, control=control, client=client)
        await self.bus.publish(up_subject(conn.account, conn.cluster), encode_envelope(env))

    async def _reconcile_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.reconcile_interval)
            for conn in list(self.connections.values()):
                if conn.acks:
                    continue  # our agents re-request their inventories themselves, by digest
                try:
                    await self._publish_control(conn, CONTROL_RECONCILE)
                except BusError as exc:  # the next round tries again; other errors restart us
                    log.warning("periodic reconciliation of %s/%s not requested: %s",
                                conn.account, conn.cluster, exc)
