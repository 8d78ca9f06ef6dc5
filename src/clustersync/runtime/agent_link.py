"""The agent's link: dialling, and one connection's session with the server.

:class:`LinkLoop` dials the server (backing off, giving up only if it was never reached, backing
off longer when another agent with the same identity replaced this one), and for each connection
runs its tasks: the sender draining the outbox, the resync, the describer, the progress reports,
the kubescape keepalive, and the handler of backend messages, read into a bounded inbox so that
slow cluster writes never stall the reader. A failing connection task ends the connection, which
redials and starts it again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp

from clustersync.adapters.metrics import RECONNECTS, TASK_FAILURES, bad_input
from clustersync.link.client import (
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
from clustersync.protocol.backoff import Backoff
from clustersync.protocol.messages import (
    DIGEST_PROTOCOL,
    Ack,
    AgentInfo,
    Batch,
    Frame,
    Message,
    Ping,
    SyncProgress,
    WriteOutcome,
    new_msg_id,
    speaks_clustersync,
)
from clustersync.protocol.supersede import SUPERSEDED_CLOSE
from clustersync.runtime.agent_backend import BackendMessages
from clustersync.runtime.agent_core import Pacer

log = logging.getLogger("clustersync.agent")

HEALTHY_AFTER = 30.0  # a connection that lasted this long resets the dial backoff
INBOX_SIZE = 1000  # backend messages read ahead of the handler; beyond, TCP pushes back


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


class LinkLoop(BackendMessages):
    """Dials the server and serves each connection with its tasks."""

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
