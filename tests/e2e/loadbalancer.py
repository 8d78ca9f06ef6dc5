"""A TCP load balancer for tests: round-robin over live backends, like a cloud L4 balancer.

Connections are spliced byte for byte, so websockets pass through untouched. A backend that
refuses a connection is skipped, which is how a real balancer's health checks behave once a
replica has died.

It doubles as the link-fault injector of the fault matrix: :meth:`drop` closes every spliced
connection cleanly (both peers see EOF at once); :meth:`blackhole` keeps the established
connections open but silently discards their bytes in both directions, which is what a dead NAT
entry looks like to the peers: only their own heartbeats can notice (new connections pass);
and ``mute`` makes new connections be accepted and then never answered, like a hung server.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools


class LoadBalancer:
    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self.backends = backends
        self._next = itertools.cycle(range(len(backends)))
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._swallowed: set[asyncio.StreamWriter] = set()  # writers of black-holed splices
        self.mute = False
        self.accepted = 0
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def drop(self) -> int:
        """Close every spliced connection (a clean TCP close); returns how many were open."""
        writers = list(self._writers)
        for writer in writers:
            with contextlib.suppress(Exception):
                writer.close()
        return len(writers) // 2

    def blackhole(self) -> int:
        """Discard every byte of the connections open now, keeping them open; returns how
        many. Connections made afterwards are spliced normally."""
        self._swallowed |= self._writers
        return len(self._writers) // 2

    @property
    def open_connections(self) -> int:
        return len(self._writers) // 2

    async def _dial(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for _ in range(len(self.backends)):
            host, port = self.backends[next(self._next)]
            try:
                return await asyncio.open_connection(host, port)
            except OSError:
                continue
        return None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.accepted += 1
        try:
            if self.mute:
                # A hung server answers nothing: hold the socket until the client gives up.
                while await reader.read(65536):
                    pass
                return
            upstream = await self._dial()
            if upstream is None:
                return
            up_reader, up_writer = upstream
            self._writers.update((writer, up_writer))
            try:
                await asyncio.gather(self._pipe(reader, up_writer),
                                     self._pipe(up_reader, writer))
            finally:
                self._writers.difference_update((writer, up_writer))
                self._swallowed.difference_update((writer, up_writer))
        finally:
            writer.close()
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if writer in self._swallowed:
                    continue  # black-holed: the bytes vanish, the connection stays open
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()
