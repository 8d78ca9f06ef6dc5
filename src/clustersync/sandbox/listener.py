"""One TCP port that serves both plain HTTP and HTTPS.

``Sandbox.url`` is plain HTTP (simple for Python clients), while the
kubeconfig must use https for kubectl to send its token (see tls.py). Rather
than two ports, each accepted connection is routed by its first byte: a TLS
handshake record starts with 0x16, an HTTP request with an ASCII letter.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl

from aiohttp import web

_TLS_HANDSHAKE = 0x16
_FIRST_BYTE_TIMEOUT = 30.0


class DualListener:
    def __init__(self, server: web.Server, ssl_context: ssl.SSLContext | None) -> None:
        self._server = server
        self._ssl = ssl_context
        self._sock: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> int:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, backlog=256)
        sock.setblocking(False)
        self._sock = sock
        self._accept_task = asyncio.create_task(self._accept_loop(sock))
        return int(sock.getsockname()[1])

    async def _accept_loop(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError:
                return  # listening socket closed
            task = asyncio.create_task(self._handoff(conn))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _first_byte(self, conn: socket.socket) -> bytes:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def on_readable() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(conn.fileno(), on_readable)
        try:
            async with asyncio.timeout(_FIRST_BYTE_TIMEOUT):
                await ready
        finally:
            loop.remove_reader(conn.fileno())
        return conn.recv(1, socket.MSG_PEEK)

    async def _handoff(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            first = await self._first_byte(conn)
            if not first:
                conn.close()
                return
            if first[0] == _TLS_HANDSHAKE and self._ssl is not None:
                await loop.connect_accepted_socket(
                    self._server, conn, ssl=self._ssl, ssl_handshake_timeout=30.0
                )
            else:
                await loop.connect_accepted_socket(self._server, conn)
        except (OSError, TimeoutError, ssl.SSLError):
            conn.close()
        except asyncio.CancelledError:
            conn.close()
            raise

    async def stop(self) -> None:
        tasks = [t for t in (self._accept_task, *self._pending) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._sock is not None:
            self._sock.close()
            self._sock = None
