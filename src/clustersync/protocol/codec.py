"""The kubescape websocket encoding of messages (reference section 2.3).

One JSON document per binary frame. Keys are Go's PascalCase field names; Go decoders match keys
case-insensitively, so :func:`decode` does too. ``Event`` is an integer. ``Object``, ``Patch`` and
``BaseObject`` are strings holding JSON text. ``Kind`` is ``{Group, Version, Resource}``.
"""

from __future__ import annotations

import functools
from typing import Any

import orjson

from clustersync.model import Kind, KindError, ObjectRef
from clustersync.protocol.delivery import DELIVERY_ID_KEY, MAX_ACK_IDS, read_delivery_id
from clustersync.protocol.fields import (
    DecodeError,
    TooDeepError,
    folded,
    json_text,
    read_int,
    read_str,
)
from clustersync.protocol.inventory import BUCKETS
from clustersync.protocol.messages import (
    MAX_DEPTH,
    Ack,
    AgentInfo,
    Batch,
    Event,
    Frame,
    GetObject,
    KindProgress,
    NewChecksum,
    ObjectDeleted,
    ObjectMessage,
    PatchObject,
    Ping,
    PutObject,
    SyncedKind,
    SyncProgress,
    WriteOutcome,
    WriteStatus,
)

__all__ = [
    "DecodeError",
    "TooDeepError",
    "decode",
    "decode_delivery",
    "encode",
    "from_wire",
    "to_wire",
]

# ---------------------------------------------------------------- encoding


def _kind(kind: Kind) -> dict[str, Any]:
    return {
        "Group": kind.group,
        "Version": kind.version,
        "Resource": kind.resource,
        "AdditionalProperties": None,
    }


def _text(payload: bytes | None) -> str:
    return payload.decode() if payload else ""


def to_wire(msg: Frame) -> dict[str, Any]:
    """The message as a JSON-ready dict in kubescape's field naming."""
    out: dict[str, Any] = {"Depth": msg.depth, "Event": int(msg.event), "MsgId": msg.msg_id}
    if isinstance(msg, Ping):
        out["Kind"] = None
        return out
    if isinstance(msg, Ack):
        out["Ids"] = list(msg.ids)
        return out
    if isinstance(msg, AgentInfo):
        out["Kinds"] = [{**_kind(k.kind), "Namespaced": k.namespaced} for k in msg.kinds]
        return out
    if isinstance(msg, SyncProgress):
        out["Kinds"] = [
            {
                **_kind(k.kind),
                "Listed": k.listed,
                "Sent": k.sent,
                "Acknowledged": k.acknowledged,
                "Done": k.done,
            }
            for k in msg.kinds
        ]
        return out
    if isinstance(msg, Batch):
        kind = out["Kind"] = _kind(msg.kind)
        out["BatchType"] = msg.batch_type
        out["Items"] = {
            "NewChecksum": [to_wire(m) for m in msg.new_checksum],
            "ObjectDeleted": [to_wire(m) for m in msg.object_deleted],
            "GetObject": [to_wire(m) for m in msg.get_object],
            "PatchObject": [to_wire(m) for m in msg.patch_object],
            "PutObject": [_put_item(m, kind) for m in msg.put_object],
        }
        if msg.digests:
            out["Digests"] = list(msg.digests)
        if msg.covered is not None:
            out["Covered"] = list(msg.covered)
        return out
    out["Kind"] = _kind(msg.ref.kind)
    out["Name"] = msg.ref.name
    out["Namespace"] = msg.ref.namespace
    if isinstance(msg, NewChecksum):
        out["Checksum"] = msg.checksum
        out["ResourceVersion"] = msg.resource_version
    elif isinstance(msg, ObjectDeleted):
        out["ResourceVersion"] = msg.resource_version
    elif isinstance(msg, WriteOutcome):
        out["Status"] = msg.status.value
        out["Reason"] = msg.reason
    elif isinstance(msg, GetObject):
        out["BaseObject"] = _text(msg.base_object)
    elif isinstance(msg, PatchObject):
        out["Checksum"] = msg.checksum
        out["Patch"] = _text(msg.patch)
    else:
        out["Checksum"] = msg.checksum
        out["Object"] = _text(msg.object)
    return out


def _put_item(msg: PutObject, kind: dict[str, Any]) -> dict[str, Any]:
    """A put of a batch as :func:`to_wire` words it (the same keys in the same order), with
    the batch's kind: a first sync sends every object this way, and the generic path cost
    about a tenth of the agent's frame encoding."""
    return {
        "Depth": msg.depth,
        "Event": _PUT_EVENT,
        "MsgId": msg.msg_id,
        "Kind": kind,
        "Name": msg.ref.name,
        "Namespace": msg.ref.namespace,
        "Checksum": msg.checksum,
        "Object": _text(msg.object),
    }


_PUT_EVENT = int(Event.PUT_OBJECT)


def encode(msg: Frame, delivery_id: int | None = None) -> bytes:
    """The frame; ``delivery_id`` (negotiated peers only) is added as ``DeliveryId``."""
    doc = to_wire(msg)
    if delivery_id is not None:
        doc[DELIVERY_ID_KEY] = delivery_id
    return orjson.dumps(doc)


# ---------------------------------------------------------------- decoding


def _json_text(fields: dict[str, Any], key: str, required: bool, check: bool) -> bytes | None:
    text = read_str(fields, key)
    if not text:
        if required:
            raise DecodeError(f"{key} is missing or empty")
        return None
    return json_text(text.encode(), key) if check else text.encode()


@functools.lru_cache(maxsize=1024)
def _kind_of(group: str, version: str, resource: str) -> Kind:
    # Every item of a batch names its kind again: validated once, not once per object.
    return Kind(group, version, resource)


def _decode_kind(value: Any) -> Kind:
    fields = folded(value, "Kind")
    try:
        return _kind_of(
            read_str(fields, "Group"), read_str(fields, "Version"), read_str(fields, "Resource")
        )
    except KindError as exc:
        raise DecodeError(str(exc), "bad_kind") from None


def _decode_object_message(fields: dict[str, Any], event: Event, check: bool) -> ObjectMessage:
    if fields.get("kind") is None:
        raise DecodeError(f"{event.name} without Kind")
    name = read_str(fields, "Name")
    if not name:
        raise DecodeError(f"{event.name} without Name")
    ref = ObjectRef(_decode_kind(fields["kind"]), read_str(fields, "Namespace"), name)
    depth = read_int(fields, "Depth", 0)
    msg_id = read_str(fields, "MsgId")
    if event is Event.NEW_CHECKSUM:
        return NewChecksum(
            ref=ref,
            checksum=read_str(fields, "Checksum"),
            resource_version=read_int(fields, "ResourceVersion", 0),
            depth=depth,
            msg_id=msg_id,
        )
    if event is Event.OBJECT_DELETED:
        return ObjectDeleted(
            ref=ref,
            resource_version=read_int(fields, "ResourceVersion", 0),
            depth=depth,
            msg_id=msg_id,
        )
    if event is Event.GET_OBJECT:
        base = _json_text(fields, "BaseObject", required=False, check=check)
        return GetObject(ref=ref, base_object=base, depth=depth, msg_id=msg_id)
    if event is Event.PATCH_OBJECT:
        patch = _json_text(fields, "Patch", required=True, check=check)
        assert patch is not None
        return PatchObject(
            ref=ref, checksum=read_str(fields, "Checksum"), patch=patch, depth=depth, msg_id=msg_id
        )
    obj = _json_text(fields, "Object", required=True, check=check)
    assert obj is not None
    return PutObject(
        ref=ref, checksum=read_str(fields, "Checksum"), object=obj, depth=depth, msg_id=msg_id
    )


_OBJECT_EVENTS = {
    Event.NEW_CHECKSUM: NewChecksum,
    Event.OBJECT_DELETED: ObjectDeleted,
    Event.GET_OBJECT: GetObject,
    Event.PATCH_OBJECT: PatchObject,
    Event.PUT_OBJECT: PutObject,
}
_ITEM_KEYS = {
    "newchecksum": Event.NEW_CHECKSUM,
    "objectdeleted": Event.OBJECT_DELETED,
    "getobject": Event.GET_OBJECT,
    "patchobject": Event.PATCH_OBJECT,
    "putobject": Event.PUT_OBJECT,
}


# Batch item keys as kubescape's Go encoder (and ours) spells them. An item of puts or patches
# that uses only these, with the types Go writes, is read as it is (:func:`_quick_item`); any
# other item goes through the case-insensitive reading, which also words every refusal.
_GO_ITEM_KEYS = frozenset(
    {
        "Kind",
        "Name",
        "Namespace",
        "Depth",
        "MsgId",
        "Checksum",
        "Object",
        "Patch",
        "BaseObject",
        "ResourceVersion",
        "Event",
    }
)
_GO_KIND_KEYS = frozenset({"Group", "Version", "Resource", "AdditionalProperties"})
_PAYLOAD_KEYS = {Event.PUT_OBJECT: "Object", Event.PATCH_OBJECT: "Patch"}


def _quick_item(item: Any, event: Event, check: bool) -> ObjectMessage | None:
    """A put or patch batch item read without folding its keys (folding and reading field by
    field cost more than the rest of a relayed object); None when the item is not in Go's own
    spelling and types, for the case-insensitive reading to take or refuse."""
    payload_key = _PAYLOAD_KEYS.get(event)
    if payload_key is None or type(item) is not dict or not item.keys() <= _GO_ITEM_KEYS:
        return None
    get = item.get
    kind_doc = get("Kind")
    name = get("Name")
    namespace = get("Namespace", "")
    depth = get("Depth", 0)
    msg_id = get("MsgId", "")
    checksum = get("Checksum", "")
    payload = get(payload_key)
    if (
        type(kind_doc) is not dict
        or type(name) is not str
        or not name
        or type(namespace) is not str
        or type(depth) is not int
        or type(msg_id) is not str
        or type(checksum) is not str
        or type(payload) is not str
        or not payload
    ):
        return None
    try:
        kind = _quick_kind(tuple(kind_doc.items()))
    except (TypeError, _NotGoKindError, KindError):  # TypeError: unhashable, so not a string
        return None
    ref = ObjectRef(kind, namespace, name)
    data = json_text(payload.encode(), payload_key) if check else payload.encode()
    if event is Event.PUT_OBJECT:
        return PutObject(ref=ref, checksum=checksum, object=data, depth=depth, msg_id=msg_id)
    return PatchObject(ref=ref, checksum=checksum, patch=data, depth=depth, msg_id=msg_id)


class _NotGoKindError(Exception):
    """A batch item's kind not in Go's spelling and types: the full reading takes it."""


@functools.lru_cache(maxsize=1024)
def _quick_kind(pairs: tuple[tuple[str, Any], ...]) -> Kind:
    """The kind of a batch item in Go's spelling, from its pairs as they came. Every item of a
    batch repeats its kind: looking its pairs up once per item costs less than reading and
    checking three fields each time. Anything else raises, so that only valid kinds (short
    names) are cached, never an agent's long or changing junk."""
    doc = dict(pairs)
    if not doc.keys() <= _GO_KIND_KEYS or doc.get("AdditionalProperties") is not None:
        raise _NotGoKindError
    group, version, resource = (doc.get(k, "") for k in ("Group", "Version", "Resource"))
    if type(group) is not str or type(version) is not str or type(resource) is not str:
        raise _NotGoKindError
    return _kind_of(group, version, resource)


def _decode_items(value: Any, event: Event, check: bool) -> tuple[Any, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise DecodeError(f"batch items of {event.name} must be a list")
    return tuple(
        _quick_item(item, event, check)
        or _decode_object_message(folded(item, "batch item"), event, check)
        for item in value
    )


def _decode_batch(fields: dict[str, Any], check: bool) -> Batch:
    if fields.get("kind") is None:
        raise DecodeError("batch without Kind")
    items = folded(fields.get("items"), "batch Items")
    decoded = {
        key: _decode_items(items.get(key), event, check) for key, event in _ITEM_KEYS.items()
    }
    return Batch(
        kind=_decode_kind(fields["kind"]),
        batch_type=read_str(fields, "BatchType"),
        new_checksum=decoded["newchecksum"],
        object_deleted=decoded["objectdeleted"],
        get_object=decoded["getobject"],
        patch_object=decoded["patchobject"],
        put_object=decoded["putobject"],
        depth=read_int(fields, "Depth", 0),
        msg_id=read_str(fields, "MsgId"),
        digests=_digests(fields.get("digests")),
        covered=_covered(fields.get("covered")),
    )


def _digests(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > BUCKETS:
        raise DecodeError(f"Digests must be a list of at most {BUCKETS} strings")
    if not all(isinstance(d, str) and len(d) <= 64 for d in value):
        raise DecodeError("Digests must hold short strings")
    return tuple(value)


def _covered(value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(b, int) and not isinstance(b, bool) and 0 <= b < BUCKETS for b in value
    ):
        raise DecodeError(f"Covered must be a list of bucket numbers below {BUCKETS}")
    return tuple(value)


def _ack_ids(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > MAX_ACK_IDS:
        raise DecodeError(f"Ack needs Ids, a list of at most {MAX_ACK_IDS} delivery ids")
    if not all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in value):
        raise DecodeError("Ack Ids must be positive integers")
    return tuple(value)


MAX_AGENT_KINDS = 10_000
MAX_REASON = 8192  # characters; agents cut longer API server messages before sending


def _decode_agent_info(fields: dict[str, Any]) -> AgentInfo:
    value = fields.get("kinds")
    if not isinstance(value, list) or len(value) > MAX_AGENT_KINDS:
        raise DecodeError(f"Kinds must be a list of at most {MAX_AGENT_KINDS} kinds")
    kinds = []
    for item in value:
        namespaced = folded(item, "Kinds item").get("namespaced")
        if namespaced is not None and not isinstance(namespaced, bool):
            raise DecodeError(f"Namespaced must be true, false or null, got {namespaced!r}")
        kinds.append(SyncedKind(_decode_kind(item), namespaced))
    return AgentInfo(
        kinds=tuple(kinds), depth=read_int(fields, "Depth", 0), msg_id=read_str(fields, "MsgId")
    )


def _count(item: dict[str, Any], name: str) -> int:
    value = item.get(name.lower(), 0)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**53:
        raise DecodeError(f"{name} must be a whole number of objects, got {value!r}")
    return value


def _decode_sync_progress(fields: dict[str, Any]) -> SyncProgress:
    value = fields.get("kinds")
    if not isinstance(value, list) or len(value) > MAX_AGENT_KINDS:
        raise DecodeError(f"Kinds must be a list of at most {MAX_AGENT_KINDS} kinds")
    kinds = []
    for raw in value:
        item = folded(raw, "Kinds item")
        done = item.get("done", False)
        if not isinstance(done, bool):
            raise DecodeError(f"Done must be true or false, got {done!r}")
        listed, sent, acked = (_count(item, n) for n in ("Listed", "Sent", "Acknowledged"))
        kinds.append(KindProgress(_decode_kind(raw), listed, sent, acked, done))
    return SyncProgress(
        kinds=tuple(kinds), depth=read_int(fields, "Depth", 0), msg_id=read_str(fields, "MsgId")
    )


def _decode_write_outcome(fields: dict[str, Any]) -> WriteOutcome:
    if fields.get("kind") is None or not read_str(fields, "Name"):
        raise DecodeError("WRITE_OUTCOME without Kind and Name")
    ref = ObjectRef(
        _decode_kind(fields["kind"]), read_str(fields, "Namespace"), read_str(fields, "Name")
    )
    text = read_str(fields, "Status")
    try:
        status = WriteStatus(text)
    except ValueError:
        raise DecodeError(f"unknown write status {text!r}") from None
    if status is WriteStatus.PENDING:
        raise DecodeError("a write outcome cannot be pending")
    reason = read_str(fields, "Reason")
    if len(reason) > MAX_REASON:
        raise DecodeError(f"Reason longer than {MAX_REASON} characters")
    msg_id = read_str(fields, "MsgId")
    if not msg_id:
        raise DecodeError("WRITE_OUTCOME without MsgId (the write's id)")
    depth = read_int(fields, "Depth", 0)
    return WriteOutcome(ref=ref, status=status, reason=reason, depth=depth, msg_id=msg_id)


def from_wire(doc: Any, *, check_payloads: bool = True) -> Frame:
    """Decode an already-parsed JSON document; raises :class:`DecodeError` on anything invalid.

    With ``check_payloads=False`` the JSON text in ``Object``, ``Patch`` and ``BaseObject`` is
    taken as it is, not parsed: for a relay that only forwards it, and for a reader that parses
    it anyway and refuses a bad one by itself (one object, not the whole batch). Parsing each
    object only to throw the result away was a quarter of a server's time on an initial sync."""
    fields = folded(doc, "message")
    if "event" not in fields:
        raise DecodeError("message without Event")
    code = read_int(fields, "Event", None)
    try:
        event = Event(code)
    except ValueError:
        raise DecodeError(f"unknown event code {code}", "unknown_event") from None
    depth = read_int(fields, "Depth", 0)
    if depth < 0:
        raise DecodeError(f"negative depth {depth}")
    if depth > MAX_DEPTH:
        raise TooDeepError(depth)
    if event is Event.PING:
        return Ping(depth=depth, msg_id=read_str(fields, "MsgId"))
    if event is Event.ACK:
        return Ack(ids=_ack_ids(fields.get("ids")))
    if event is Event.BATCH:
        return _decode_batch(fields, check_payloads)
    if event is Event.AGENT_INFO:
        return _decode_agent_info(fields)
    if event is Event.WRITE_OUTCOME:
        return _decode_write_outcome(fields)
    if event is Event.SYNC_PROGRESS:
        return _decode_sync_progress(fields)
    if event in _OBJECT_EVENTS:
        return _decode_object_message(fields, event, check_payloads)
    raise DecodeError(f"deprecated event {event.name} is not accepted", "unknown_event")


def decode(frame: bytes | str) -> Frame:
    try:
        doc = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"frame is not JSON: {exc}") from None
    return from_wire(doc)


def decode_delivery(
    frame: bytes | str, *, check_payloads: bool = True
) -> tuple[Frame | DecodeError, int | None]:
    """The message (or why it is not one) and its delivery id, read even from a frame that does
    not decode, so that the agent can acknowledge what it rejects (``check_payloads``: see
    :func:`from_wire`)."""
    try:
        doc = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        return DecodeError(f"frame is not JSON: {exc}"), None
    delivery_id = read_delivery_id(doc)
    try:
        return from_wire(doc, check_payloads=check_payloads), delivery_id
    except DecodeError as exc:
        return exc, delivery_id
