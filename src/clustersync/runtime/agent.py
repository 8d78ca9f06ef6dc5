"""The agent: watches the cluster, talks to the server, applies the backend's writes.

A driver around two sans-I/O cores: :class:`AgentSession` (what to send for a cluster change or a
backend message) and :class:`LinkSession` (outbox bounds, acks, awaiting-inventory, resync
timing). Informers feed a coalescer; a flusher turns due entries into messages while connected;
the link loop dials, resyncs on each (re)connect, and handles the backend's messages in arrival
order. While disconnected, changes wait in the coalescer (latest per object). Producers wait for
room in the bounded outbox, and informers wait while the coalescer is full, so memory stays
bounded; long walks over a kind yield to the event loop, so heartbeats are never missed.

Background tasks are supervised: an informer or the flusher that fails is logged and restarted
(and stops the agent with an error if it keeps failing); a failing per-connection task is logged
and ends the connection, which redials and starts it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from clustersync.adapters.kube import KubeApi, KubeConflictError, KubeError
from clustersync.adapters.kube.informer import Informer, UnusableSnapshotError
from clustersync.adapters.metrics import (
    AGENT_QUEUED,
    APPLY_SECONDS,
    CLUSTER_WRITES,
    RECONNECTS,
    TASK_FAILURES,
    bad_input,
)
from clustersync.link.client import (
    DIAL_TIMEOUT,
    Credentials,
    LinkError,
    PermanentLinkError,
    SupersededError,
    dial,
    stop_ping_frames,
    tls_context,
)
from clustersync.link.frames import (
    FrameTooLargeError,
    Rejected,
    WebSocket,
    receive_deliveries,
    send,
)
from clustersync.model import Kind, ObjectRef
from clustersync.protocol.agent import (
    AgentSession,
    ClusterWrite,
    Listed,
    Outcome,
    ReconcilePasses,
    WatchEvent,
    object_version,
    write_report,
)
from clustersync.protocol.backoff import Backoff
from clustersync.protocol.cache_snapshot import fingerprint as cache_fingerprint
from clustersync.protocol.checksum_cache import Entry, fingerprint, sample
from clustersync.protocol.coalesce import Coalescer
from clustersync.protocol.link_session import LinkSession
from clustersync.protocol.messages import (
    BATCH_RECONCILIATION,
    DIGEST_PROTOCOL,
    Ack,
    AgentInfo,
    Batch,
    Frame,
    Message,
    Ping,
    SyncedKind,
    SyncProgress,
    WriteOutcome,
    WriteStatus,
    new_msg_id,
    speaks_clustersync,
)
from clustersync.protocol.outcomes import status_for_api_error
from clustersync.protocol.shaping import ShapingError
from clustersync.protocol.supersede import SUPERSEDED_CLOSE, SupersedePolicy
from clustersync.protocol.writes import prepare_create, prepare_replace
from clustersync.runtime.agent_dead_letters import DeadLetters
from clustersync.runtime.agent_progress import SyncProgressLog
from clustersync.runtime.cache_snapshot_file import CacheSnapshotFile
from clustersync.runtime.checksum_file import ChecksumFile
from clustersync.runtime.config import AgentConfig
from clustersync.runtime.memtrim import trimmer
from clustersync.runtime.supervisor import Supervisor

log = logging.getLogger("clustersync.agent")

T = TypeVar("T")

# Backend writes meeting a transient API server error are tried again after these delays (about
# 8 s in all): well inside the server's ack timeout, so the backend waits rather than redelivers.
WRITE_RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 4.0)

HEALTHY_AFTER = 30.0  # a connection that lasted this long resets the dial backoff
INBOX_SIZE = 1000  # backend messages read ahead of the handler; beyond, TCP pushes back
PENDING_LIMIT = 10_000  # changes waiting in the coalescer before the informers pause
SLICE = 0.02  # seconds of work between yields to the event loop in long walks
KUBESCAPE_PING_INTERVAL = 50.0  # seconds, as kubescape's Go agent
PENDING = tuple[Kind, str, dict[str, Any]]


RELEASE_CHECK_INTERVAL = 5.0  # seconds between checks whether freed memory can be released
CHECKSUM_SAVE_INTERVAL = 60.0  # seconds between saves of changed checksums (and at shutdown)
SUBMIT_LIMIT = 10_000  # queued messages beyond which the ingest endpoint is refused (503)


class OutboxFullError(RuntimeError):
    """The agent holds as many unsent messages as it takes from outside the watch."""


class Pacer:
    """Yields to the event loop once ``SLICE`` seconds of work have passed since the last yield:
    hashing a kind of 100k objects takes seconds, and the heartbeat must keep going."""

    def __init__(self, slice_seconds: float = SLICE) -> None:
        self.slice = slice_seconds
        self._since = time.monotonic()

    async def tick(self) -> None:
        now = time.monotonic()
        if now - self._since >= self.slice:
            await asyncio.sleep(0)
            self._since = time.monotonic()


def use_fast_deflate() -> bool:
    """Compress websocket frames (permessage-deflate) with zlib-ng instead of zlib, when it is
    installed: the same deflate format, about four times less CPU at the level aiohttp uses
    (measured on batches of 500 pods: 2.8 against 10.9 us per object, 272 against 224 bytes
    per object on the wire), and compressing was a fifth of the agent's CPU on an initial sync.
    Process-wide (aiohttp has one backend). Returns whether zlib-ng is in use."""
    try:
        from zlib_ng import zlib_ng  # a dependency; missing only where it could not install
    except ImportError:
        return False
    aiohttp.set_zlib_backend(zlib_ng)
    return True


class Agent:
    def __init__(self, config: AgentConfig, kube: KubeApi, *, git_version: str = "") -> None:
        self.config = config
        self.kube = kube
        self.session = AgentSession(
            {r.kind: r.strategy for r in config.resources}, config.rules, config.write_policy
        )
        self.link = LinkSession(
            [r.kind for r in config.resources], resync_interval=config.resync_interval
        )
        self.dead_letters = DeadLetters()
        self.informers = {
            r.kind: Informer(
                kube,
                r.kind,
                self._sink(r.kind),
                on_skip=self.dead_letters.record_skipped,
                pace=self._pending_room,
            )
            for r in config.resources
        }
        for kind, informer in self.informers.items():
            self.session.share_shadows(kind, self._entry_reader(informer), shaped=True)
        self.progress = SyncProgressLog(self.informers)  # log lines and reports after connect
        self.coalescer: Coalescer[tuple[Kind, str, str], PENDING] = Coalescer(
            config.coalesce_quiet, config.coalesce_max_wait
        )
        self.pending_limit = PENDING_LIMIT
        # Read at scrape time, so a backlog shows without bookkeeping on the hot path (the
        # process's latest agent, where tests run several).
        AGENT_QUEUED.labels("coalescer").set_function(lambda: len(self.coalescer))
        AGENT_QUEUED.labels("outbox").set_function(lambda: len(self.link.outbox))
        self.credentials = Credentials(
            config.access_key,
            config.account,
            config.cluster,
            synchronizer_version=config.version,
            git_version=git_version,
        )
        self.connected = asyncio.Event()
        self.connections = 0
        self.dial_timeout = DIAL_TIMEOUT
        self.submit_limit = SUBMIT_LIMIT
        self.app_ping_interval = KUBESCAPE_PING_INTERVAL  # to a kubescape server, instead
        self.write_retry_delays = WRITE_RETRY_DELAYS
        self.supervisor = Supervisor("agent")
        self._wake_flusher = asyncio.Event()
        self._wake_sender = asyncio.Event()
        self._room_made = asyncio.Event()  # set when the sender made room in the outbox
        self._closing: set[asyncio.Task[bool]] = set()
        self._pending_drained = asyncio.Event()  # set when the flusher took from the coalescer
        self._flushing = 0  # changes the flusher took from the coalescer and has yet to queue
        self._unhandled = 0  # backend messages read on this connection and not yet handled
        # Checksums saved by the last run, in the data directory (see runtime.checksum_file).
        self.checksum_file = (
            ChecksumFile(
                Path(config.data_dir),
                fingerprint({r.kind: r.strategy.value for r in config.resources}),
            )
            if config.data_dir
            else None
        )
        # Each informer's cache as of a resourceVersion, so a restart watches instead of
        # listing (see runtime.cache_snapshot_file); only ever used for this very cluster.
        self.cache_files = (
            {
                kind: CacheSnapshotFile(
                    Path(config.data_dir),
                    kind,
                    cache_fingerprint(kind, config.account, config.cluster, kube.server_url),
                )
                for kind in self.informers
            }
            if config.data_dir
            else {}
        )
        self.checksum_save_interval = CHECKSUM_SAVE_INTERVAL
        self._checksum_samples: dict[Kind, list[Entry]] = {}  # re-hashed before first use
        self._saved_at_change = -1  # the session's checksum_changes when last saved
        self.release_check_interval = RELEASE_CHECK_INTERVAL
        self._last_seen_changes = -1  # checksum_changes at the last memory check

    @property
    def outbox(self) -> Sequence[Frame]:
        """What waits to be sent to the backend (for benchmarks and tests)."""
        return self.link.outbox

    @property
    def _extensions(self) -> bool:
        """The server speaks clustersync.v1: it takes our reports."""
        return self.link.negotiated

    @property
    def supersede(self) -> SupersedePolicy:
        return self.link.supersede

    @supersede.setter
    def supersede(self, policy: SupersedePolicy) -> None:
        self.link.supersede = policy

    @staticmethod
    def _entry_reader(informer: Informer) -> Callable[[bytes], dict[str, Any]]:
        # Through the informer at call time: a restored snapshot replaces its cache (at start,
        # before any shadow is shared).
        def parse(entry: bytes) -> dict[str, Any]:
            return informer.cache.shaped(entry)

        return parse

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

    # ------------------------------------------------------------ cluster side

    def _sink(self, kind: Kind) -> Any:
        def on_event(event_type: str, obj: dict[str, Any]) -> None:
            meta = obj.get("metadata") or {}
            key = (kind, str(meta.get("namespace") or ""), str(meta.get("name") or ""))
            if event_type == "ADDED" and not self.link.announces_addition(kind):
                return  # the coming reconciliation covers it; never counted as sent
            was_idle = len(self.coalescer) == 0
            due_now = self.coalescer.offer(key, (kind, event_type, obj), time.monotonic())
            # Only a leading-edge offer (due at once) makes the earliest due time earlier, so
            # the flusher, already timed for the rest, needs waking for that or when it had
            # nothing to wait for.
            if due_now or was_idle:
                self._wake_flusher.set()

        return on_event

    async def _pending_room(self) -> None:
        """The informers' backpressure: while too many changes wait to be sent, stop reading
        the watch (the API server holds the rest, or answers 410 and the informer relists)."""
        while len(self.coalescer) >= self.pending_limit:
            self._pending_drained.clear()
            await self._pending_drained.wait()

    async def _outbox_room(self) -> None:
        while not self.link.has_room():
            self._room_made.clear()
            await self._room_made.wait()

    async def _flush_loop(self) -> None:
        pacer = Pacer()
        while True:
            await self.connected.wait()
            due_at = self.coalescer.next_due()
            now = time.monotonic()
            if due_at is None or due_at > now:
                self._wake_flusher.clear()
                timeout = None if due_at is None else due_at - now
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
                # cancellation that arrives as the event fires, and the agent then never stops.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake_flusher.wait()
                continue
            due = self.coalescer.pop_due(now)
            self._pending_drained.set()
            self._flushing = len(due)
            for kind, event_type, obj in due:
                if event_type == "ADDED" and not self.link.announces_addition(kind):
                    continue
                await self._outbox_room()
                self._queue(self._local_change(kind, event_type, obj))
                await pacer.tick()
            self._flushing = 0

    def _take_cached_digest(self, kind: Kind, key: tuple[str, str], obj: dict[str, Any]) -> None:
        """The informer hashed this object when it took it in: if its cache entry is of this
        very version (a newer one may have replaced it meanwhile), the session need not."""
        informer = self.informers.get(kind)
        facts = informer.cache.facts_of(key) if informer is not None else None
        if facts is not None and facts.version == object_version(obj):
            self.session.take_digest(ObjectRef(kind, *key), facts)

    def _local_change(self, kind: Kind, event_type: str, obj: dict[str, Any]) -> list[Message]:
        meta = obj.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        try:
            self._take_cached_digest(kind, (namespace, name), obj)
            return self.session.local_change(kind, WatchEvent(event_type), obj)
        except ShapingError as exc:  # kubescape does not send such an object either
            bad_input("agent", "unshapeable")
            self.dead_letters.record(kind, namespace, name, "unshapeable", str(exc))
        except Exception as exc:  # one object that breaks the session must not stop the others
            detail = f"{type(exc).__name__}: {exc}"
            self.dead_letters.record(kind, namespace, name, "unprocessable", detail)
        return []

    async def submit(self, messages: list[Message]) -> None:
        """Queue messages that do not come from a watch (the HTTP ingest endpoint's); like every
        queued message they go out when the link is up and survive reconnects. Raises
        OutboxFullError rather than queue past ``submit_limit`` (a long outage, a flood)."""
        if len(self.link.outbox) + len(messages) > self.submit_limit:
            raise OutboxFullError(f"{len(self.link.outbox)} messages already wait to be sent")
        self._queue(messages)

    def _queue(self, messages: Sequence[Frame]) -> None:
        if messages:
            self.link.queue(messages)
            self._wake_sender.set()

    # ------------------------------------------------------------ link side

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

    async def _link_loop(self) -> None:
        backoff = Backoff()
        # A server never reached since start-up is likely a wrong URL: give up after a while (as
        # kubescape does) so the operator sees it; once connected, retry forever.
        give_up_at = time.monotonic() + self.config.first_connect_timeout
        tls = tls_context(self.config.ca_file)
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    ws = await dial(
                        http,
                        self.config.server,
                        self.credentials,
                        self.config.heartbeat,
                        tls=tls,
                        compress=self.config.compress,
                        timeout=self.dial_timeout,
                    )
                except PermanentLinkError:
                    raise
                except LinkError as exc:
                    if self.connections == 0 and time.monotonic() >= give_up_at:
                        raise LinkError(f"{exc} (never connected; giving up)") from None
                    delay = backoff.next_delay()
                    log.warning("%s; retrying in %.1fs", exc, delay)
                    await asyncio.sleep(delay)
                    continue
                started = time.monotonic()
                await self._serve(ws)
                RECONNECTS.inc()
                if ws.close_code == SUPERSEDED_CLOSE:
                    delay = self._replaced_delay()
                else:
                    self.link.supersede.disconnected_otherwise()
                    if time.monotonic() - started > HEALTHY_AFTER:
                        backoff.reset()
                    delay = backoff.next_delay()
                    log.info("connection to server lost; redialing in %.1fs", delay)
                await asyncio.sleep(delay)

    def _replaced_delay(self) -> float:
        who = f"account {self.config.account!r}, cluster {self.config.cluster!r}"
        policy = self.link.supersede
        delay = policy.replaced()
        if delay is None:
            raise SupersededError(
                f"another agent with the same identity ({who}) replaced this one "
                f"{policy.streak} times in a row: two agents are running with one "
                "access key and cluster name; stopping this one"
            )
        log.warning(
            "the server closed this connection because another agent with the same identity "
            "(%s) connected; backing off %.0fs instead of fighting over the link (%d of %d)",
            who, delay, policy.streak, policy.limit,
        )
        return delay

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.connections += 1
        log.info(
            "connected to %s as %s/%s", self.config.server, self.config.account, self.config.cluster
        )
        # A clustersync server answers inventory requests, so the agent sends only what the
        # backend lacks; a kubescape server gets every object announced by checksum.
        negotiated = speaks_clustersync(ws.protocol)
        self.link.connected(negotiated, time.monotonic())
        # Before anything is hashed for this server: the last one may have used the other kind.
        self.session.use_fast_digests(ws.protocol == DIGEST_PROTOCOL)
        if negotiated:
            # Listed before the link was up: the reconciliation covers them. Dropped here, not
            # when due, so the coalescer never takes them for sends (its leading edge).
            self.coalescer.discard_where(lambda pending: pending[1] == "ADDED")
        self.connected.set()
        self._wake_flusher.set()
        # Backend messages are handled in order by their own task, so slow cluster writes never
        # stall the reader (which must keep answering heartbeats).
        inbox: asyncio.Queue[tuple[Message, int | None]] = asyncio.Queue(maxsize=INBOX_SIZE)
        self._unhandled = 0
        resync = self._request_inventories if negotiated else self._announce_all
        self.progress.begin(answers=negotiated)
        outbox_size = lambda: len(self.link.outbox)  # noqa: E731
        tasks = [
            self._connection_task(
                ws, "progress", self.progress.run(ws, outbox_size, reports=negotiated)
            ),
            self._connection_task(ws, "sender", self._send_loop(ws)),
            self._connection_task(ws, "resync", resync()),
            self._connection_task(ws, "handler", self._handle_loop(inbox)),
            self._connection_task(ws, "describer", self._describe_kinds()),
        ]
        if not negotiated:  # keepalive a Go server accepts: application pings, no ping frames
            stop_ping_frames(ws)
            tasks.append(self._connection_task(ws, "pinger", self._ping_periodically(ws)))
        pacer = Pacer()  # buffered frames are read and decoded without yielding otherwise
        try:
            async for item, delivery_id in receive_deliveries(ws, "agent"):
                await pacer.tick()
                if isinstance(item, Rejected | Ack | AgentInfo | WriteOutcome | SyncProgress):
                    if isinstance(item, AgentInfo | WriteOutcome | SyncProgress):
                        bad_input("agent", "unexpected_report")  # agents report; servers don't
                    # Finished with at once: a frame the agent cannot use must not leave the
                    # server waiting for its ack (and the cluster's down stream stalled).
                    self._finish(delivery_id, idle=inbox.empty())
                else:
                    self._unhandled += 1
                    await inbox.put((item, delivery_id))
        finally:
            self.connected.clear()
            self.link.disconnected()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await ws.close()

    def _connection_task(self, ws: WebSocket, name: str, work: Any) -> asyncio.Task[None]:
        """A task that lives as long as the connection. If it fails, the failure is logged and
        the connection closed: the agent redials, and the task starts again with it."""
        task: asyncio.Task[None] = asyncio.create_task(work, name=f"agent:{name}")

        def done(finished: asyncio.Task[None]) -> None:
            if finished.cancelled():
                return
            error = finished.exception()
            if error is None:
                return
            TASK_FAILURES.labels("agent", name).inc()
            log.error("agent: %s failed; reconnecting to start it again", name, exc_info=error)
            closing = asyncio.create_task(ws.close(code=1011, message=b"agent task failed"))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

        task.add_done_callback(done)
        return task

    async def _handle_loop(self, inbox: asyncio.Queue[tuple[Message, int | None]]) -> None:
        while True:
            msg, delivery_id = await inbox.get()
            try:
                await self._handle(msg)
            except Exception:
                # One message must not end the session; the next reconciliation repairs it.
                log.exception("failed to handle a backend message")
            self._finish(delivery_id, idle=inbox.empty())
            self._unhandled -= 1

    def _finish(self, delivery_id: int | None, *, idle: bool) -> None:
        """Acknowledge by id (negotiated servers number their deliveries; others do not): in one
        Ack once the inbox runs dry, and never more than a burst's worth behind."""
        if self.link.delivery_finished(delivery_id, idle=idle):
            self._wake_sender.set()

    async def _ping_periodically(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """kubescape's keepalive: an application Ping every 50 s, as its Go agent sends."""
        while not ws.closed:
            await asyncio.sleep(self.app_ping_interval)  # a timer, not synchronisation
            try:
                await send(ws, Ping(depth=0, msg_id=new_msg_id()), "agent")
            except (ConnectionError, aiohttp.ClientError):
                return  # the reader sees the connection end

    async def _send_loop(self, ws: WebSocket) -> None:
        # A send that fits the socket buffer returns without yielding, and compressing a
        # thousand objects takes a while: pace it like any other long walk.
        pacer = Pacer()
        while True:
            frame = self.link.next_frame()
            if frame is None:
                self._wake_sender.clear()
                await self._wake_sender.wait()
                continue
            try:
                await send(ws, frame, "agent")
                self.progress.on_sent(frame)
            except FrameTooLargeError as exc:
                self._too_large(frame, exc)
            except (ConnectionError, aiohttp.ClientError) as exc:
                log.warning("send failed, keeping the message for the next connection: %s", exc)
                await ws.close()
                return
            self.link.frame_done()
            if self.link.has_room():
                self._room_made.set()
            await pacer.tick()

    def _too_large(self, msg: Frame, exc: FrameTooLargeError) -> None:
        """A message that cannot fit in a frame is dropped for good: the peer would close the
        connection on it, and every reconnect would send it again."""
        if isinstance(msg, Batch):
            self.dead_letters.record(msg.kind, "", "", "too_large", f"a batch of {exc}")
        elif isinstance(msg, Ack | Ping | AgentInfo | WriteOutcome | SyncProgress):
            log.error("cannot send %s: %s", type(msg).__name__, exc)
        else:
            ref = msg.ref
            self.dead_letters.record(ref.kind, ref.namespace, ref.name, "too_large", str(exc))

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

    async def _release_memory(self, release: Callable[[], None]) -> None:
        """After a burst of work (an initial sync, a reconnect's repairs), once the agent is idle,
        hand the memory it freed back to the system: its RSS follows what it holds, not its
        peak. Checked every few seconds; a trim only follows work."""
        busy = False
        while True:
            await asyncio.sleep(self.release_check_interval)  # a period, not synchronisation
            idle = not self.link.outbox and len(self.coalescer) == 0
            if busy and idle:
                release()
            busy = not idle or self.session.synced.checksum_changes != self._last_seen_changes
            self._last_seen_changes = self.session.synced.checksum_changes

    # ------------------------------------------------------------ checksum file

    async def _load_checksums(self) -> None:
        if self.checksum_file is None:
            return
        entries = await self.checksum_file.load()
        self.session.preload_checksums(entries)
        by_kind: dict[Kind, list[Entry]] = {}
        for entry in entries:
            by_kind.setdefault(entry.ref.kind, []).append(entry)
        del entries
        self._checksum_samples = {kind: sample(group) for kind, group in by_kind.items()}
        self._saved_at_change = self.session.synced.checksum_changes  # nothing new to save

    def _check_checksum_samples(self, kind: Kind) -> None:
        """Before the loaded checksums of a kind are first used, re-hash a random sample of
        those that match their live object's version; one disagreement discards them all."""
        samples = self._checksum_samples.pop(kind, None)
        if not samples or self.checksum_file is None:
            return
        cache = self.informers[kind].cache
        for entry in samples:
            live = cache.get((entry.ref.namespace, entry.ref.name))
            if live is None or object_version(live) != entry.version:
                continue  # never used: the object changed or went
            try:
                agrees = self.session.checksum_agrees(kind, live)
            except ShapingError:
                continue
            if not agrees:
                self.session.forget_checksums()
                self._checksum_samples.clear()
                self.checksum_file.rejected(f"{entry.ref} hashes otherwise than saved")
                return

    async def _save_checksums_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.checksum_save_interval)  # a period, not synchronisation
            await self.save_checksums()
            await self.save_caches()

    # ------------------------------------------------------------ informer caches

    async def _restore_caches(self) -> None:
        for kind, file in self.cache_files.items():
            snapshot = await file.load()
            if snapshot is None:
                continue
            try:
                self.informers[kind].restore(snapshot)
            except UnusableSnapshotError as exc:
                file.rejected(str(exc))

    async def save_caches(self) -> None:
        """Save each informer's cache whose resourceVersion moved since the last save (a cache
        in the middle of a list is not exact and keeps its older, still valid, file)."""
        for kind, file in self.cache_files.items():
            snapshot = self.informers[kind].snapshot()
            if snapshot is not None and snapshot.resource_version != file.saved_version:
                await file.save(snapshot)

    async def save_checksums(self) -> None:
        """Save the held checksums if any changed since the last save."""
        changes = self.session.synced.checksum_changes
        if self.checksum_file is None or changes == self._saved_at_change:
            return
        if await self.checksum_file.save(list(self.session.checksum_entries())):
            self._saved_at_change = changes

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

    # ------------------------------------------------------------ backend messages

    async def _handle(self, msg: Message) -> None:
        if isinstance(msg, Ping):
            return
        if isinstance(msg, Batch):
            if msg.batch_type != BATCH_RECONCILIATION:
                for item in msg.unrolled():
                    await self._handle(item)
                return
            await self._reconcile(msg)
            self.progress.on_answer(msg.kind)
            return
        live = await self._live(msg.ref)
        outcome = self.session.handle(msg, live)
        self._carry_out(outcome)
        for write in outcome.writes:
            started = time.perf_counter()
            try:
                await self._apply(write)
            except Exception as exc:
                # An outcome even for the unexpected, so the backend does not wait forever.
                reason = f"agent error: {exc!r}"
                self._report(write_report(write.cause, WriteStatus.FAILED, reason))
                raise
            verb = "put" if write.object is not None else "delete"
            APPLY_SECONDS.labels(verb).observe(time.perf_counter() - started)

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

    async def _live(self, ref: ObjectRef) -> dict[str, Any] | None:
        """The cluster's copy: from the informer's cache once synced (it follows the watch), so
        answering the backend costs no API round trip; from the API otherwise."""
        informer = self.informers.get(ref.kind)
        if informer is None:
            return None
        if informer.synced.is_set():
            return informer.cache.get((ref.namespace, ref.name))
        try:
            return await self.kube.get(ref)
        except KubeError as exc:
            log.warning("cannot read %s: %s", ref, exc)
            return None

    def _carry_out(self, outcome: Outcome) -> None:
        for reason, text in outcome.errors:
            bad_input("agent", reason)
            log.warning("backend message refused: %s", text)
        self._queue(outcome.send)
        self._report(outcome.reports)

    def _report(self, reports: list[WriteOutcome]) -> None:
        """Outcomes of backend writes go to a clustersync server only (kubescape's has no use
        for them); they wait in the outbox like any message, across reconnects."""
        if self._extensions:
            self._queue(reports)

    async def _apply(self, write: ClusterWrite) -> None:
        """Carry out a backend write; report its outcome and, if the cluster did not take it,
        what the cluster holds instead, so the backend's copy converges at once."""
        ref = write.ref
        verb = "put" if write.object is not None else "delete"
        try:
            if write.object is None:
                existed = await self._retrying(verb, ref, lambda: self.kube.delete(ref))
            else:
                obj = write.object
                result = await self._retrying(verb, ref, lambda: self._create_or_replace(ref, obj))
        except KubeError as exc:
            status = status_for_api_error(exc.status)
            CLUSTER_WRITES.labels(verb, status.value).inc()
            log.error("cannot %s %s (%s): %s", verb, ref, status.value, exc)
            self._report(write_report(write.cause, status, str(exc)))
            self._queue(self.session.restate(ref, await self._cluster_copy(ref), write.cause))
            return
        if write.object is None:
            CLUSTER_WRITES.labels("delete", "ok" if existed else "absent").inc()
            if existed:
                self._report(write_report(write.cause, WriteStatus.APPLIED))
            else:
                absent = f"{ref} does not exist in the cluster"
                self._report(write_report(write.cause, WriteStatus.NOT_FOUND, absent))
            return
        CLUSTER_WRITES.labels("put", "ok").inc()
        self._report(write_report(write.cause, WriteStatus.APPLIED))
        self._queue(self.session.applied(write, result))

    async def _retrying(self, verb: str, ref: ObjectRef, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, tried again after a transient error of the API server (5xx, 429, no
        answer, conflicts lost): a short burst must not lose a backend write. Refusals (4xx)
        are final at once."""
        for delay in self.write_retry_delays:
            try:
                return await call()
            except KubeError as exc:
                if status_for_api_error(exc.status) is not WriteStatus.FAILED:
                    raise
                log.warning("cannot %s %s yet, retrying in %.1fs: %s", verb, ref, delay, exc)
            await asyncio.sleep(delay)  # backing off from a struggling API server
        return await call()

    async def _cluster_copy(self, ref: ObjectRef) -> dict[str, Any] | None:
        """The object as the API server holds it now (a failed write may have left the cache
        behind); the cache's copy if the API cannot answer."""
        try:
            return await self.kube.get(ref)
        except KubeError as exc:
            log.warning("cannot read %s back after a failed write: %s", ref, exc)
            informer = self.informers.get(ref.kind)
            return informer.cache.get((ref.namespace, ref.name)) if informer else None

    async def _create_or_replace(self, ref: ObjectRef, obj: dict[str, Any]) -> dict[str, Any]:
        info = await self.kube.resource_info(ref.kind)
        try:
            return await self.kube.create(ref, prepare_create(obj, ref, info.kind_name))
        except KubeConflictError:
            pass
        last: KubeError | None = None
        for _ in range(5):  # optimistic concurrency: re-read and retry on a stale version
            live = await self.kube.get(ref)
            try:
                if live is None:
                    return await self.kube.create(ref, prepare_create(obj, ref, info.kind_name))
                return await self.kube.replace(ref, prepare_replace(obj, ref, info.kind_name, live))
            except KubeConflictError as exc:
                last = exc
        assert last is not None
        raise last
