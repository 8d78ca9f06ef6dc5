"""Admission control for every listening socket: a header deadline and a connection limit.

aiohttp has no header read timeout and no connection limit of its own. 1,100 clients trickling
their headers without a token took every file descriptor of a backend (1024 allowed), so agents
could no longer connect. Each accepted connection here passes through a thin protocol wrapper
(:class:`_Guarded`) that:

* closes it if its request headers are not complete within ``header_timeout`` seconds (also
  between requests on a kept-alive connection, counted from the first byte of the next request);
* admits at most ``max_connections`` at once (clamped below the process's file limit). When the
  table is full, the connection that has waited longest for its headers is closed to make room
  (a slow client must not lock out a fast one), or one idle between requests; if every
  connection is in the middle of a request (an agent socket is, for its lifetime), the
  newcomer gets ``503 Service Unavailable`` with ``Retry-After``.

Every refusal is counted in ``clustersync_listener_events_total`` and logged (rate-limited).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from prometheus_client import Counter, Gauge

from clustersync.runtime.supervisor import Supervisor, log_failure

log = logging.getLogger("clustersync.listener")

LISTENER_EVENTS = Counter(
    "clustersync_listener_events_total",
    "Connections a listener refused or closed to protect itself, by reason",
    ["listener", "reason"],
)
OPEN_CONNECTIONS = Gauge(
    "clustersync_open_connections", "Open client connections, by listener", ["listener"]
)

FD_RESERVE = 64  # descriptors kept for the bus, the store, logs and outgoing connections
BACKLOG = 1024  # the kernel's queue of connections not yet accepted (costs no descriptor)
MAX_LINGERING = 32  # refused connections drained before closing; beyond, closed at once
LINGER = 1.0  # seconds a refused connection may take to finish sending its request
ACCEPT_PAUSE = 0.1  # seconds to wait after accept() itself failed
ACCEPT_BATCH = 16  # connections accepted per loop turn at most (well inside the fd reserve)


@dataclass(frozen=True, slots=True)
class ListenerLimits:
    header_timeout: float = 10.0  # seconds to receive a complete request head
    max_connections: int = 4096  # open client connections, clamped to the file limit
    retry_after: int = 5  # seconds, in the 503 answer when full

    def __post_init__(self) -> None:
        if self.header_timeout <= 0:
            raise ValueError("the header timeout must be positive")
        if self.max_connections < 1:
            raise ValueError("the connection limit must be at least 1")


def connection_ceiling(wanted: int) -> int:
    """``wanted``, lowered so that the listener alone can never exhaust the file limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    # Bursts of ACCEPT_BATCH accepted sockets arrive (up to a few loop turns in a row) before
    # the table has closed the connections it evicts to make room for them.
    ceiling = max(1, soft - FD_RESERVE - 4 * ACCEPT_BATCH)
    if wanted > ceiling:
        log.warning(
            "connection limit lowered from %d to %d: the file limit is %d", wanted, ceiling, soft
        )
        return ceiling
    return wanted


def _refusal(retry_after: int) -> bytes:
    body = b"too many connections; retry later\n"
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        f"Retry-After: {retry_after}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class Gate:
    """The connection table of one listener."""

    def __init__(self, name: str, limits: ListenerLimits) -> None:
        self.name = name
        self.limits = limits
        self.max_connections = connection_ceiling(limits.max_connections)
        self.open: dict[RequestHandler, _Guarded] = {}
        # Connections that may be closed to make room: still sending their request head, or
        # idle between requests. Insertion order: the one waiting longest comes first.
        self.evictable: dict[_Guarded, None] = {}
        self.lingering = 0
        self._gauge = OPEN_CONNECTIONS.labels(name)

    def count(self, reason: str, message: str, *args: object) -> None:
        LISTENER_EVENTS.labels(self.name, reason).inc()
        log.warning("%s: " + message, self.name, *args)

    def admit(self, guard: _Guarded) -> bool:
        if len(self.open) >= self.max_connections:
            if not self.evictable:
                self.count("connection_limit", "connection limit %d reached; refusing",
                           self.max_connections)
                return False
            oldest = next(iter(self.evictable))
            self.count("evicted", "connection limit %d reached; closing the slowest client",
                       self.max_connections)
            self.release(oldest)  # now: its transport closes only on the next loop turn
            oldest.close()
        self.open[guard.inner] = guard
        self.evictable[guard] = None
        self._gauge.set(len(self.open))
        return True

    def release(self, guard: _Guarded) -> None:
        self.evictable.pop(guard, None)
        if self.open.pop(guard.inner, None) is not None:
            self._gauge.set(len(self.open))

    def head_received(self, request: web.BaseRequest) -> _Guarded | None:
        guard = self.open.get(request.protocol)
        if guard is not None:
            self.evictable.pop(guard, None)
            guard.busy()
        return guard

    def finished(self, guard: _Guarded) -> None:
        guard.idle()
        if guard.inner in self.open:
            self.evictable[guard] = None  # idle between requests: may make room


class _Guarded(asyncio.Protocol):
    """Wraps aiohttp's per-connection protocol; only the transport callbacks pass through."""

    def __init__(self, inner: RequestHandler, gate: Gate) -> None:
        self.inner = inner
        self.gate = gate
        self.transport: asyncio.Transport | None = None
        self._in_request = False
        self._deadline: asyncio.TimerHandle | None = None
        self._admitted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self.gate.admit(self):
            self._refuse(transport)
            return
        self._admitted = True
        self._arm()
        self.inner.connection_made(transport)

    def _refuse(self, transport: asyncio.Transport) -> None:
        transport.write(_refusal(self.gate.limits.retry_after))
        if self.gate.lingering >= MAX_LINGERING or not transport.can_write_eof():
            transport.close()
            return
        # Half-close and drain what the client already sent before closing: closing a socket
        # with unread input resets it, and the client would never read the 503.
        transport.write_eof()
        self.gate.lingering += 1
        self._deadline = asyncio.get_running_loop().call_later(LINGER, transport.close)

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return  # a refused connection's request, read and dropped
        if not self._in_request and self._deadline is None:
            self._arm()  # the first bytes of the next request on this connection
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._admitted:
            self.inner.eof_received()
            return None
        return False  # a refused client finished sending: close

    def connection_lost(self, exc: Exception | None) -> None:
        lingered = not self._admitted and self._deadline is not None
        self._disarm()
        if lingered:
            self.gate.lingering -= 1
        if self._admitted:
            self.gate.release(self)
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._admitted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self._admitted:
            self.inner.resume_writing()

    # ---------------------------------------------------------------- request boundaries

    def busy(self) -> None:
        self._in_request = True
        self._disarm()

    def idle(self) -> None:
        self._in_request = False

    def close(self) -> None:
        self._disarm()
        if self.transport is not None:
            self.transport.close()

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self.gate.limits.header_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        peer = self.transport.get_extra_info("peername") if self.transport else None
        self.gate.count("header_timeout", "no complete request head from %s within %.0f s",
                        peer, self.gate.limits.header_timeout)
        self.close()


def head_middleware(gate: Gate) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Marks a connection as past its headers for as long as its handler runs."""

    @web.middleware
    async def middleware(
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        guard = gate.head_received(request)
        try:
            return await handler(request)
        finally:
            if guard is not None:
                gate.finished(guard)

    return middleware


class Listener:
    """Accepts connections itself, a few per loop turn, so that a flood can never take more
    descriptors than the table allows: asyncio's own accept loop takes up to its backlog at once,
    and those sockets exist before the table can refuse or evict anything."""

    def __init__(
        self,
        runner: web.AppRunner,
        gate: Gate,
        tls: ssl.SSLContext | None,
        supervisor: Supervisor,
    ) -> None:
        server = runner.server
        assert server is not None, "runner.setup() first"
        self._server = server
        self.gate = gate
        self.tls = tls
        self.sock: socket.socket | None = None
        self.supervisor = supervisor
        self._handshakes: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        family, _, _, _, address = (await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM))[0]
        self.sock = socket.create_server(address[:2], family=family, backlog=BACKLOG)
        self.sock.setblocking(False)
        self.supervisor.spawn("accept", self._accept)
        bound = self.sock.getsockname()
        return str(bound[0]), int(bound[1])

    async def stop(self) -> None:
        await self.supervisor.stop()
        for task in list(self._handshakes):
            task.cancel()
        await asyncio.gather(*self._handshakes, return_exceptions=True)
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.sock is not None
        accepted = 0
        while True:
            try:
                conn, _ = await loop.sock_accept(self.sock)
            except OSError as exc:  # out of descriptors despite the reserve: back off briefly
                self.gate.count("accept_failed", "cannot accept a connection: %s", exc)
                await asyncio.sleep(ACCEPT_PAUSE)
                continue
            handshake = asyncio.create_task(self._connect(conn))
            self._handshakes.add(handshake)
            handshake.add_done_callback(self._handshakes.discard)
            handshake.add_done_callback(log_failure(self.gate.name, "accepting a connection"))
            accepted += 1
            if accepted % ACCEPT_BATCH == 0:
                await asyncio.sleep(0)  # let evicted sockets close before accepting more

    async def _connect(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(
                lambda: _Guarded(self._server(), self.gate),
                conn,
                ssl=self.tls,
                # A TLS handshake holds a descriptor too: it gets the headers' deadline.
                ssl_handshake_timeout=self.gate.limits.header_timeout if self.tls else None,
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            self.gate.count("handshake_failed", "TLS handshake failed: %s", exc)
            conn.close()
