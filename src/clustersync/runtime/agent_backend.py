"""The agent's handling of backend messages, and the writes they make in the cluster.

:class:`BackendMessages` decides on each backend message through the agent session (with the
cluster's copy of its object, from the informer's cache once synced), hands reconciliation
answers to the resync, and carries out the writes the session allows: create-or-replace or
delete through the API server, tried again after transient errors, with the outcome reported to
a clustersync server and, when the cluster did not take the write, what it holds instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from clustersync.adapters.kube import KubeConflictError, KubeError
from clustersync.adapters.metrics import APPLY_SECONDS, CLUSTER_WRITES
from clustersync.model import ObjectRef
from clustersync.protocol.agent_types import ClusterWrite, write_report
from clustersync.protocol.messages import BATCH_RECONCILIATION, Batch, Message, Ping, WriteStatus
from clustersync.protocol.outcomes import status_for_api_error
from clustersync.protocol.writes import prepare_create, prepare_replace
from clustersync.runtime.agent_resync import Resync

log = logging.getLogger("clustersync.agent")

T = TypeVar("T")


class BackendMessages(Resync):
    """Handles backend messages and carries out the cluster writes they lead to."""

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
