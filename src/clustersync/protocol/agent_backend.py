"""The agent session's handling of backend messages, without I/O.

What the agent does with each message from the backend given the cluster's live copy: verify an
announced checksum, answer a GetObject, and turn a PutObject, PatchObject or ObjectDeleted into a
:class:`ClusterWrite` when the write policy permits it, refusing it otherwise. After a write, it
reports the cluster's version of the object back; after a refusal or a failure, what the
cluster really holds (:meth:`BackendMessages.restate`).
"""

from __future__ import annotations

from typing import Any

import orjson

from clustersync.model import Kind, ObjectRef
from clustersync.protocol.agent_state import SessionState
from clustersync.protocol.agent_types import (
    ClusterWrite,
    Outcome,
    Strategy,
    Verb,
    reply_fields,
    write_report,
)
from clustersync.protocol.digest import digest_like
from clustersync.protocol.mergepatch import PatchError, apply_patch
from clustersync.protocol.messages import (
    Batch,
    GetObject,
    Message,
    NewChecksum,
    ObjectDeleted,
    PatchObject,
    Ping,
    PutObject,
    WriteStatus,
)
from clustersync.protocol.shaping import is_filtered, shape, unmask

NAMESPACES = Kind("", "v1", "namespaces")


class BackendMessages(SessionState):
    """Decides on backend messages: checks, answers, and writes allowed or refused."""

    def handle(self, msg: Message, live: dict[str, Any] | None) -> Outcome:
        """Decide on one backend message; ``live`` is the cluster's current copy of its object."""
        out = Outcome()
        if isinstance(msg, Ping):
            return out
        if isinstance(msg, Batch):
            # Reconciliation batches need the whole kind: see :meth:`reconcile`.
            out.errors.append(("bad_batch", "batch must be unrolled or reconciled by the driver"))
            return out
        kind = msg.ref.kind
        if kind not in self.strategies:
            out.errors.append(("unknown_kind", f"{msg.ref}: kind is not synced by this agent"))
            refused = write_report(msg, WriteStatus.REFUSED, f"{kind} is not synced here")
            if refused:
                # The backend stored its write; this cluster will never sync the kind, so
                # nothing of it may stay in the backend's copy (no resync would remove it).
                out.reports += refused
                out.send.append(ObjectDeleted(ref=msg.ref, **reply_fields(msg)))
            return out
        if isinstance(msg, NewChecksum):
            self._verify(msg, live, out)
        elif isinstance(msg, GetObject):
            self._answer_get(msg, live, out)
        elif isinstance(msg, PutObject):
            self._accept_put(msg, live, out)
        elif isinstance(msg, PatchObject):
            self._accept_patch(msg, live, out)
        else:
            self._accept_delete(msg, live, out)
        return out

    def _verify(self, msg: NewChecksum, live: dict[str, Any] | None, out: Outcome) -> None:
        same = live is not None and (
            self._like(msg.ref, live, shape(msg.ref.kind, live), msg.checksum) == msg.checksum
        )
        if same:
            return
        # Missing or different here: ask the backend for its copy (how the backend creates).
        out.send.append(GetObject(ref=msg.ref, **reply_fields(msg)))

    def _answer_get(self, msg: GetObject, live: dict[str, Any] | None, out: Outcome) -> None:
        if live is None or is_filtered(live, self.rules):
            self.shadows.discard(msg.ref)
            out.send.append(ObjectDeleted(ref=msg.ref, **reply_fields(msg)))
            return
        shaped = shape(msg.ref.kind, live)
        checksum = self._canonical(msg.ref, live, shaped)
        if msg.base_object is None or msg.base_object.strip() == b"{}":
            # No base, or an empty one: the backend lacks the object, so only a whole copy helps.
            self.shadows.discard(msg.ref)
        else:
            self.shadows[msg.ref] = msg.base_object
        reply = self._put_or_patch(msg.ref, shaped, checksum, msg, skip_noop=False)
        if reply is not None:
            out.send.append(reply)

    def _permits(self, ref: ObjectRef, verb: Verb) -> str | None:
        policy = self.write_policy
        if verb not in policy.verbs:
            return f"verb {verb.value} is not allowed"
        if policy.kinds is not None and ref.kind not in policy.kinds:
            return "kind is not writable"
        if self.namespaced.get(ref.kind) and not ref.namespace:
            return f"{ref.kind} is namespaced: a write needs a namespace"
        # A Namespace object stands for its namespace: deleting an excluded one is refused too.
        namespace = ref.name if ref.kind == NAMESPACES else ref.namespace
        if not namespace:
            if policy.namespaces is not None:
                # Leaving out the namespace must not get around a namespace allow-list.
                return "writes.namespaces allows namespaced writes only"
            return None
        allowed = (
            namespace in policy.namespaces
            if policy.namespaces is not None
            else self.rules.allows(namespace)
        )
        if not allowed:
            return f"namespace {namespace} is not writable"
        return None

    def _accept_put(self, msg: PutObject, live: dict[str, Any] | None, out: Outcome) -> None:
        try:
            incoming = orjson.loads(msg.object)
        except orjson.JSONDecodeError:
            out.errors.append(("bad_object", f"{msg.ref}: object is not JSON"))
            return
        self._write(
            msg.ref, incoming=incoming, live=live, cause=msg, backend_copy=msg.object, out=out
        )

    def _accept_patch(self, msg: PatchObject, live: dict[str, Any] | None, out: Outcome) -> None:
        if self.strategies[msg.ref.kind] is not Strategy.PATCH or live is None:
            out.send.append(GetObject(ref=msg.ref, **reply_fields(msg)))
            return
        shaped = shape(msg.ref.kind, live)
        try:
            result = apply_patch(shaped, orjson.loads(msg.patch))
        except (orjson.JSONDecodeError, PatchError):
            result = None
        if not isinstance(result, dict) or digest_like(msg.checksum, result) != msg.checksum:
            out.send.append(GetObject(ref=msg.ref, **reply_fields(msg)))
            return
        self._write(
            msg.ref,
            incoming=result,
            live=live,
            cause=msg,
            backend_copy=orjson.dumps(result),
            out=out,
        )

    def _write(
        self,
        ref: ObjectRef,
        *,
        incoming: Any,
        live: dict[str, Any] | None,
        cause: Message,
        backend_copy: bytes,
        out: Outcome,
    ) -> None:
        if not isinstance(incoming, dict):
            self._refuse(
                ref, live, cause, out, metric="bad_object", reason="object is not a JSON object"
            )
            return
        meta = incoming.get("metadata")
        if not isinstance(meta, dict) or meta.get("name") != ref.name:
            self._refuse(
                ref, live, cause, out, metric="bad_object", reason="metadata.name does not match"
            )
            return
        if (meta.get("namespace") or ref.namespace) != ref.namespace:
            # The policy below checks the message's namespace: the object must not name another.
            self._refuse(
                ref,
                live,
                cause,
                out,
                metric="bad_object",
                reason="metadata.namespace does not match",
            )
            return
        refusal = self._permits(ref, Verb.UPDATE if live is not None else Verb.CREATE)
        if refusal:
            self._refuse(
                ref, live, cause, out, metric="write_refused", reason=f"write policy: {refusal}"
            )
            return
        obj, missing = unmask(incoming, live)
        if missing:
            # Writing the mask would replace a real secret with "XXXXXX".
            text = f"{missing} masked env value(s) refused"
            self._refuse(ref, live, cause, out, metric="masked_value", reason=text)
            return
        out.writes.append(ClusterWrite(ref, obj, cause, backend_copy))

    def _refuse(
        self,
        ref: ObjectRef,
        live: dict[str, Any] | None,
        cause: Message,
        out: Outcome,
        *,
        metric: str,
        reason: str,
    ) -> None:
        out.errors.append((metric, f"{ref}: {reason}"))
        out.reports += write_report(cause, WriteStatus.REFUSED, reason)
        out.send += self.restate(ref, live, cause)

    def restate(self, ref: ObjectRef, live: dict[str, Any] | None, cause: Message) -> list[Message]:
        """After a backend write was refused (here or by the API server) or failed: tell the
        backend what the cluster really holds.

        The backend stored its write before sending it; without this its copy would keep an
        object (or a version) the cluster never got, until the next reconciliation.
        """
        self.shadows.discard(ref)
        self._sent.pop(ref, None)
        if live is None or is_filtered(live, self.rules):
            return [ObjectDeleted(ref=ref, **reply_fields(cause))]
        shaped = shape(ref.kind, live)
        checksum = self._checksum(ref, live, shaped)
        body = orjson.dumps(shaped)
        return [PutObject(ref=ref, checksum=checksum, object=body, **reply_fields(cause))]

    def _accept_delete(self, msg: ObjectDeleted, live: dict[str, Any] | None, out: Outcome) -> None:
        refusal = self._permits(msg.ref, Verb.DELETE)
        if refusal:
            self._refuse(
                msg.ref, live, msg, out, metric="write_refused", reason=f"write policy: {refusal}"
            )
            return
        self.shadows.discard(msg.ref)
        out.writes.append(ClusterWrite(msg.ref, None, msg))

    def applied(self, write: ClusterWrite, result: dict[str, Any]) -> list[Message]:
        """After a backend write landed: report the cluster's version of the object.

        The cluster adds uid, resourceVersion and defaults, so the backend's copy is out of date
        the moment the write lands. Patching from the backend's own copy sends only those
        additions; the shadow then equals the written object, so the watch event for this very
        write produces no message (no echo).
        """
        kind = write.ref.kind
        if is_filtered(result, self.rules):
            return []
        shaped = shape(kind, result)
        if write.backend_copy is not None and self.strategies.get(kind) is Strategy.PATCH:
            self.shadows[write.ref] = write.backend_copy
        checksum = self._checksum(write.ref, result, shaped)
        reply = self._put_or_patch(write.ref, shaped, checksum, write.cause, skip_noop=False)
        return [reply] if reply else []
