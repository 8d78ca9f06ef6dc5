"""The agent's flusher: from the coalescer to the outbox.

While connected, :class:`Flusher` takes the changes the coalescer holds once they are due (the
latest per object), turns each into messages through the agent session, and queues them as room
in the outbox allows; an object the session cannot shape or process is recorded as a dead letter
rather than stopping the others. It also takes messages from outside the watch (the HTTP ingest
endpoint) into the outbox, refused with :class:`OutboxFullError` past a limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from clustersync.adapters.metrics import bad_input
from clustersync.model import Kind, ObjectRef
from clustersync.protocol.agent_types import WatchEvent, object_version
from clustersync.protocol.messages import Message
from clustersync.protocol.shaping import ShapingError
from clustersync.runtime.agent_core import AgentCore, Pacer


class OutboxFullError(RuntimeError):
    """The agent holds as many unsent messages as it takes from outside the watch."""


class Flusher(AgentCore):
    """Moves due changes from the coalescer into the outbox, and takes submitted messages."""

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
