"""kubescape's Pulsar encoding of synchronizer messages (pure: no I/O).

kubescape's server publishes to ``persistent://<tenant>/<namespace>/synchronizer`` and its
ingester reads from there, so a bridge speaking this encoding can sit beside (or replace) either.
The encoding differs from the websocket one (:mod:`clustersync.protocol.codec`) in every detail:

* one JSON document per Pulsar message, keys in lowerCamel case, the event name in the ``event``
  message *property* rather than in the payload;
* ``kind`` is the string ``group/version/resource``; Go ``[]byte`` fields (object, patch, base
  object) are base64 strings, ``null`` when absent;
* PutObject keeps the full object under the key ``patch`` (kubescape's struct tag reuses it);
* reconciliation travels as ``ReconciliationRequest`` with ``kindToObject`` instead of a batch,
  "an agent connected" as ``ServerConnected`` (plus ``ConnectedClients`` describing the
  connection), and a Go server in ``sendBatch`` mode collects its periodic requests into one
  ``ReconciliationRequestBatch``;
* the payload's ``resourceVersion`` is always 0 on what a server produces; the forwarded
  message's value travels in the ``resourceVersion`` property.

Every message also carries properties (``timestamp``, ``event``, ``account``, ``cluster``, and for
object messages the kind, name, namespace and resourceVersion) so consumers can route and filter
without parsing the payload. Which Pulsar key a message gets is the bus layout's choice
(:data:`SERVER_PRODUCER_KEY` marks the server-to-backend direction in kubescape's layout);
:func:`message_key` is a per-object key for layouts that want per-object order.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from clustersync.model import Kind, KindError, ObjectRef
from clustersync.protocol.envelope import CONTROL_CONNECTED, CONTROL_RECONCILE, Envelope
from clustersync.protocol.fields import (
    DecodeError,
    TooDeepError,
    folded,
    json_text,
    read_bool,
    read_int,
    read_str,
)
from clustersync.protocol.messages import (
    BATCH_RECONCILIATION,
    MAX_DEPTH,
    Batch,
    GetObject,
    NewChecksum,
    ObjectDeleted,
    ObjectMessage,
    PatchObject,
    Ping,
    PutObject,
    new_msg_id,
)

__all__ = [
    "EVENT_CONNECTED_CLIENTS",
    "EVENT_DELETE",
    "EVENT_GET",
    "EVENT_PATCH",
    "EVENT_PUT",
    "EVENT_RECONCILIATION",
    "EVENT_RECONCILIATION_BATCH",
    "EVENT_SERVER_CONNECTED",
    "EVENT_VERIFY",
    "PROP_ACCOUNT",
    "PROP_CLUSTER",
    "PROP_EVENT",
    "PROP_GROUP",
    "PROP_NAME",
    "PROP_NAMESPACE",
    "PROP_RESOURCE",
    "PROP_RESOURCE_VERSION",
    "PROP_TIMESTAMP",
    "PROP_VERSION",
    "SERVER_PRODUCER_KEY",
    "ConnectedClient",
    "ConnectedClients",
    "PulsarMessage",
    "decode_connected_clients",
    "decode_pulsar",
    "decode_pulsar_all",
    "encode_connected_clients",
    "encode_pulsar",
    "encode_pulsar_all",
    "encode_reconciliation_request_batch",
    "format_timestamp",
    "message_key",
]

EVENT_GET = "GetObject"
EVENT_PATCH = "PatchObject"
EVENT_VERIFY = "VerifyObject"  # our NewChecksum
EVENT_DELETE = "DeleteObject"  # our ObjectDeleted
EVENT_PUT = "PutObject"
EVENT_SERVER_CONNECTED = "ServerConnected"
EVENT_RECONCILIATION = "ReconciliationRequest"
EVENT_CONNECTED_CLIENTS = "ConnectedClients"
EVENT_RECONCILIATION_BATCH = "ReconciliationRequestBatch"

SERVER_PRODUCER_KEY = "SynchronizerServerProducer"
"""The key kubescape's server puts on every message it produces; its readers skip messages with
this key, which is how one topic carries both directions."""

PROP_TIMESTAMP = "timestamp"
PROP_EVENT = "event"
PROP_ACCOUNT = "account"
PROP_CLUSTER = "cluster"
PROP_GROUP = "group"
PROP_VERSION = "version"
PROP_RESOURCE = "resource"
PROP_NAME = "name"
PROP_NAMESPACE = "namespace"
PROP_RESOURCE_VERSION = "resourceVersion"

_OBJECT_EVENTS = frozenset({EVENT_GET, EVENT_PATCH, EVENT_VERIFY, EVENT_DELETE, EVENT_PUT})
_KNOWN_EVENTS = _OBJECT_EVENTS | {
    EVENT_SERVER_CONNECTED,
    EVENT_RECONCILIATION,
    EVENT_CONNECTED_CLIENTS,
    EVENT_RECONCILIATION_BATCH,
}


@dataclass(frozen=True, slots=True)
class PulsarMessage:
    """What a producer sends: ``payload`` as the message content, plus properties and key."""

    payload: bytes
    properties: dict[str, str]
    key: str


@dataclass(frozen=True, slots=True)
class ConnectedClient:
    """One agent connection as a kubescape server reports it. Times are kept as the RFC 3339 text
    Go wrote (nanoseconds and zone offsets survive)."""

    account: str
    cluster: str
    synchronizer_version: str = ""
    helm_version: str = ""
    connection_id: str = ""
    connection_time: str = ""
    git_version: str = ""
    cloud_provider: str = ""


@dataclass(frozen=True, slots=True)
class ConnectedClients:
    """``ConnectedClients``: the connections one server replica holds (on connect: just the new
    one), stamped with ``keepalive``. Informational: it asks nothing of the backend."""

    server_name: str
    clients: tuple[ConnectedClient, ...]
    keepalive: str
    depth: int = 0
    msg_id: str = ""


# ---------------------------------------------------------------- encoding


def format_timestamp(moment: datetime) -> str:
    """Go's ``time.RFC3339Nano`` for a UTC time: fraction without trailing zeros, ``Z`` zone.
    Python keeps microseconds, so at most six fraction digits (Go parses any number)."""
    moment = moment.astimezone(UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += "." + f"{moment.microsecond:06d}".rstrip("0")
    return text + "Z"


def message_key(account: str, cluster: str, ref: ObjectRef | None = None) -> str:
    """Per-object key for object messages, per-cluster key otherwise: on a Key_Shared subscription
    messages with one key keep their order, and different objects spread over consumers."""
    if ref is None:
        return f"{account}/{cluster}"
    kind = ref.kind
    return (
        f"{account}/{cluster}/{kind.group}/{kind.version}/{kind.resource}"
        f"/{ref.namespace}/{ref.name}"
    )


def _b64(data: bytes | None) -> str | None:
    # Go marshals a nil []byte as null and a non-nil one as standard, padded base64.
    return None if data is None else base64.b64encode(data).decode("ascii")


def _properties(env: Envelope, event: str, now: datetime) -> dict[str, str]:
    props = {PROP_TIMESTAMP: format_timestamp(now), PROP_EVENT: event}
    # kubescape leaves out an empty identity rather than writing an empty property.
    if env.account:
        props[PROP_ACCOUNT] = env.account
    if env.cluster:
        props[PROP_CLUSTER] = env.cluster
    return props


def _encode_object(env: Envelope, msg: ObjectMessage, now: datetime) -> PulsarMessage:
    ref = msg.ref
    doc: dict[str, Any] = {}
    # Keys in the order of kubescape's Go structs, so payloads diff cleanly against theirs.
    if isinstance(msg, GetObject):
        event = EVENT_GET
        doc["baseObject"] = _b64(msg.base_object or None)  # an empty base is Go's nil
    elif isinstance(msg, NewChecksum):
        event = EVENT_VERIFY
        doc["checksum"] = msg.checksum
    elif isinstance(msg, ObjectDeleted):
        event = EVENT_DELETE
    elif isinstance(msg, PatchObject):
        event = EVENT_PATCH
        doc["checksum"] = msg.checksum
    else:
        event = EVENT_PUT
        doc["checksum"] = msg.checksum  # not in kubescape's struct; Go ignores unknown keys
    # Go's server never copies the resource version into the payload, only into a property.
    resource_version = msg.resource_version if isinstance(msg, NewChecksum | ObjectDeleted) else 0
    doc.update(
        cluster=env.cluster,
        account=env.account,
        depth=msg.depth,
        kind=str(ref.kind),
        msgId=msg.msg_id,
        name=ref.name,
        namespace=ref.namespace,
    )
    if isinstance(msg, PatchObject):
        doc["patch"] = _b64(msg.patch)
    elif isinstance(msg, PutObject):
        # sic: kubescape's PutObject tags Object as "patch"; an empty object is Go's nil.
        doc["patch"] = _b64(msg.object or None)
    doc["resourceVersion"] = 0

    props = _properties(env, event, now)
    props.update(
        {
            PROP_GROUP: ref.kind.group,
            PROP_VERSION: ref.kind.version,
            PROP_RESOURCE: ref.kind.resource,
            PROP_NAME: ref.name,
            PROP_NAMESPACE: ref.namespace,
            PROP_RESOURCE_VERSION: str(resource_version),
        }
    )
    return PulsarMessage(orjson.dumps(doc), props, message_key(env.account, env.cluster, ref))


def _encode_cluster_message(
    env: Envelope, event: str, doc: dict[str, Any], now: datetime
) -> PulsarMessage:
    head: dict[str, Any] = {"cluster": env.cluster, "account": env.account}
    return PulsarMessage(
        orjson.dumps(head | doc),
        _properties(env, event, now),
        message_key(env.account, env.cluster),
    )


def _encode_reconciliation(env: Envelope, batch: Batch, now: datetime) -> PulsarMessage:
    # A ReconciliationRequest lists checksums only, and its items have no depth or msgId of their
    # own (the decoder gives them the request's): refuse what would not come back unchanged
    # rather than lose it. Our backend's batches (reconciliation_batches) always fit.
    if batch.object_deleted or batch.get_object or batch.patch_object or batch.put_object:
        raise ValueError(
            "a reconciliation batch with items other than checksums has no Pulsar form"
        )
    items = []
    for item in batch.new_checksum:
        if item.ref.kind != batch.kind:
            raise ValueError(f"reconciliation batch of {batch.kind} holds an item of {item.ref}")
        if (item.depth, item.msg_id) != (batch.depth, batch.msg_id):
            raise ValueError(
                f"reconciliation item {item.ref} has its own depth or msgId, which a"
                " ReconciliationRequest cannot carry"
            )
        items.append(
            {
                "checksum": item.checksum,
                "resourceVersion": item.resource_version,
                "name": item.ref.name,
                "namespace": item.ref.namespace,
            }
        )
    doc = {
        "depth": batch.depth,
        "msgId": batch.msg_id,
        "serverInitiated": False,
        "kindToObject": {str(batch.kind): items},
    }
    return _encode_cluster_message(env, EVENT_RECONCILIATION, doc, now)


def _encode_control(env: Envelope, msg_id: str | None, now: datetime) -> PulsarMessage:
    # Controls carry no message of ours, hence no msgId: kubescape's server makes one up too.
    doc: dict[str, Any] = {"depth": 0, "msgId": msg_id if msg_id is not None else new_msg_id()}
    if env.control == CONTROL_CONNECTED:
        return _encode_cluster_message(env, EVENT_SERVER_CONNECTED, doc, now)
    if env.control == CONTROL_RECONCILE:
        doc.update(serverInitiated=True, kindToObject=None)  # Go's nil map
        return _encode_cluster_message(env, EVENT_RECONCILIATION, doc, now)
    raise ValueError(f"control {env.control!r} has no Pulsar form")


def _client_doc(client: ConnectedClient) -> dict[str, str]:
    return {
        "cluster": client.cluster,
        "account": client.account,
        "synchronizerVersion": client.synchronizer_version,
        "helmVersion": client.helm_version,
        "connectionId": client.connection_id,
        "connectionTime": client.connection_time,
        "gitVersion": client.git_version,
        "cloudProvider": client.cloud_provider,
    }


def encode_connected_clients(
    report: ConnectedClients, *, account: str = "", cluster: str = "", now: datetime | None = None
) -> PulsarMessage:
    """A ``ConnectedClients`` message. Go sends it with the connection's ``account``/``cluster``
    properties when one agent connects, and without them for the periodic keepalive."""
    now = now if now is not None else datetime.now(UTC)
    doc = {
        "serverName": report.server_name,
        "clients": [_client_doc(client) for client in report.clients],
        "keepalive": report.keepalive,
        "depth": report.depth,
        "msgId": report.msg_id,
    }
    props = _properties(Envelope(account, cluster), EVENT_CONNECTED_CLIENTS, now)
    return PulsarMessage(orjson.dumps(doc), props, message_key(account, cluster))


def encode_reconciliation_request_batch(
    requests: Iterable[Envelope], *, msg_id: str | None = None, now: datetime | None = None
) -> PulsarMessage:
    """A ``ReconciliationRequestBatch``: one server-initiated request per reconcile control, as a
    Go server in ``sendBatch`` mode sends its periodic requests. The requests carry no msgId of
    their own and the batch no identity properties (it spans clusters)."""
    now = now if now is not None else datetime.now(UTC)
    docs = []
    for env in requests:
        if env.control != CONTROL_RECONCILE or env.message is not None:
            raise ValueError("a ReconciliationRequestBatch holds reconcile controls only")
        docs.append(
            {
                "cluster": env.cluster,
                "account": env.account,
                "depth": 0,
                "msgId": "",
                "serverInitiated": True,
                "kindToObject": None,
            }
        )
    doc = {"depth": 0, "msgId": msg_id if msg_id is not None else new_msg_id(), "requests": docs}
    props = {PROP_TIMESTAMP: format_timestamp(now), PROP_EVENT: EVENT_RECONCILIATION_BATCH}
    return PulsarMessage(orjson.dumps(doc), props, "")


def encode_pulsar_all(
    env: Envelope, *, now: datetime | None = None, msg_id: str | None = None
) -> list[PulsarMessage]:
    """The Pulsar messages for ``env``, in the order to publish them.

    A reconciliation batch is one ReconciliationRequest; any other batch is unrolled into one
    message per item in kubescape's handling order (get, verify, delete, patch, put), since the
    Pulsar encoding has no batch. ``now`` stamps the ``timestamp`` property (default: the current
    time); ``msg_id`` is the msgId of a control's message (default: a fresh one). Raises
    ValueError for what the encoding cannot express (pings, an envelope with no content or with
    both a control and a message, a reconciliation batch holding anything but checksums of its
    kind that share its depth and msgId)."""
    now = now if now is not None else datetime.now(UTC)
    if env.control and env.message is not None:
        raise ValueError("an envelope with both a control and a message has no Pulsar form")
    if env.control:
        return [_encode_control(env, msg_id, now)]
    msg = env.message
    if msg is None:
        raise ValueError("an envelope with neither a control nor a message has no Pulsar form")
    if isinstance(msg, Ping):
        raise ValueError("pings are not sent over Pulsar")
    if isinstance(msg, Batch):
        if msg.batch_type == BATCH_RECONCILIATION:
            return [_encode_reconciliation(env, msg, now)]
        return [_encode_object(env, item, now) for item in msg.unrolled()]
    return [_encode_object(env, msg, now)]


def encode_pulsar(
    env: Envelope, *, now: datetime | None = None, msg_id: str | None = None
) -> PulsarMessage:
    """Like :func:`encode_pulsar_all` for envelopes that make exactly one Pulsar message."""
    out = encode_pulsar_all(env, now=now, msg_id=msg_id)
    if len(out) != 1:
        raise ValueError(f"envelope makes {len(out)} Pulsar messages; use encode_pulsar_all")
    return out[0]


# ---------------------------------------------------------------- decoding


def _fields(doc: Any) -> dict[str, Any]:
    return folded(doc, "Pulsar payload")


def _bytes(fields: Mapping[str, Any], key: str, *, required: bool) -> bytes | None:
    """A Go []byte field: base64 (Go's decoder skips line breaks), holding JSON text for us."""
    text = read_str(fields, key)
    if not text:
        if required:
            raise DecodeError(f"{key} is missing or empty")
        return None
    try:
        data = base64.b64decode(text.replace("\r", "").replace("\n", ""), validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError(f"{key} is not valid base64", "bad_base64") from None
    return json_text(data, key)


def _kind(text: str) -> Kind:
    try:
        return Kind.parse(text)
    except KindError as exc:
        raise DecodeError(str(exc), "bad_kind") from None


def _meta(fields: Mapping[str, Any]) -> tuple[int, str]:
    depth = read_int(fields, "depth")
    if depth < 0:
        raise DecodeError(f"negative depth {depth}")
    if depth > MAX_DEPTH:
        raise TooDeepError(depth)
    return depth, read_str(fields, "msgId")


def _identity(fields: Mapping[str, Any], properties: Mapping[str, str]) -> tuple[str, str]:
    """Account and cluster from the payload, or the properties when the payload omits them; the
    two must agree, since routing (properties) and handling (payload) must concern one cluster."""
    out = []
    for key in (PROP_ACCOUNT, PROP_CLUSTER):
        body, prop = read_str(fields, key), properties.get(key, "")
        if body and prop and body != prop:
            raise DecodeError(
                f"{key} {body!r} in the payload but {prop!r} in the properties",
                "identity_mismatch",
            )
        if not (body or prop):
            raise DecodeError(f"message without {key}", "no_identity")
        out.append(body or prop)
    return out[0], out[1]


def _resource_version(fields: Mapping[str, Any], properties: Mapping[str, str]) -> int:
    """The payload's resourceVersion, or the property's where the payload has 0: a Go server
    writes the forwarded value only into the property."""
    version = read_int(fields, "resourceVersion")
    text = properties.get(PROP_RESOURCE_VERSION, "")
    if version or not text:
        return version
    try:
        return int(text)
    except ValueError:
        raise DecodeError(f"resourceVersion property {text!r} is not an integer") from None


def _decode_object(
    fields: Mapping[str, Any], event: str, properties: Mapping[str, str]
) -> ObjectMessage:
    kind = _kind(read_str(fields, "kind"))
    name = read_str(fields, "name")
    if not name:
        raise DecodeError(f"{event} without name")
    ref = ObjectRef(kind, read_str(fields, "namespace"), name)
    depth, msg_id = _meta(fields)
    if event == EVENT_VERIFY:
        return NewChecksum(
            ref=ref,
            checksum=read_str(fields, "checksum"),
            resource_version=_resource_version(fields, properties),
            depth=depth,
            msg_id=msg_id,
        )
    if event == EVENT_DELETE:
        return ObjectDeleted(
            ref=ref,
            resource_version=_resource_version(fields, properties),
            depth=depth,
            msg_id=msg_id,
        )
    if event == EVENT_GET:
        base = _bytes(fields, "baseObject", required=False)
        return GetObject(ref=ref, base_object=base, depth=depth, msg_id=msg_id)
    body = _bytes(fields, "patch", required=True)
    assert body is not None
    checksum = read_str(fields, "checksum")
    if event == EVENT_PATCH:
        return PatchObject(ref=ref, checksum=checksum, patch=body, depth=depth, msg_id=msg_id)
    return PutObject(ref=ref, checksum=checksum, object=body, depth=depth, msg_id=msg_id)


def _decode_inventory(kind: Kind, value: Any, depth: int, msg_id: str) -> Batch:
    if value is None:
        value = []  # Go marshals a nil slice as null
    if not isinstance(value, list):
        raise DecodeError(f"kindToObject[{kind}] must be a list")
    items = []
    for raw in value:
        item = _fields(raw)
        name = read_str(item, "name")
        if not name:
            raise DecodeError(f"kindToObject[{kind}] item without name")
        # Items share the request's depth and msgId, as our reconciliation batches do.
        items.append(
            NewChecksum(
                ref=ObjectRef(kind, read_str(item, "namespace"), name),
                checksum=read_str(item, "checksum"),
                resource_version=read_int(item, "resourceVersion"),
                depth=depth,
                msg_id=msg_id,
            )
        )
    return Batch(
        kind=kind,
        batch_type=BATCH_RECONCILIATION,
        new_checksum=tuple(items),
        depth=depth,
        msg_id=msg_id,
    )


def _decode_reconciliation(fields: Mapping[str, Any]) -> Iterable[Batch | str]:
    depth, msg_id = _meta(fields)
    inventory = fields.get("kindtoobject")
    if inventory is None:
        # A server asking the backend for the cluster's inventory (Go sends a nil map); without
        # serverInitiated there is nothing to do, as for a Go server.
        return [CONTROL_RECONCILE] if read_bool(fields, "serverInitiated") else []
    # A listed inventory becomes one batch per kind whatever serverInitiated says, as a Go
    # server handles it.
    if not isinstance(inventory, dict):
        raise DecodeError("kindToObject must be a JSON object")
    return [
        _decode_inventory(_kind(str(text)), value, depth, msg_id)
        for text, value in inventory.items()
    ]


def decode_pulsar_all(payload: bytes, properties: Mapping[str, str]) -> list[Envelope]:
    """Every envelope in one Pulsar message: one, except that a ReconciliationRequest makes one
    reconciliation batch per listed kind (none for an empty backend-initiated request), a
    ReconciliationRequestBatch one per request, and ConnectedClients (a report) none.

    Raises :class:`DecodeError` with a metric label as ``reason``: ``malformed`` (not JSON, wrong
    types, missing fields), ``unknown_event``, ``bad_kind``, ``bad_base64``, ``no_identity``,
    ``identity_mismatch``, ``too_deep``."""
    event = properties.get(PROP_EVENT, "")
    if event not in _KNOWN_EVENTS:
        raise DecodeError(f"unknown Pulsar event {event!r}", "unknown_event")
    fields = _fields(_json(payload))
    if event == EVENT_CONNECTED_CLIENTS:
        _connected_clients(fields)  # validated, but it asks nothing of anyone
        return []
    if event == EVENT_RECONCILIATION_BATCH:
        return _decode_request_batch(fields)
    account, cluster = _identity(fields, properties)
    if event in _OBJECT_EVENTS:
        return [Envelope(account, cluster, _decode_object(fields, event, properties))]
    if event == EVENT_SERVER_CONNECTED:
        _meta(fields)  # validated for consistency, though a control keeps neither
        return [Envelope(account, cluster, control=CONTROL_CONNECTED)]
    return _reconciliation_envelopes(account, cluster, fields)


def _reconciliation_envelopes(
    account: str, cluster: str, fields: Mapping[str, Any]
) -> list[Envelope]:
    return [
        Envelope(account, cluster, control=item)
        if isinstance(item, str)
        else Envelope(account, cluster, item)
        for item in _decode_reconciliation(fields)
    ]


def _json(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"Pulsar payload is not JSON: {exc}") from None


def _decode_request_batch(fields: Mapping[str, Any]) -> list[Envelope]:
    """Each request of a ``ReconciliationRequestBatch``, with the identity its own payload names
    (the batch spans clusters and has no identity properties)."""
    _meta(fields)
    requests = fields.get("requests")
    if requests is None:
        return []
    if not isinstance(requests, list):
        raise DecodeError("requests must be a list")
    out: list[Envelope] = []
    for raw in requests:
        request = _fields(raw)
        account, cluster = _identity(request, {})
        out.extend(_reconciliation_envelopes(account, cluster, request))
    return out


def _connected_clients(fields: Mapping[str, Any]) -> ConnectedClients:
    depth, msg_id = _meta(fields)
    raw_clients = fields.get("clients")
    if raw_clients is None:
        raw_clients = []
    if not isinstance(raw_clients, list):
        raise DecodeError("clients must be a list")
    clients = []
    for raw in raw_clients:
        item = _fields(raw)
        clients.append(
            ConnectedClient(
                account=read_str(item, "account"),
                cluster=read_str(item, "cluster"),
                synchronizer_version=read_str(item, "synchronizerVersion"),
                helm_version=read_str(item, "helmVersion"),
                connection_id=read_str(item, "connectionId"),
                connection_time=read_str(item, "connectionTime"),
                git_version=read_str(item, "gitVersion"),
                cloud_provider=read_str(item, "cloudProvider"),
            )
        )
    return ConnectedClients(
        server_name=read_str(fields, "serverName"),
        clients=tuple(clients),
        keepalive=read_str(fields, "keepalive"),
        depth=depth,
        msg_id=msg_id,
    )


def decode_connected_clients(payload: bytes) -> ConnectedClients:
    """The report in a ``ConnectedClients`` payload; raises :class:`DecodeError`."""
    return _connected_clients(_fields(_json(payload)))


def decode_pulsar(payload: bytes, properties: Mapping[str, str]) -> Envelope:
    """Decode a Pulsar message that holds exactly one envelope (see :func:`decode_pulsar_all`)."""
    envelopes = decode_pulsar_all(payload, properties)
    if len(envelopes) != 1:
        raise DecodeError(
            f"{properties.get(PROP_EVENT)} holds {len(envelopes)} envelopes; use decode_pulsar_all"
        )
    return envelopes[0]
