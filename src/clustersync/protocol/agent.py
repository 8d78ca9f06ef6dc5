"""The agent's side of the protocol, without I/O.

The driver feeds it watch events and backend messages together with the live objects it looked
up, and carries out what it returns: messages to send and writes to make in the cluster. It owns
the shadow copies (what the backend last received of each patch-strategy object), which is what
makes merge patches possible.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import orjson

from clustersync.model import Kind, ObjectRef
from clustersync.protocol.cache_entry import Facts
from clustersync.protocol.checksum import CHECKSUM_ANNOTATION, canonical_checksum
from clustersync.protocol.checksum_cache import Entry
from clustersync.protocol.digest import digest_like, fast_digest, is_fast
from clustersync.protocol.inventory import bucket_digests, bucket_of
from clustersync.protocol.mergepatch import PatchError, apply_patch, create_patch, is_noop_patch
from clustersync.protocol.messages import (
    BATCH_RECONCILIATION,
    Batch,
    GetObject,
    Message,
    NewChecksum,
    ObjectDeleted,
    PatchObject,
    Ping,
    PutObject,
    WriteOutcome,
    WriteStatus,
    reply_meta,
)
from clustersync.protocol.outcomes import short_reason, write_id
from clustersync.protocol.shaping import (
    NamespaceRules,
    ShapingError,
    is_filtered,
    shape,
    unmask,
)
from clustersync.protocol.synced import SyncedObjects


class Strategy(StrEnum):
    COPY = "copy"  # always send whole objects
    PATCH = "patch"  # send merge patches against a shadow copy


class Verb(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


class WatchEvent(StrEnum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"


@dataclass(frozen=True, slots=True)
class WritePolicy:
    """What the backend may write into this cluster; everything else is refused."""

    kinds: frozenset[Kind] | None = None  # None: every synced kind
    namespaces: frozenset[str] | None = None  # None: the sync namespace rules apply
    verbs: frozenset[Verb] = frozenset(Verb)


@dataclass(frozen=True, slots=True)
class ClusterWrite:
    """Create-or-replace ``object`` (or delete when None) in the cluster, caused by ``cause``."""

    ref: ObjectRef
    object: dict[str, Any] | None
    cause: Message
    backend_copy: bytes | None = None


@dataclass(frozen=True, slots=True)
class Cached:
    """A live object with the driver's compact cache entry it was read from: an object sent
    whole can then keep that entry as its shadow (see :meth:`AgentSession.share_shadows`)."""

    live: dict[str, Any]
    entry: bytes


class EntryReader(Protocol):
    """How the session reads a driver's cache entry (protocol.cache_entry, the informer's)."""

    def facts(self, entry: bytes) -> Facts: ...

    def parse(self, entry: bytes) -> dict[str, Any]: ...

    def shaped_json(self, entry: bytes) -> bytes | None: ...


@dataclass(slots=True)
class Listed:
    """An object of the driver's cache known by its key and entry only: the session decides on
    the facts in the entry's header (uid, resourceVersion, fast digest, owner) and unpacks the
    entry only to send it, or parses it where the facts do not suffice (see
    :meth:`AgentSession.reconcile_steps`). Not frozen: one is made for every object a
    reconciliation walks, and a frozen one cost three times as much to make."""

    namespace: str
    name: str
    entry: bytes
    reader: EntryReader

    def cached(self) -> Cached:
        return Cached(self.reader.parse(self.entry), self.entry)


@dataclass(slots=True)
class ReconcilePasses:
    """What a reconciliation done in several passes over the cluster keeps between them (see
    :meth:`AgentSession.reconcile_steps`): the objects met so far, and the backend's inventory
    indexed once. A driver whose list is still arriving reconciles each new part as it comes,
    and only the final pass, once the list is complete, may decide deletions."""

    synced: set[ObjectRef] = field(default_factory=set)
    backend: dict[ObjectRef, str] | None = None

    def backend_of(self, batch: Batch) -> dict[ObjectRef, str]:
        if self.backend is None:
            self.backend = {item.ref: item.checksum for item in batch.new_checksum}
        return self.backend


@dataclass(slots=True)
class Outcome:
    send: list[Message] = field(default_factory=list)
    writes: list[ClusterWrite] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (metric reason, log text)
    # Outcomes of backend writes decided here (refusals); sent only to a clustersync server.
    reports: list[WriteOutcome] = field(default_factory=list)


NAMESPACES = Kind("", "v1", "namespaces")


def write_report(cause: Message, status: WriteStatus, reason: str = "") -> list[WriteOutcome]:
    """The outcome of ``cause`` if it is a backend write (see outcomes.write_id), else nothing."""
    ident = write_id(cause)
    if ident is None or not isinstance(cause, PutObject | ObjectDeleted):
        return []
    return [WriteOutcome(ref=cause.ref, status=status, reason=short_reason(reason), msg_id=ident)]


def ref_of(kind: Kind, obj: Mapping[str, Any]) -> ObjectRef:
    meta = obj.get("metadata") or {}
    # Namespaces repeat across many objects: one shared string each (refs are kept per object).
    namespace = sys.intern(str(meta.get("namespace") or ""))
    return ObjectRef(kind, namespace, str(meta.get("name") or ""))


def object_version(live: Mapping[str, Any]) -> str:
    """The "uid/resourceVersion" a held checksum belongs to."""
    meta = live.get("metadata") or {}
    return f"{meta.get('uid', '')}/{meta.get('resourceVersion', '')}"


def precomputed_checksum(live: Mapping[str, Any]) -> str | None:
    """The checksum kubescape's storage server wrote into the object's annotations, if any."""
    annotations = (live.get("metadata") or {}).get("annotations") or {}
    precomputed = annotations.get(CHECKSUM_ANNOTATION) if isinstance(annotations, dict) else None
    return precomputed if isinstance(precomputed, str) and precomputed else None


def checksum_of(live: Mapping[str, Any], shaped: Mapping[str, Any]) -> str:
    """The storage server's precomputed checksum if present, else the canonical hash."""
    return precomputed_checksum(live) or canonical_checksum(shaped)


class AgentSession:
    def __init__(
        self,
        strategies: Mapping[Kind, Strategy],
        rules: NamespaceRules,
        write_policy: WritePolicy | None = None,
    ) -> None:
        self.strategies = dict(strategies)
        self.rules = rules
        self.write_policy = write_policy or WritePolicy()
        # Which synced kinds are namespaced, as discovery says (the driver fills it in); a kind
        # missing here is not known yet, and the API server judges its writes.
        self.namespaced: dict[Kind, bool] = {}
        # One compact record per object holds the three below (see protocol.synced).
        self.synced = SyncedObjects()
        self.shadows = self.synced.shadows
        # Hashing dominates the agent's CPU: each object version is hashed once, whether it is
        # announced, requested, reconciled or re-announced after a reconnect.
        self._checksums = self.synced.checksums
        # Copy-strategy objects have no shadow; their last sent checksum is enough to skip a
        # put that would repeat itself (the watch event of an object the agent just wrote).
        self._sent = self.synced.sent
        # Which checksum this link uses: fast digests once a clustersync.v2 server agreed to
        # them (see use_fast_digests), kubescape's hash otherwise.
        self.fast_digests = False

    def share_shadows(
        self, kind: Kind, parse: Callable[[bytes], dict[str, Any]], *, shaped: bool = False
    ) -> None:
        """Let a patch-strategy object reconciled from a :class:`Cached` or :class:`Listed`
        item keep the cache entry as its shadow instead of a packed copy of what was sent:
        ``parse`` reads an entry back into the live object (raising ValueError if it cannot),
        and the shadow is its shape, the very JSON sent; with ``shaped``, ``parse`` returns that
        shape itself (an entry that holds the shaped JSON: protocol.cache_entry). Packing cost
        about a fifth of an initial sync; the price is a parse (and a shape) when the object
        next changes. ``parse`` must read every entry it was given for as long as the session
        holds it."""

        def read(entry: bytes) -> dict[str, Any]:
            return shape(kind, parse(entry))

        self.synced.share_from(kind, parse if shaped else read)

    def take_digest(self, ref: ObjectRef, facts: Facts) -> None:
        """Hold the fast digest a driver's cache entry has for an object version (see
        :meth:`Listed`): a change of that very version is then not hashed again."""
        if self.fast_digests and facts.shaped and facts.digest is not None:
            self._recorded(ref, facts)

    def use_fast_digests(self, on: bool) -> None:
        """Choose the algorithm for what the agent sends from now on (on every connect: the
        next server may not agree). Cached checksums of the other kind are never handed out:
        :meth:`_checksum` checks each one's kind, so a persisted cache stays usable. A last-sent
        checksum of the other kind never equals a new one, so it only costs one put."""
        self.fast_digests = on

    def _digest(self, live: Mapping[str, Any], shaped: Mapping[str, Any]) -> str:
        """The checksum of an object for this link: the one place the algorithm is chosen."""
        if self.fast_digests:
            return fast_digest(shaped)  # the storage annotation holds kubescape's hash: not used
        return checksum_of(live, shaped)

    def _known(self, ref: ObjectRef, live: Mapping[str, Any]) -> str | None:
        """The held checksum of this very version of the object (same uid and resourceVersion)
        by the link's algorithm, if any: then the object need not even be shaped."""
        cached = self._checksums.get(ref)
        if cached is None or is_fast(cached[1]) != self.fast_digests:
            return None
        version = object_version(live)
        return cached[1] if cached[0] == version and version != "/" else None

    def _checksum(self, ref: ObjectRef, live: Mapping[str, Any], shaped: Mapping[str, Any]) -> str:
        known = self._known(ref, live)
        if known is not None:
            return known
        checksum = self._digest(live, shaped)
        self._checksums[ref] = (object_version(live), checksum)
        return checksum

    def _canonical(self, ref: ObjectRef, live: Mapping[str, Any], shaped: Mapping[str, Any]) -> str:
        """The canonical hash, never the storage annotation: kubescape's agent hashes the object
        when it verifies a checksum or answers a GetObject, and its peers expect that there.
        With fast digests (never kubescape peers), the link's digest."""
        if not self.fast_digests and precomputed_checksum(live) is not None:
            return canonical_checksum(shaped)  # the cache holds the annotation for this one
        return self._checksum(ref, live, shaped)

    def _like(
        self, ref: ObjectRef, live: Mapping[str, Any], shaped: Mapping[str, Any], received: str
    ) -> str:
        """Our checksum of the object of the same kind as ``received`` (cached when that is the
        link's kind): a backend may hold checksums of either kind, e.g. from before an upgrade."""
        if is_fast(received) == self.fast_digests:
            return self._canonical(ref, live, shaped)
        return digest_like(received, shaped)

    def preload_checksums(self, entries: Iterable[Entry]) -> int:
        """Take back checksums saved by an earlier run (see protocol.checksum_cache). Each is
        used only for an object with its uid and resourceVersion; returns how many were taken."""
        taken = 0
        for entry in entries:
            if entry.ref.kind in self.strategies:
                ref = entry.ref
                ref = ObjectRef(ref.kind, sys.intern(ref.namespace), ref.name)
                self._checksums[ref] = (entry.version, entry.checksum)
                taken += 1
        return taken

    def checksum_agrees(self, kind: Kind, live: dict[str, Any]) -> bool:
        """Hash ``live`` afresh: does the checksum held for its version (if any) agree? The fresh
        one is kept. How a driver checks a sample of preloaded checksums before trusting them."""
        ref = ref_of(kind, live)
        held = self._checksums.pop(ref, None)
        shaped = shape(kind, live)
        if held is None or is_fast(held[1]) == self.fast_digests:
            fresh = self._checksum(ref, live, shaped)
            return held is None or held[1] == fresh
        # Saved under the other algorithm (the last server negotiated otherwise): checked by
        # its own algorithm, and kept, as the session keeps checksums of either kind.
        fresh = fast_digest(shaped) if is_fast(held[1]) else checksum_of(live, shaped)
        if fresh != held[1]:
            return False
        self._checksums[ref] = held
        return True

    def checksum_entries(self) -> Iterator[Entry]:
        """Every held checksum with its object version, for saving."""
        for ref, (version, checksum) in list(self._checksums.items()):
            yield Entry(ref, version, checksum)

    def forget_checksums(self) -> None:
        """Drop every held checksum (a preloaded file turned out wrong): they are hashed again."""
        for ref in list(self._checksums):
            self._checksums.pop(ref, None)

    # ------------------------------------------------------------ cluster to backend

    def local_change(self, kind: Kind, event: WatchEvent, live: dict[str, Any]) -> list[Message]:
        """Messages for a (coalesced) watch event."""
        if kind not in self.strategies or is_filtered(live, self.rules):
            return []
        ref = ref_of(kind, live)
        if event is WatchEvent.DELETED:
            self.synced.forget(ref)
            return [ObjectDeleted(ref=ref, **_meta(None))]
        shaped = shape(kind, live)
        checksum = self._checksum(ref, live, shaped)
        if event is WatchEvent.ADDED:
            return [NewChecksum(ref=ref, checksum=checksum, **_meta(None))]
        # The modification shortcut: the backend almost never has the new version yet, so skip
        # the checksum round trip and send the change itself.
        canonical = checksum if precomputed_checksum(live) is None else None
        msg = self._put_or_patch(ref, shaped, checksum, None, skip_noop=True, canonical=canonical)
        return [msg] if msg else []

    def _put_or_patch(
        self,
        ref: ObjectRef,
        shaped: dict[str, Any],
        checksum: str,
        cause: Message | None,
        *,
        skip_noop: bool,
        canonical: str | None = None,  # the canonical hash of ``shaped``, when known
        entry: bytes | None = None,  # the cache entry ``shaped`` was made from (see Cached)
    ) -> PutObject | PatchObject | None:
        body = orjson.dumps(shaped)
        meta = _meta(cause)
        if self.strategies.get(ref.kind) is not Strategy.PATCH:
            if skip_noop and self._sent.get(ref) == checksum:
                return None
            self._sent[ref] = checksum
            return PutObject(ref=ref, checksum=checksum, object=body, **meta)
        try:
            base = self.shadows.decoded(ref)
        except KeyError:  # no shadow: the backend gets the whole object
            if entry is not None and self.synced.shares(ref.kind):
                self.shadows.share(ref, entry)
            else:
                self.shadows[ref] = body
            return PutObject(ref=ref, checksum=checksum, object=body, **meta)
        patch = create_patch(base, shaped)
        if skip_noop and is_noop_patch(patch):
            return None  # kubescape keeps the old shadow here too
        # The backend verifies the canonical hash of the patch result: a precomputed annotation
        # checksum cannot be verified, and a null value cannot travel in a merge patch. Without
        # a null anywhere (no ``null`` token in the JSON) the result is ``shaped`` itself, whose
        # canonical hash may be known already: a second hash per change would double the cost.
        if self.fast_digests:
            # Types count in the fast digest, and a patch leaves out numbers Go finds equal
            # (1 -> 1.0): the result may differ from ``shaped``. Applying costs a few µs.
            checksum = fast_digest(apply_patch(base, patch))
        elif canonical is not None and b"null" not in body:
            checksum = canonical
        else:
            checksum = canonical_checksum(apply_patch(base, patch))
        self.shadows[ref] = body
        return PatchObject(ref=ref, checksum=checksum, patch=orjson.dumps(patch), **meta)

    # ------------------------------------------------------------ backend to cluster

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
                out.send.append(ObjectDeleted(ref=msg.ref, **_meta(msg)))
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
        out.send.append(GetObject(ref=msg.ref, **_meta(msg)))

    def _answer_get(self, msg: GetObject, live: dict[str, Any] | None, out: Outcome) -> None:
        if live is None or is_filtered(live, self.rules):
            self.shadows.discard(msg.ref)
            out.send.append(ObjectDeleted(ref=msg.ref, **_meta(msg)))
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
            out.send.append(GetObject(ref=msg.ref, **_meta(msg)))
            return
        shaped = shape(msg.ref.kind, live)
        try:
            result = apply_patch(shaped, orjson.loads(msg.patch))
        except (orjson.JSONDecodeError, PatchError):
            result = None
        if not isinstance(result, dict) or digest_like(msg.checksum, result) != msg.checksum:
            out.send.append(GetObject(ref=msg.ref, **_meta(msg)))
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
            return [ObjectDeleted(ref=ref, **_meta(cause))]
        shaped = shape(ref.kind, live)
        checksum = self._checksum(ref, live, shaped)
        return [PutObject(ref=ref, checksum=checksum, object=orjson.dumps(shaped), **_meta(cause))]

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

    # ------------------------------------------------------------ reconciliation

    def inventory_request(self, kind: Kind, live_objects: Iterable[dict[str, Any]]) -> Batch:
        """Asks a clustersync backend for its inventory of ``kind`` (a reconciliation batch
        without items), carrying our bucket digests so that it lists only the buckets that
        differ; the answer, possibly empty, is handled by :meth:`reconcile`."""
        return self.inventory_batch(kind, self.inventory_entries(kind, live_objects))

    def inventory_entries(
        self, kind: Kind, live_objects: Iterable[dict[str, Any] | Cached | Listed]
    ) -> Iterator[tuple[ObjectRef, str]]:
        """The (ref, checksum) of every synced object, one at a time, so that a driver can pause
        between objects of a large kind (hashing 100k pods takes seconds). A :class:`Listed`
        object whose entry holds its fast digest is not even unpacked."""
        for item in live_objects:
            if isinstance(item, Listed):
                facts = self._decisive(item)
                if facts is not None:
                    if not self._filtered(item, facts):
                        ref = ObjectRef(kind, sys.intern(item.namespace), item.name)
                        yield ref, self._recorded(ref, facts)
                    continue
                live = item.cached().live
            else:
                live = item.live if isinstance(item, Cached) else item
            if not is_filtered(live, self.rules):
                ref = ref_of(kind, live)
                known = self._known(ref, live)  # a restart with saved checksums: most objects
                if known is not None:
                    yield ref, known
                    continue
                try:
                    shaped = shape(kind, live)
                except ShapingError:
                    continue  # reported when the answer is reconciled
                yield ref, self._checksum(ref, live, shaped)

    def inventory_needs_digests(self, kind: Kind) -> bool:
        """Whether an inventory request for ``kind`` should carry bucket digests: only once the
        session holds checksums of the kind by the link's algorithm (a reconnect, a periodic
        resync, a restart with saved checksums), when they cost little and the answer lists
        only what differs. Before that (a first sync) the digests would cost a pass that
        decompresses, parses, shapes and hashes every object before the request can leave, and
        the reconciliation would decompress, parse and shape each one again: a request without
        digests gets the whole inventory (nothing, for a new cluster) and the reconciliation
        alone does the work, once per object. The price is a full listing on the wire when the
        backend already holds a cluster this agent has not hashed yet (no saved checksums)."""
        return self.synced.holds_checksum(kind, lambda c: is_fast(c) == self.fast_digests)

    def inventory_batch(self, kind: Kind, entries: Iterable[tuple[ObjectRef, str]] | None) -> Batch:
        """The inventory request for ``kind``: with the bucket digests of ``entries``, or,
        with None, without digests (the backend answers with its whole inventory)."""
        return Batch(
            kind=kind,
            batch_type=BATCH_RECONCILIATION,
            digests=() if entries is None else bucket_digests(entries),
            **_meta(None),
        )

    def reconcile(
        self, batch: Batch, live_objects: Iterable[dict[str, Any] | Cached | Listed]
    ) -> Outcome:
        """Repair every difference between the backend's inventory of a kind and the cluster."""
        out = Outcome()
        for step in self.reconcile_steps(batch, live_objects):
            out.send.extend(step.send)
            out.errors.extend(step.errors)
        return out

    def reconcile_steps(
        self,
        batch: Batch,
        live_objects: Iterable[dict[str, Any] | Cached | Listed],
        *,
        step: int = 100,
        still_absent: Callable[[ObjectRef], bool] = lambda ref: True,
        passes: ReconcilePasses | None = None,
        final: bool = True,
    ) -> Iterator[Outcome]:
        """:meth:`reconcile` in pieces of at most ``step`` objects, so that a driver can send
        each piece (and let other work run) before computing the next: the repairs of a large
        kind never all wait in memory at once. ``still_absent`` is asked before deleting an
        object the backend holds and the walk did not meet (it may have appeared meanwhile).

        The walk may be split into passes over successive parts of the cluster (a list still
        arriving): each call with the same ``passes`` continues the same reconciliation, and
        only a ``final`` pass, which must come once the cluster's list is complete, deletes
        what no pass met. Without ``passes``, one call is the whole reconciliation.

        A :class:`Listed` object whose entry holds its shaped JSON and fast digest (with fast
        digests on this link) is decided on its entry's facts: not parsed, shaped nor hashed
        again, and sent as the JSON the entry holds; any other is parsed and handled as before.
        """
        out = Outcome()
        if batch.batch_type != BATCH_RECONCILIATION:
            out.errors.append(
                ("bad_batch", f"batch type {batch.batch_type!r} is not reconciliation")
            )
            yield out
            return
        if batch.kind not in self.strategies:
            # Never turn "not configured here" into mass deletes (a kubescape pitfall).
            out.errors.append(("unknown_kind", f"reconciliation for unsynced kind {batch.kind}"))
            yield out
            return
        passes = passes if passes is not None else ReconcilePasses()
        backend = passes.backend_of(batch)
        # An answer to a digest request lists only the buckets that differ; the others match.
        covered = None if batch.covered is None else frozenset(batch.covered)
        synced = passes.synced
        meta = _meta(batch)  # every reply to the batch has the same depth and id
        walked = 0
        for item in live_objects:
            walked += 1
            if walked % step == 0:
                yield out
                out = Outcome()
            if isinstance(item, Listed):
                facts = self._decisive(item)
                if facts is not None:
                    whole = self._reconcile_listed(
                        batch, item, facts, backend=backend, covered=covered, synced=synced,
                        meta=meta,
                    )
                    if whole is not None:
                        out.send.append(whole)
                    continue
                live, entry = item.reader.parse(item.entry), item.entry
            elif isinstance(item, Cached):
                live, entry = item.live, item.entry
            else:
                live, entry = item, None
            if is_filtered(live, self.rules):
                continue  # and if the backend holds it, it is deleted there below
            ref = ref_of(batch.kind, live)
            if covered is not None and bucket_of(ref) not in covered:
                continue
            synced.add(ref)
            known = self._known(ref, live)
            if known is not None and backend.get(ref) == known:
                continue  # the backend holds this version: no need to shape it
            try:
                shaped = shape(batch.kind, live)
            except ShapingError as exc:
                out.errors.append(("unshapeable", f"{ref}: not sent, as kubescape: {exc}"))
                continue
            checksum = self._checksum(ref, live, shaped)
            if backend.get(ref) != checksum:
                # The backend lacks it, or holds something our shadow does not describe: send
                # it whole (kubescape announces a checksum first; we already know the answer).
                self.shadows.discard(ref)
                self._sent.pop(ref, None)
                reply = self._put_or_patch(
                    ref, shaped, checksum, batch, skip_noop=False, entry=entry
                )
                if reply is not None:
                    out.send.append(reply)
        if not final:
            yield out
            return
        for ref in sorted(backend.keys() - synced):
            if still_absent(ref):
                self.shadows.discard(ref)
                out.send.append(ObjectDeleted(ref=ref, **_meta(batch)))
        yield out

    def _decisive(self, item: Listed) -> Facts | None:
        """The entry's facts if they suffice to reconcile the object without reading it."""
        facts = item.reader.facts(item.entry)
        if self.fast_digests and facts.shaped and facts.digest is not None:
            return facts
        return None

    def _filtered(self, item: Listed, facts: Facts) -> bool:
        """:func:`is_filtered` from the key and the facts (the namespace is the key's)."""
        namespace = item.namespace
        if namespace and namespace == self.rules.operator_namespace:
            return False
        return not self.rules.allows(namespace) or facts.controlled

    def _recorded(self, ref: ObjectRef, facts: Facts) -> str:
        """The entry's digest, held from now on for its object version (as :meth:`_checksum`)."""
        assert facts.digest is not None
        if self._known_version(ref, facts.version) != facts.digest:
            self._checksums[ref] = (facts.version, facts.digest)
        return facts.digest

    def _known_version(self, ref: ObjectRef, version: str) -> str | None:
        cached = self._checksums.get(ref)
        return cached[1] if cached is not None and cached[0] == version else None

    def _reconcile_listed(
        self,
        batch: Batch,
        item: Listed,
        facts: Facts,
        *,
        backend: Mapping[ObjectRef, str],
        covered: frozenset[int] | None,
        synced: set[ObjectRef],
        meta: dict[str, Any],
    ) -> PutObject | None:
        """One step of :meth:`reconcile_steps` for an object decided on its entry's facts: what
        to send of it, if anything."""
        if self._filtered(item, facts):
            return None
        ref = ObjectRef(batch.kind, sys.intern(item.namespace), item.name)
        if covered is not None and bucket_of(ref) not in covered:
            return None
        synced.add(ref)
        checksum = facts.digest
        assert checksum is not None  # a decisive entry holds it
        self.synced.hold(ref, facts.version, checksum)  # as _recorded, in one lookup
        if backend.get(ref) == checksum:
            return None
        body = item.reader.shaped_json(item.entry)
        assert body is not None  # a shaped entry holds it
        return self._put_whole(ref, body, checksum, meta, item.entry)

    def _put_whole(
        self, ref: ObjectRef, body: bytes, checksum: str, meta: dict[str, Any], entry: bytes
    ) -> PutObject:
        """Send ``body``, the shaped JSON of a cache ``entry``, whole (the backend lacks it),
        with ``meta``, the depth and id of a reply to the message that asked (see _meta)."""
        if self.strategies.get(ref.kind) is not Strategy.PATCH:
            self.synced.sent_whole(ref, sent=checksum, shadow=None)
        elif self.synced.shares(ref.kind):
            self.synced.sent_whole(ref, sent=None, shadow=entry, shared=True)
        else:
            self.synced.sent_whole(ref, sent=None, shadow=body)
        return PutObject(ref=ref, checksum=checksum, object=body, **meta)


def _meta(cause: Message | None) -> dict[str, Any]:
    meta = reply_meta(cause)
    return {"depth": meta.depth, "msg_id": meta.msg_id}
