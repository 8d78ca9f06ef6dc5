"""The agent's dead letters: objects it could not handle, kept on a bounded list.

The agent has no store, and an object too large for a frame cannot reach the backend either, so
the agent keeps the most recent ones itself: each skip is logged as an error, counted in
``clustersync_agent_skipped_objects_total{reason}``, and listed (newest last) at the agent's
``/deadletters`` health route for an operator to see what is missing and why.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import asdict, dataclass

from aiohttp import web

from clustersync.adapters.kube.informer import SkippedObject
from clustersync.adapters.metrics import SKIPPED_OBJECTS
from clustersync.model import Kind

log = logging.getLogger("clustersync.agent")

KEEP = 200  # entries; older ones are forgotten (the metric still counts them)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    at: float  # wall-clock seconds
    kind: Kind
    namespace: str
    name: str
    reason: str
    detail: str


class DeadLetters:
    def __init__(self, keep: int = KEEP) -> None:
        self._entries: collections.deque[DeadLetter] = collections.deque(maxlen=keep)

    def record(self, kind: Kind, namespace: str, name: str, reason: str, detail: str) -> None:
        SKIPPED_OBJECTS.labels(reason).inc()
        log.error("skipped %s %s/%s (%s): %s", kind, namespace, name, reason, detail[:500])
        self._entries.append(DeadLetter(time.time(), kind, namespace, name, reason, detail[:500]))

    def record_skipped(self, skipped: SkippedObject) -> None:
        self.record(skipped.kind, skipped.namespace, skipped.name, skipped.reason, skipped.detail)

    def entries(self) -> list[DeadLetter]:
        return list(self._entries)

    def add_routes(self, app: web.Application) -> None:
        async def listing(request: web.Request) -> web.Response:
            return web.json_response(
                [{**asdict(d), "kind": str(d.kind)} for d in self._entries]
            )

        app.router.add_get("/deadletters", listing)
