"""Pulsar messages as kubescape's Go server produces and reads them, every recorded case.

Produce: the message our encoder makes for the same input has Go's exact payload bytes and
properties (the clock fixed as in the recording), and the bus's kubescape layout gives it Go's
key and properties. Consume: our decoder reads what Go's reader reads (identity, fields), refuses
what Go refuses, and the websocket frame our server would send for it reads, Go's way, as the
frame Go sends.

The depth: Go's server adds one per hop (websocket to Pulsar and back). Our server does that
hop before the bus, so the envelopes here carry ``ctxDepth + 1`` and the codec leaves depth alone.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from golden_cases import cases

from clustersync.adapters.bus.pulsar_layout import KubescapeLayout
from clustersync.model import Kind, ObjectRef
from clustersync.protocol import codec
from clustersync.protocol.envelope import (
    CONTROL_CONNECTED,
    CONTROL_RECONCILE,
    Envelope,
    encode_envelope,
    partition_of,
    up_subject,
)
from clustersync.protocol.fields import DecodeError
from clustersync.protocol.messages import (
    Batch,
    GetObject,
    Message,
    NewChecksum,
    ObjectDeleted,
    PatchObject,
    PutObject,
)
from clustersync.protocol.pulsar_codec import (
    ConnectedClient,
    ConnectedClients,
    PulsarMessage,
    decode_pulsar_all,
    encode_connected_clients,
    encode_pulsar,
    encode_reconciliation_request_batch,
)

CASES = cases("pulsar_messages.json")
PRODUCE = [case for case in CASES if case.values[0]["direction"] == "produce"]
CONSUME = [case for case in CASES if case.values[0]["direction"] == "consume"]
# The recording fixed Go's time.Now() for the timestamp property to this instant.
RECORDED_NOW = datetime(2026, 3, 3, 20, 39, 29, 123456, tzinfo=UTC)


def test_every_case_is_run() -> None:
    assert len(PRODUCE) + len(CONSUME) == len(CASES) > 0


# ------------------------------------------------------------ produce


def _object_message(given: dict[str, Any]) -> Message:
    kind = Kind(**given["kind"])
    ref = ObjectRef(kind, given["namespace"], given["name"])
    meta: dict[str, Any] = {"depth": given["ctxDepth"] + 1, "msg_id": given["msgId"]}
    call = given["call"]
    if call == "VerifyObject":
        return NewChecksum(
            ref=ref, checksum=given["checksum"], resource_version=given["resourceVersion"], **meta
        )
    if call == "DeleteObject":
        return ObjectDeleted(ref=ref, resource_version=given["resourceVersion"], **meta)
    if call == "GetObject":
        return GetObject(ref=ref, base_object=given["baseObject"].encode(), **meta)
    if call == "PatchObject":
        patch = given["patch"].encode()
        return PatchObject(ref=ref, checksum=given["checksum"], patch=patch, **meta)
    assert call == "PutObject", call
    return PutObject(ref=ref, checksum=given["checksum"], object=given["object"].encode(), **meta)


def _client(given: dict[str, Any]) -> ConnectedClient:
    return ConnectedClient(
        account=given["account"],
        cluster=given["cluster"],
        synchronizer_version=given["syncVersion"],
        helm_version=given["helmVersion"],
        connection_id=given["connectionId"],
        connection_time=given["connectionTime"],
        git_version=given["gitVersion"],
        cloud_provider=given["cloudProvider"],
    )


def _produce(given: dict[str, Any]) -> tuple[PulsarMessage, Envelope | None]:
    """Our message for the recorded input, and the envelope a bus publish would carry."""
    call = given["call"]
    if call in ("ServerConnected", "ReconciliationRequest"):
        control = CONTROL_CONNECTED if call == "ServerConnected" else CONTROL_RECONCILE
        env = Envelope(given["account"], given["cluster"], control=control)
        return encode_pulsar(env, now=RECORDED_NOW, msg_id=given["msgId"]), env
    if call == "ConnectedClientsSingle":
        report = ConnectedClients(
            server_name=given["serverName"],
            clients=(_client(given),),
            keepalive=given["timestamp"],
            msg_id=given["msgId"],
        )
        message = encode_connected_clients(
            report, account=given["account"], cluster=given["cluster"], now=RECORDED_NOW
        )
        return message, None
    if call == "ConnectedClientsKeepalive":
        report = ConnectedClients(
            server_name=given["serverName"],
            clients=tuple(_client(client) for client in given["clients"]),
            keepalive=given["timestamp"],
            msg_id=given["msgId"],
        )
        return encode_connected_clients(report, now=RECORDED_NOW), None
    if call == "ReconciliationRequestBatch":
        requests = [
            Envelope(request["account"], request["cluster"], control=CONTROL_RECONCILE)
            for request in given["requests"]
        ]
        message = encode_reconciliation_request_batch(
            requests, msg_id=given["msgId"], now=RECORDED_NOW
        )
        return message, None
    env = Envelope(given["account"], given["cluster"], _object_message(given))
    return encode_pulsar(env, now=RECORDED_NOW), env


@pytest.mark.parametrize("case", PRODUCE)
def test_produce(case: dict[str, Any]) -> None:
    expected = case["expected"]
    message, env = _produce(case["input"])
    assert message.properties == expected["properties"]
    assert message.payload == expected["payload"].encode()  # byte for byte, key order too
    if env is None:
        return
    # Through the bus, on the subject our server publishes it on: Go's key and properties.
    subject = up_subject(env.account, env.cluster, partition_of(env.message))
    sent = KubescapeLayout().outgoing(subject, encode_envelope(env))
    assert sent[0].key == expected["key"]
    assert _untimed(sent[0].properties) == _untimed(expected["properties"])
    assert json.loads(sent[0].payload) | {"msgId": ""} == json.loads(expected["payload"]) | {
        "msgId": ""  # a control's msgId is made up per message, as Go's server does
    }
    if env.control == CONTROL_CONNECTED:  # the ConnectedClients report that goes with it
        assert sent[1].key == expected["key"]
        assert sent[1].properties["event"] == "ConnectedClients"


def _untimed(properties: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in properties.items() if key != "timestamp"}


# ------------------------------------------------------------ consume


def _view(env: Envelope) -> dict[str, Any]:
    """What Go's reader unmarshalled, in the recording's shape."""
    msg = env.message
    if msg is None:
        return {"control": env.control}
    view: dict[str, Any] = {"depth": msg.depth, "msgId": msg.msg_id}
    if isinstance(msg, Batch):
        return view
    view |= {
        "kind": str(msg.ref.kind),
        "name": msg.ref.name,
        "namespace": msg.ref.namespace,
    }
    if isinstance(msg, NewChecksum):
        view |= {"event": "VerifyObject", "checksum": msg.checksum}
    elif isinstance(msg, ObjectDeleted):
        view |= {"event": "DeleteObject"}
    elif isinstance(msg, GetObject):
        base = msg.base_object
        view |= {"event": "GetObject", "baseObject": base.decode() if base else None}
    elif isinstance(msg, PatchObject):
        view |= {"event": "PatchObject", "checksum": msg.checksum, "patch": msg.patch.decode()}
    else:
        assert isinstance(msg, PutObject)
        view |= {"event": "PutObject", "checksum": msg.checksum, "object": msg.object.decode()}
    return view


def _inventory(envelopes: list[Envelope]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for env in envelopes:
        assert isinstance(env.message, Batch)
        out[str(env.message.kind)] = [
            {
                "checksum": item.checksum,
                "name": item.ref.name,
                "namespace": item.ref.namespace,
                "resourceVersion": item.resource_version,
            }
            for item in env.message.new_checksum
        ]
    return out


def _go_frame(doc: Any) -> dict[str, Any]:
    """A frame as Go's decoder sees it: keys case-insensitive, missing keys zero, null lists
    empty; a batch's items by name, namespace, resourceVersion and checksum (the receiver takes
    the kind, depth and msgId from the batch)."""
    fields = {key.lower(): value for key, value in doc.items()}
    kind = fields.get("kind") or {}
    kind = {key.lower(): value for key, value in kind.items()}
    view = {
        "event": fields.get("event", 0),
        "depth": fields.get("depth", 0),
        "msgid": fields.get("msgid", ""),
        "kind": (kind.get("group", ""), kind.get("version", ""), kind.get("resource", "")),
    }
    for key in ("name", "namespace", "checksum", "patch", "object", "baseobject", "batchtype"):
        view[key] = fields.get(key) or ""
    items = {key.lower(): value for key, value in (fields.get("items") or {}).items()}
    view["items"] = {
        name: [
            (item.get("Name", ""), item.get("Namespace", ""), item.get("ResourceVersion", 0),
             item.get("Checksum", ""))
            for item in items.get(name) or []
        ]
        for name in ("newchecksum", "objectdeleted", "getobject", "patchobject", "putobject")
    }
    return view


def _frame_we_send(msg: Message) -> dict[str, Any]:
    """The frame our server writes to a kubescape agent for a bus message: one hop deeper, and
    the resource version not forwarded, as Go's server does."""
    hop = codec.to_wire(msg)
    hop["Depth"] = msg.depth + 1
    if not isinstance(msg, Batch) and "ResourceVersion" in hop:
        hop["ResourceVersion"] = 0
    return json.loads(json.dumps(hop))


@pytest.mark.parametrize("case", CONSUME)
def test_consume(case: dict[str, Any]) -> None:
    given, expected = case["input"], case["expected"]
    payload, properties = given["payload"].encode(), given["properties"]
    event = properties["event"]
    if expected["outcome"] == "error":
        if event == "ConnectedClients":
            # Go's server logs "unknown message type"; ours reads it as a report that asks
            # nothing: no frame goes to any agent either way.
            assert decode_pulsar_all(payload, properties) == []
            return
        with pytest.raises(DecodeError):
            decode_pulsar_all(payload, properties)
        return
    envelopes = decode_pulsar_all(payload, properties)
    identity = expected["identity"]
    assert {(env.account, env.cluster) for env in envelopes} == {
        (identity["account"], identity["cluster"])
    }
    decoded = expected["decoded"]
    if event == "ReconciliationRequest":
        assert _inventory(envelopes) == decoded["kindToObject"]
        assert {(_view(env)["depth"], _view(env)["msgId"]) for env in envelopes} == {
            (decoded["depth"], decoded["msgId"])
        }
    else:
        (env,) = envelopes
        want = {key: value for key, value in decoded.items() if key != "resourceVersion"}
        assert _view(env) == want
        assert isinstance(env.message, NewChecksum | ObjectDeleted | GetObject | PatchObject
                          | PutObject)
        if isinstance(env.message, NewChecksum | ObjectDeleted):
            assert env.message.resource_version == decoded["resourceVersion"]
    # Go sorted its reconciliation frames by kind; our batches come in the payload's order.
    ours = sorted((_go_frame(_frame_we_send(env.message)) for env in envelopes
                   if env.message is not None), key=lambda view: view["kind"])
    recorded = sorted((_go_frame(json.loads(frame)) for frame in expected["ws_frames"]),
                      key=lambda view: view["kind"])
    assert ours == recorded
