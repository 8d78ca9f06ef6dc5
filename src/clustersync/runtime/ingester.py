"""The ingester: keeps the store in step with the bus and answers agents.

Agent traffic arrives on ``cs.up``, backend-authored writes on ``cs.write``; both are applied to
the store guarded by the bus sequence number, and replies go out on the cluster's ``cs.down``.
What agents report about themselves (synced kinds, write outcomes) arrives on ``cs.report``.
A message that cannot be decoded is parked at once; one that keeps failing is parked after
``max_attempts``; either way it is counted and never blocks the messages behind it. A write the
store refuses because the row already holds an equal or higher version is counted
(``clustersync_stale_writes_total``) and logged at most once per interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeGuard

from clustersync.adapters.bus import Bus, BusError, BusFullError, Delivery, Subscription
from clustersync.adapters.metrics import (
    DEAD_LETTERS,
    INGEST_SECONDS,
    MESSAGES,
    STALE_WRITES,
    SUPERSEDED_WRITES,
    bad_input,
)
from clustersync.adapters.store import (
    BadObjectError,
    ClusterInfo,
    Delete,
    ObjectKey,
    Store,
    StoredObject,
    StoreUnavailableError,
    UnparsedObject,
    Write,
    WriteRecord,
)
from clustersync.model import ObjectRef
from clustersync.protocol.backend import (
    Decision,
    Remove,
    StoredCopy,
    UpsertText,
    backend_write,
    decide_all,
    inventory_answer,
    reconciliation_batches,
    refs_to_look_up,
)
from clustersync.protocol.codec import DecodeError
from clustersync.protocol.envelope import (
    CONTROL_CONNECTED,
    CONTROL_LINK,
    DEAD_FILTER,
    REPORT_FILTER,
    UP_PARTITIONS,
    WRITE_FILTER,
    Envelope,
    decode_dead_letter,
    decode_envelope,
    down_subject,
    encode_envelope,
    up_partition_filter,
)
from clustersync.protocol.fields import resource_version_number
from clustersync.protocol.messages import (
    ACK_PROTOCOL,
    BATCH_RECONCILIATION,
    AgentInfo,
    Batch,
    Message,
    ObjectDeleted,
    Ping,
    PutObject,
    SyncProgress,
    WriteStatus,
)
from clustersync.protocol.outcomes import write_id
from clustersync.runtime.batcher import ReadBatcher, WriteBatcher
from clustersync.runtime.cluster_metrics import CLUSTER_GAUGES
from clustersync.runtime.object_order import ObjectOrder
from clustersync.runtime.status_recorder import record_link, record_progress
from clustersync.runtime.supervisor import Supervisor

log = logging.getLogger("clustersync.ingester")

KUBESCAPE_PROTOCOL = "kubescape"  # what cluster_info records for agents without extensions
FULL_LOG_INTERVAL = 10.0  # seconds between log lines about clusters whose queue is full
TOMBSTONE_RETENTION = 14 * 24 * 3600.0  # longer than the bus keeps messages (7 days)
# Agent messages of one partition handled at once: enough for a transaction to gather a few
# hundred changes while the one before it commits, and a bound on what is held in memory
# (batches are at most 256 KiB).
IN_FLIGHT = 64


class StaleWrites:
    """Counts the writes the store refused as stale, and says so in the log at most once per
    ``interval`` seconds (with how many were not logged since).

    A redelivered message is refused this way by design; a steady stream of refusals means
    versions went backwards (a bus whose counter restarted without a new epoch)."""

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self.total = 0
        self._clock = clock
        self._unlogged = 0
        self._logged_at: float | None = None

    def __call__(self, stale: int, writes: Sequence[Write]) -> None:
        STALE_WRITES.labels("ingester").inc(stale)
        self.total += stale
        self._unlogged += stale
        now = self._clock()
        if self._logged_at is not None and now - self._logged_at < self.interval:
            return
        example = writes[0]
        ref = example.key.ref
        log.warning(
            "store refused %d stale writes (the row holds an equal or higher version) since the "
            "last report; latest batch: %d of %d writes, first %s/%s %s %s/%s version %d",
            self._unlogged,
            stale,
            len(writes),
            example.key.account,
            example.key.cluster,
            ref.kind,
            ref.namespace,
            ref.name,
            example.seq,
        )
        self._unlogged = 0
        self._logged_at = now


def _objects_of(env: Envelope) -> list[ObjectRef] | None:
    """The objects an agent's message is about, or None if it is about the whole cluster (a
    control such as "connected", or an inventory request: they read all of a kind). Refs, not
    keys: the order holds them per cluster already, and a ref hashes in less time than a key
    (each is hashed four times per message)."""
    msg = env.message
    if msg is None or is_inventory_request(msg):
        return None
    if isinstance(msg, Ping):
        return []
    items = msg.unrolled() if isinstance(msg, Batch) else (msg,)
    return [item.ref for item in items]


def _written_object(env: Envelope) -> list[ObjectRef] | None:
    """The object a backend write is about (nothing to order for a malformed one)."""
    msg = env.message
    if isinstance(msg, PutObject | ObjectDeleted):
        return [msg.ref]
    return []


def _whole_cluster(env: Envelope) -> None:
    """Reports are about their cluster as a whole: a link's news after its connect, the
    latest progress last."""
    return None


def is_inventory_request(msg: Message) -> TypeGuard[Batch]:
    """An agent's empty reconciliation batch: "tell me what you hold of this kind"."""
    return isinstance(msg, Batch) and msg.batch_type == BATCH_RECONCILIATION and not msg.unrolled()


class Ingester:
    def __init__(
        self,
        bus: Bus,
        store: Store,
        *,
        max_attempts: int = 5,
        tombstone_retention: float = TOMBSTONE_RETENTION,
        purge_interval: float = 3600.0,
        in_flight: int = IN_FLIGHT,
    ) -> None:
        self.bus = bus
        self.store = store
        self.max_attempts = max_attempts
        self.tombstone_retention = tombstone_retention
        self.purge_interval = purge_interval
        self.in_flight = in_flight
        self.order = ObjectOrder()
        self.stale = StaleWrites()
        self.supervisor = Supervisor("ingester")  # background tasks: logged and restarted
        self.writer = WriteBatcher(store, on_stale=self.stale, supervisor=self.supervisor)
        self.reader = ReadBatcher(store)
        self.unavailable_retries = 0
        self.full_retries = 0
        self._full_logged_at = -FULL_LOG_INTERVAL
        self._subscriptions: list[Subscription] = []

    async def start(self) -> None:
        self.writer.start()
        # One durable per partition: replicas share each partition's work queue, objects keep
        # their order (an object always maps to one partition), and partitions run in parallel.
        # Messages of one partition are handled up to ``in_flight`` at once, so their writes
        # share transactions; each object's messages still go in order (object_order.py).
        on_agent = self._guard(self._on_agent, self.order, _objects_of)
        self._subscriptions = [
            await self.bus.subscribe(
                up_partition_filter(p), f"ingester-up-{p}", on_agent, in_flight=self.in_flight
            )
            for p in range(UP_PARTITIONS)
        ]
        # Backend writes and reports overlap too: writes in order per object, reports in
        # order per cluster (each a commit of its own, hundreds a second with many clusters).
        on_write = self._guard(self._on_write, ObjectOrder(), _written_object)
        self._subscriptions.append(
            await self.bus.subscribe(
                WRITE_FILTER, "ingester-writes", on_write, in_flight=self.in_flight
            )
        )
        self._subscriptions.append(
            await self.bus.subscribe(DEAD_FILTER, "ingester-dead", self._on_dead)
        )
        on_report = self._guard(self._on_report, ObjectOrder(), _whole_cluster)
        self._subscriptions.append(
            await self.bus.subscribe(
                REPORT_FILTER, "ingester-reports", on_report, in_flight=self.in_flight
            )
        )
        self.supervisor.spawn("purge-tombstones", self._purge_periodically)
        self.supervisor.spawn(
            "cluster-gauges", lambda: CLUSTER_GAUGES.refresh_periodically(self.store)
        )

    async def _purge_periodically(self) -> None:
        """Forget tombstones older than the retention: by then no late put of theirs can arrive
        (the bus keeps messages for less time than this)."""
        while True:
            try:
                purged = await self.store.purge_tombstones(time.time() - self.tombstone_retention)
                if purged:
                    log.info("purged %d tombstones", purged)
                # Settled backend writes are kept as long: their outcomes stay readable.
                purged = await self.store.purge_writes(time.time() - self.tombstone_retention)
                if purged:
                    log.info("purged %d settled backend writes", purged)
            except Exception as exc:
                log.warning("tombstone purge failed: %s", exc)
            await asyncio.sleep(self.purge_interval)

    async def stop(self) -> None:
        for sub in self._subscriptions:
            await sub.stop()
        self._subscriptions = []
        await self.writer.stop()
        await self.reader.stop()
        await self.supervisor.stop()  # the purger

    def _guard(
        self,
        handle: Callable[[Envelope, Delivery], Awaitable[None]],
        order: ObjectOrder | None = None,
        objects: Callable[[Envelope], list[ObjectRef] | None] = _objects_of,
    ) -> Callable[[Delivery], Awaitable[None]]:
        """``handle`` with bad input parked and failures sorted into retry or park; with
        ``order``, after the earlier handlers holding any of ``objects(env)`` (None: the whole
        cluster), for handlers that run at once."""
        async def guarded(delivery: Delivery) -> None:
            started = time.perf_counter()
            try:
                # Objects and patches are parsed (and a bad one refused alone) where they are
                # used, once, not also here.
                env = decode_envelope(delivery.data, check_payloads=False)
            except DecodeError as exc:
                bad_input("ingester", exc.reason)
                await self._park(delivery, f"undecodable: {exc}", exc.reason)
                return
            if order is None:
                await attempt(env, delivery, started)
                return
            # Taken before anything awaits: handlers started in delivery order queue in it.
            async with order.turn((env.account, env.cluster), objects(env), delivery.seq):
                await attempt(env, delivery, started)

        async def attempt(env: Envelope, delivery: Delivery, started: float) -> None:
            try:
                await handle(env, delivery)
                if env.at:  # an agent's message, stamped by the server that published it
                    CLUSTER_GAUGES.observe_lag(env.account, env.cluster, env.at)
            except BusFullError as exc:
                # The cluster's own queue is full (e.g. its agent takes no messages): this one
                # waits in the bus for room. The bus counts every refusal; log now and then.
                self.full_retries += 1
                now = time.monotonic()
                if now - self._full_logged_at >= FULL_LOG_INTERVAL:
                    self._full_logged_at = now
                    log.warning(
                        "%s stays queued (%d retries so far for full clusters): %s",
                        delivery.subject,
                        self.full_retries,
                        exc,
                    )
                raise
            except (StoreUnavailableError, BusError) as exc:
                # An outage is not the message's fault: it waits in the bus, however long.
                self.unavailable_retries += 1
                log.warning("store or bus unavailable; %s stays queued: %s", delivery.subject, exc)
                raise
            except Exception as exc:
                if delivery.attempt < self.max_attempts:
                    log.warning(
                        "attempt %d on %s failed: %s", delivery.attempt, delivery.subject, exc
                    )
                    raise
                await self._park(delivery, f"failed {delivery.attempt} times: {exc}", "failing")
            finally:
                INGEST_SECONDS.observe(time.perf_counter() - started)

        return guarded

    async def _park(self, delivery: Delivery, reason: str, label: str) -> None:
        dead_id = await self.store.park(delivery.subject, delivery.data, reason)
        DEAD_LETTERS.labels(label).inc()
        log.error("parked bus message %d from %s: %s", dead_id, delivery.subject, reason)

    async def _on_dead(self, delivery: Delivery) -> None:
        try:
            subject, data, reason = decode_dead_letter(delivery.data)
        except DecodeError as exc:
            subject, data, reason = delivery.subject, delivery.data, str(exc)
        await self._park(
            Delivery(subject, data, delivery.seq, delivery.attempt), reason, "forwarded"
        )

    async def _on_agent(self, env: Envelope, delivery: Delivery) -> None:
        if env.message is None:
            if env.control == CONTROL_CONNECTED:
                # Only kubescape agents cause this control; they never say which kinds they sync.
                await self.store.save_cluster_info(
                    ClusterInfo(env.account, env.cluster, KUBESCAPE_PROTOCOL)
                )
            await self._send_inventory(env)
            return
        msg = env.message
        if is_inventory_request(msg):
            rows = await self.store.list(env.account, env.cluster, msg.kind)
            answer = inventory_answer(msg, (_held(row) for row in rows))
            await self.bus.publish(
                down_subject(env.account, env.cluster),
                encode_envelope(Envelope(env.account, env.cluster, answer)),
            )
            return
        # A batch counts as the object messages it carries, as if each were sent alone.
        items = msg.unrolled() if isinstance(msg, Batch) else ()
        counts = Counter(item.event for item in items or (msg,))
        for event, count in counts.items():  # one metric update per event, not per object
            MESSAGES.labels("ingester", "in", event.name.lower()).inc(count)
        lookup: dict[ObjectRef, StoredCopy] = {}
        wanted = refs_to_look_up(msg)
        if wanted:  # one read for the whole message, none for a batch of puts
            keys = [ObjectKey(env.account, env.cluster, ref) for ref in wanted]
            for key, row in (await self.reader.get_many(keys)).items():
                lookup[key.ref] = StoredCopy(row.checksum, row.object)
        try:
            await self._carry_out(env, delivery, decide_all(msg, lookup, store_parses=True))
        except BadObjectError as exc:
            # Some object of the message is not JSON the store takes; nothing of it landed.
            # Parsed here this time, each bad one is refused alone and the rest stored.
            log.info("%s/%s: the store refused an object of a message (%s); parsing each",
                     env.account, env.cluster, exc)  # fmt: skip
            await self._carry_out(env, delivery, decide_all(msg, lookup))

    async def _on_write(self, env: Envelope, delivery: Delivery) -> None:
        msg = env.message
        if not isinstance(msg, PutObject | ObjectDeleted):
            bad_input("ingester", "bad_write")
            await self._park(
                delivery, "backend writes must be PutObject or ObjectDeleted", "bad_write"
            )
            return
        if write_id(msg) is not None:
            # Usually the API recorded it already; not if the database was away when the API
            # published it, or if another service published it on the bus directly.
            record = WriteRecord.pending(
                env.account, env.cluster, msg, delivery.subject, delivery.data
            )
            if await self.store.add_write(record):
                log.info(
                    "recorded backend write %s, published without a record", msg.msg_id,
                    extra={"msgId": msg.msg_id, "account": env.account, "cluster": env.cluster},
                )
            # A redelivered write may arrive after a newer one to the same object (its first
            # attempt failed, the next write went through): carried out now, it would put the
            # older version back in the cluster, and the cluster's copy into the store.
            newer = await self.store.claim_forward(msg.msg_id)
            if newer is not None:
                await self._supersede(env, msg, newer)
                return
        await self._carry_out(env, delivery, [backend_write(msg)])

    async def _supersede(self, env: Envelope, msg: PutObject | ObjectDeleted, newer: str) -> None:
        SUPERSEDED_WRITES.inc()
        reason = f"superseded: the newer write {newer} to {msg.ref} was forwarded before this"
        await self.store.settle_write(msg.msg_id, WriteStatus.SUPERSEDED, reason)
        log.warning(
            "backend write %s %s", msg.msg_id, reason,
            extra={"msgId": msg.msg_id, "account": env.account, "cluster": env.cluster},
        )  # fmt: skip

    async def _on_report(self, env: Envelope, delivery: Delivery) -> None:
        report = env.report
        if env.control == CONTROL_LINK:  # a server replica's facts for the fleet status
            await record_link(self.store, env)
            return
        if isinstance(report, SyncProgress):
            await record_progress(self.store, env, report)
            return
        if report is None:
            bad_input("ingester", "bad_report")
            await self._park(delivery, "a report subject carries no report", "bad_report")
            return
        if isinstance(report, AgentInfo):
            info = ClusterInfo(env.account, env.cluster, ACK_PROTOCOL, report.kinds)
            await self.store.save_cluster_info(info)
            log.info("%s/%s syncs %d kinds", env.account, env.cluster, len(report.kinds))
            return
        write = await self.store.get_write(report.msg_id)
        if write is not None and (write.account, write.cluster) != (env.account, env.cluster):
            # Only the cluster a write was for may say what became of it.
            bad_input("ingester", "foreign_outcome")
            log.warning(
                "%s/%s reported on write %s of %s/%s; ignored",
                env.account, env.cluster, report.msg_id, write.account, write.cluster,
            )
            return
        settled = write is not None and await self.store.settle_write(
            report.msg_id, report.status, report.reason
        )
        if not settled:
            # Unknown (not written through this backend's API) or already final: nothing to do.
            log.debug("outcome %s of write %s not recorded", report.status, report.msg_id)
            return
        good = report.status in (WriteStatus.APPLIED, WriteStatus.SENT)
        level = logging.INFO if good else logging.WARNING
        log.log(
            level,
            "write %s to %s/%s %s: %s %s",
            report.msg_id,
            env.account,
            env.cluster,
            report.ref,
            report.status.value,
            report.reason,
        )

    async def _carry_out(
        self, env: Envelope, delivery: Delivery, decisions: list[Decision]
    ) -> None:
        writes: list[Write] = []
        for decision in decisions:
            change = decision.change
            if change is None:
                continue
            key = ObjectKey(env.account, env.cluster, change.ref)
            if isinstance(change, Remove):
                writes.append(Delete(key, delivery.seq))
            elif isinstance(change, UpsertText):
                writes.append(UnparsedObject(key, change.checksum, change.object, delivery.seq))
            else:
                writes.append(
                    StoredObject(
                        key,
                        change.uid,
                        change.resource_version,
                        change.checksum,
                        change.object,
                        delivery.seq,
                    )
                )
        if writes:
            await self.writer.apply(writes)
        # Counted once the writes landed: a message decided again (see _on_agent) or retried
        # counts its refusals once.
        for decision in decisions:
            for reason, text in decision.errors:
                bad_input("ingester", reason)
                log.warning("%s/%s: %s", env.account, env.cluster, text,
                            extra={"account": env.account, "cluster": env.cluster})  # fmt: skip
        subject = down_subject(env.account, env.cluster)
        for decision in decisions:
            for reply in decision.send:
                await self.bus.publish(
                    subject, encode_envelope(Envelope(env.account, env.cluster, reply))
                )

    async def _send_inventory(self, env: Envelope) -> None:
        """The cluster's inventory, one batch per kind the store holds: pushed to kubescape
        agents on connect, and to every agent periodically."""
        rows = await self.store.list(env.account, env.cluster)
        batches = reconciliation_batches(_held(row) for row in rows)
        subject = down_subject(env.account, env.cluster)
        for batch in batches:
            await self.bus.publish(
                subject, encode_envelope(Envelope(env.account, env.cluster, batch))
            )


def _held(row: StoredObject) -> tuple[ObjectRef, str, int]:
    """An inventory entry with the stored resource version, which kubescape agents compare."""
    return row.key.ref, row.checksum, resource_version_number(row.resource_version)
