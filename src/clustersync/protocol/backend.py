"""The backend's side of the protocol, without I/O.

The ingester looks up its stored copy of the object a message is about, asks this module what to
do, and carries out the answer: rows to write and messages to send back to the agent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from clustersync.model import Kind, ObjectRef
from clustersync.protocol import gojson
from clustersync.protocol.checksum import CHECKSUM_ANNOTATION, canonical_checksum
from clustersync.protocol.digest import digest_like
from clustersync.protocol.gojson import GoJSONError
from clustersync.protocol.inventory import bucket_digests, bucket_of, differing_buckets
from clustersync.protocol.mergepatch import PatchError, apply_patch
from clustersync.protocol.messages import (
    BATCH_RECONCILIATION,
    MAX_DEPTH,
    Batch,
    GetObject,
    Message,
    NewChecksum,
    ObjectDeleted,
    ObjectMessage,
    PatchObject,
    Ping,
    PutObject,
    ReplyMeta,
    reply_meta,
)


@dataclass(frozen=True, slots=True)
class StoredCopy:
    """What the backend holds of one object."""

    checksum: str
    object: bytes


@dataclass(frozen=True, slots=True)
class Upsert:
    ref: ObjectRef
    object: bytes
    checksum: str
    uid: str
    resource_version: str


@dataclass(frozen=True, slots=True)
class UpsertText:
    """An object to store as the agent sent it, not parsed here: the store reads its uid and
    resourceVersion and refuses it if it is not a JSON object (see :func:`decide_all`)."""

    ref: ObjectRef
    object: bytes
    checksum: str


@dataclass(frozen=True, slots=True)
class Remove:
    ref: ObjectRef


RowChange = Upsert | UpsertText | Remove


@dataclass(slots=True)
class Decision:
    change: RowChange | None = None
    send: list[Message] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)


def identity_of(obj: dict[str, Any]) -> tuple[str, str]:
    """The object's uid and resourceVersion as the store keeps them: the strings in
    ``metadata``, "" for anything else (the PostgreSQL store reads them the same way in SQL)."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return "", ""
    uid, version = meta.get("uid"), meta.get("resourceVersion")
    return (uid if isinstance(uid, str) else "", version if isinstance(version, str) else "")


def upsert_of(ref: ObjectRef, obj: Any, body: bytes, checksum: str) -> Upsert:
    uid, version = identity_of(obj) if isinstance(obj, dict) else ("", "")
    return Upsert(ref, body, checksum or canonical_checksum(obj), uid, version)


def refs_to_look_up(msg: Message) -> list[ObjectRef]:
    """The objects whose stored copies :func:`decide_all` needs for ``msg``: those of checksums,
    patches and requests. A put or a delete is decided without one, so a batch of puts (an
    agent's initial sync) needs no read at all."""
    if isinstance(msg, Ping):
        return []
    items = msg.unrolled() if isinstance(msg, Batch) else (msg,)
    return [item.ref for item in items if not isinstance(item, PutObject | ObjectDeleted)]


def decide(
    msg: ObjectMessage, stored: StoredCopy | None, *, store_parses: bool = False
) -> Decision:
    """The backend's answer to one object message from an agent (``store_parses``: see
    :func:`decide_all`)."""
    out = Decision()
    if isinstance(msg, PutObject):  # first: an initial sync is all puts
        _accept_put(msg, out, store_parses)
    elif isinstance(msg, NewChecksum):
        if stored is None or stored.checksum != msg.checksum:
            meta = reply_meta(msg)
            out.send.append(GetObject(ref=msg.ref, depth=meta.depth, msg_id=meta.msg_id))
    elif isinstance(msg, PatchObject):
        _accept_patch(msg, stored, out)
    elif isinstance(msg, ObjectDeleted):
        out.change = Remove(msg.ref)
    elif stored is not None:  # GetObject: the agent lacks or doubts the object
        meta = reply_meta(msg)
        out.send.append(
            PutObject(
                ref=msg.ref,
                checksum=stored.checksum,
                object=stored.object,
                depth=meta.depth,
                msg_id=meta.msg_id,
            )
        )
    else:
        out.errors.append(("not_found", f"{msg.ref}: agent asked for an object the backend lacks"))
    return out


def _accept_put(msg: PutObject, out: Decision, store_parses: bool) -> None:
    if store_parses and msg.checksum and msg.object[:1] == b"{":
        out.change = UpsertText(msg.ref, msg.object, msg.checksum)
        return
    # Otherwise, or when the store refused the message, the one parse of the object on the
    # ingester's path: the codec leaves payloads unparsed for it, so a bad object is refused
    # here, alone, and the rest of its batch goes on.
    try:
        obj = orjson.loads(msg.object)
    except orjson.JSONDecodeError as exc:
        out.errors.append(("bad_object", f"{msg.ref}: object is not valid JSON text: {exc}"))
        return
    if not isinstance(obj, dict):
        out.errors.append(("bad_object", f"{msg.ref}: object is not a JSON object"))
        return
    out.change = upsert_of(msg.ref, obj, msg.object, msg.checksum)


# The base the backend offers when it holds no copy to patch: an agent patches against it with the
# whole object (a kubescape agent with a shadow would otherwise patch against that shadow again,
# get the same answer, and loop to the depth limit); ours sends the object whole instead.
EMPTY_BASE = b"{}"


def _accept_patch(msg: PatchObject, stored: StoredCopy | None, out: Decision) -> None:
    meta = reply_meta(msg)
    base = stored.object if stored is not None else EMPTY_BASE
    try:
        patch = gojson.loads(msg.patch)
    except GoJSONError as exc:
        # Asking for a new base would not help: the agent's patch itself is broken.
        out.errors.append(("bad_patch", f"{msg.ref}: patch is not valid JSON text: {exc}"))
        return
    try:
        # Decoded as Go decodes, so that the result hashes as a Go peer's does.
        result = apply_patch(gojson.loads(base), patch)
    except (GoJSONError, PatchError):
        result = None
    if isinstance(result, dict):
        computed = digest_like(msg.checksum, result)  # whichever kind the agent's link uses
        if computed == msg.checksum or _unverifiable_whole_object(msg, result):
            out.change = upsert_of(msg.ref, result, orjson.dumps(result), msg.checksum or computed)
            return
    # Our copy is not the agent's base: send it as the new base for a second patch.
    out.send.append(GetObject(ref=msg.ref, base_object=base, depth=meta.depth, msg_id=meta.msg_id))


def _unverifiable_whole_object(msg: PatchObject, result: dict[str, Any]) -> bool:
    """A patch from kubescape's in-cluster HTTP endpoint (the node-agent posting objects): the
    whole object as the patch, with no checksum or the storage annotation's, which no patch
    result can be verified against. Refusing it would lose the object for good, as that adapter
    never answers a GetObject."""
    if not msg.checksum:
        return True
    meta = result.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    return isinstance(annotations, dict) and annotations.get(CHECKSUM_ANNOTATION) == msg.checksum


def decide_all(
    msg: Message, lookup: Mapping[ObjectRef, StoredCopy], *, store_parses: bool = False
) -> list[Decision]:
    """Decide on a message that may be a batch (kubescape agents may batch ordinary messages).

    With ``store_parses``, a put whose object opens with "{" and has a checksum is not parsed
    here (an :class:`UpsertText`): the store reads its uid and resourceVersion from the JSON it
    builds anyway and refuses the whole write if an object is not JSON. The caller then decides
    again without it, so that the bad object is refused alone (``bad_object``) and the rest of
    the message stored. Parsing every object here was about a third of the ingester's CPU."""
    if isinstance(msg, Ping):
        return []
    if isinstance(msg, Batch):
        if msg.batch_type == BATCH_RECONCILIATION:
            return [Decision(errors=[("bad_batch", "agents do not send reconciliation batches")])]
        if not lookup:  # a batch of puts: no stored copy to look up (nor refs to hash)
            return [
                _within_depth(decide(item, None, store_parses=store_parses))
                for item in msg.unrolled()
            ]
        return [
            _within_depth(decide(item, lookup.get(item.ref), store_parses=store_parses))
            for item in msg.unrolled()
        ]
    return [_within_depth(decide(msg, lookup.get(msg.ref), store_parses=store_parses))]


def _within_depth(decision: Decision) -> Decision:
    """Replies deeper than the limit are not sent: every peer would drop them (the chain has run
    too long), and a bus envelope that deep could not even be decoded."""
    if not decision.send:  # every put of an initial sync: nothing to filter
        return decision
    kept = [reply for reply in decision.send if reply.depth <= MAX_DEPTH]
    if len(kept) < len(decision.send):
        decision.errors.append(("too_deep", f"reply chain reached depth {MAX_DEPTH}: not sent"))
        decision.send = kept
    return decision


def bridge_hop(msg: Message) -> Message | None:
    """``msg`` as the server forwards it, between an agent's socket and the bus, either way:
    one level deeper, as kubescape's server makes it, or None once that passes the limit (the
    peer would drop it)."""
    if msg.depth >= MAX_DEPTH:
        return None
    return replace(msg, depth=msg.depth + 1)


def backend_write(msg: PutObject | ObjectDeleted) -> Decision:
    """A write authored by the backend (API, UI): store it and forward it to the agent."""
    out = Decision(send=[msg])
    if isinstance(msg, ObjectDeleted):
        out.change = Remove(msg.ref)
        return out
    try:
        obj = orjson.loads(msg.object)
    except orjson.JSONDecodeError:
        obj = None
    if not isinstance(obj, dict):
        return Decision(errors=[("bad_object", f"{msg.ref}: object is not a JSON object")])
    checksum = canonical_checksum(obj)
    # No resource version until the agent reports the cluster's: kubescape agents skip objects
    # whose live version equals the stored one in reconciliation, and a version copied into a
    # backend write would hide a write the cluster refused.
    out.change = replace(upsert_of(msg.ref, obj, msg.object, checksum), resource_version="")
    out.send = [
        PutObject(
            ref=msg.ref, checksum=checksum, object=msg.object, depth=msg.depth, msg_id=msg.msg_id
        )
    ]
    return out


InventoryEntry = tuple[ObjectRef, str] | tuple[ObjectRef, str, int]
"""What the backend holds of one object: ref, checksum and, where known, the object's resource
version as a number (kubescape's agent reconciles by it, see :func:`reconciliation_batches`)."""


def _held(entries: Iterable[InventoryEntry]) -> list[tuple[ObjectRef, str, int]]:
    return [(entry[0], entry[1], entry[2] if len(entry) > 2 else 0) for entry in entries]


def _inventory_batch(
    kind: Kind,
    entries: Iterable[tuple[ObjectRef, str, int]],
    meta: ReplyMeta,
    covered: tuple[int, ...] | None = None,
) -> Batch:
    items = tuple(
        NewChecksum(
            ref=ref,
            checksum=checksum,
            resource_version=version,
            depth=meta.depth,
            msg_id=meta.msg_id,
        )
        for ref, checksum, version in entries
    )
    return Batch(
        kind=kind,
        batch_type=BATCH_RECONCILIATION,
        new_checksum=items,
        covered=covered,
        depth=meta.depth,
        msg_id=meta.msg_id,
    )


def reconciliation_batches(
    inventory: Iterable[InventoryEntry], kinds: Iterable[Kind] = ()
) -> list[Batch]:
    """One reconciliation batch per kind from the backend's inventory of a cluster.

    Each item carries the stored resource version: kubescape's agent skips an object whose live
    resource version equals it and re-sends every other one whole, ignoring the checksum, so a
    0 there would make it re-send everything on every reconciliation. ``kinds`` adds empty
    batches for kinds the backend holds nothing of, so the agent announces its objects of those
    kinds too (our agent accepts empty inventories; kubescape's does not).
    """
    by_kind: dict[Kind, list[tuple[ObjectRef, str, int]]] = {kind: [] for kind in kinds}
    for entry in _held(inventory):
        by_kind.setdefault(entry[0].kind, []).append(entry)
    meta = reply_meta(None)
    return [_inventory_batch(kind, entries, meta) for kind, entries in sorted(by_kind.items())]


def inventory_answer(request: Batch, inventory: Iterable[InventoryEntry]) -> Batch:
    """The backend's inventory of the requested kind: whole, or, when the request carries bucket
    digests, only the buckets whose digests differ from ours (named in ``covered``)."""
    entries = [entry for entry in _held(inventory) if entry[0].kind == request.kind]
    covered: tuple[int, ...] | None = None
    if request.digests:
        ours = bucket_digests((ref, checksum) for ref, checksum, _ in entries)
        covered = differing_buckets(ours, request.digests)
        wanted = frozenset(covered)
        entries = [entry for entry in entries if bucket_of(entry[0]) in wanted]
    return _inventory_batch(request.kind, entries, reply_meta(request), covered)
