"""The agent's state, and the two queues every part of it feeds.

:class:`AgentCore` is the base of the agent's parts (see runtime.agent): it holds the sans-I/O
sessions (protocol.agent, protocol.link_session), the informers and the coalescer their events go
into (with the backpressure that pauses them while too many changes wait), the outbox queue
(with the wait for room in it), the saved-state files and the tunables. Putting a message in the
outbox, and carrying out an outcome of the agent session, is done here for all the parts.
:class:`Pacer` lets long walks yield to the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from clustersync.adapters.kube import KubeApi
from clustersync.adapters.kube.informer import Informer
from clustersync.adapters.metrics import AGENT_QUEUED, bad_input
from clustersync.link.client import DIAL_TIMEOUT, Credentials
from clustersync.model import Kind
from clustersync.protocol.agent import AgentSession
from clustersync.protocol.agent_types import Outcome
from clustersync.protocol.cache_snapshot import fingerprint as cache_fingerprint
from clustersync.protocol.checksum_cache import Entry, fingerprint
from clustersync.protocol.coalesce import Coalescer
from clustersync.protocol.link_session import LinkSession
from clustersync.protocol.messages import Frame, WriteOutcome
from clustersync.protocol.supersede import SupersedePolicy
from clustersync.runtime.agent_dead_letters import DeadLetters
from clustersync.runtime.agent_progress import SyncProgressLog
from clustersync.runtime.cache_snapshot_file import CacheSnapshotFile
from clustersync.runtime.checksum_file import ChecksumFile
from clustersync.runtime.config import AgentConfig
from clustersync.runtime.supervisor import Supervisor

log = logging.getLogger("clustersync.agent")

# Backend writes meeting a transient API server error are tried again after these delays (about
# 8 s in all): well inside the server's ack timeout, so the backend waits rather than redelivers.
WRITE_RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 4.0)

PENDING_LIMIT = 10_000  # changes waiting in the coalescer before the informers pause
SLICE = 0.02  # seconds of work between yields to the event loop in long walks
KUBESCAPE_PING_INTERVAL = 50.0  # seconds, as kubescape's Go agent
PENDING = tuple[Kind, str, dict[str, Any]]


RELEASE_CHECK_INTERVAL = 5.0  # seconds between checks whether freed memory can be released
CHECKSUM_SAVE_INTERVAL = 60.0  # seconds between saves of changed checksums (and at shutdown)
SUBMIT_LIMIT = 10_000  # queued messages beyond which the ingest endpoint is refused (503)


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


class AgentCore:
    """The state every part of the agent shares (see the module docstring)."""

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

    def _queue(self, messages: Sequence[Frame]) -> None:
        if messages:
            self.link.queue(messages)
            self._wake_sender.set()

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
