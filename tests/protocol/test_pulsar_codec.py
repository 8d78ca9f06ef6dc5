"""kubescape's Pulsar encoding: round trips, exact payloads and properties, rejections."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from clustersync.model import Kind, ObjectRef
from clustersync.protocol.codec import DecodeError, TooDeepError
from clustersync.protocol.envelope import CONTROL_CONNECTED, CONTROL_RECONCILE, Envelope
from clustersync.protocol.messages import (
    BATCH_RECONCILIATION,
    MAX_DEPTH,
    Batch,
    GetObject,
    Message,
    NewChecksum,
    ObjectDeleted,
    PatchObject,
    Ping,
    PutObject,
)
from clustersync.protocol.pulsar_codec import (
    PulsarMessage,
    decode_pulsar,
    decode_pulsar_all,
    encode_pulsar,
    encode_pulsar_all,
    format_timestamp,
    message_key,
)

PODS = Kind.parse("/v1/pods")
DEPLOYMENTS = Kind.parse("apps/v1/deployments")
NODES = Kind.parse("/v1/nodes")
POD = ObjectRef(PODS, "default", "web-1")
DEPLOY = ObjectRef(DEPLOYMENTS, "prod", "api")
NODE = ObjectRef(NODES, "", "node-1")
OBJ = b'{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web-1","namespace":"default"}}'
PATCH = b'{"spec":{"replicas":3}}'
MSG_ID = "7d9f4c1e-1111-4222-8333-944455556666"
NOW = datetime(2024, 5, 1, 12, 30, 45, 123400, tzinfo=UTC)
ACCOUNT, CLUSTER = "acct-1", "prod-eu"


def env(message: Message | None = None, control: str = "") -> Envelope:
    return Envelope(ACCOUNT, CLUSTER, message, control)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def payload(msg: PulsarMessage) -> dict[str, Any]:
    doc = orjson.loads(msg.payload)
    assert isinstance(doc, dict)
    return doc


OBJECT_MESSAGES: list[Message] = [
    NewChecksum(ref=POD, checksum="abc", resource_version=12, depth=1, msg_id=MSG_ID),
    NewChecksum(ref=NODE, checksum="def"),
    ObjectDeleted(ref=POD, resource_version=3, depth=2, msg_id=MSG_ID),
    ObjectDeleted(ref=NODE),
    GetObject(ref=DEPLOY, depth=3, msg_id=MSG_ID),
    GetObject(ref=DEPLOY, base_object=OBJ, depth=4, msg_id=MSG_ID),
    PatchObject(ref=POD, checksum="c1", patch=b'{"spec":{"x":null}}', depth=5, msg_id="m"),
    PutObject(ref=POD, checksum="c2", object=OBJ, depth=MAX_DEPTH, msg_id=MSG_ID),
    PutObject(ref=NODE, checksum="", object=b"{}"),
]


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("message", OBJECT_MESSAGES, ids=lambda m: type(m).__name__)
def test_object_messages_round_trip(message: Message) -> None:
    msg = encode_pulsar(env(message), now=NOW)
    assert decode_pulsar(msg.payload, msg.properties) == env(message)


@pytest.mark.parametrize("control", [CONTROL_CONNECTED, CONTROL_RECONCILE])
def test_controls_round_trip(control: str) -> None:
    msg = encode_pulsar(env(control=control), now=NOW)
    assert decode_pulsar(msg.payload, msg.properties) == env(control=control)


@pytest.mark.parametrize("count", [0, 1, 3])
def test_reconciliation_batch_round_trips(count: int) -> None:
    items = tuple(
        NewChecksum(
            ref=ObjectRef(PODS, f"ns{i}", f"pod-{i}"),
            checksum=f"sum{i}",
            resource_version=100 + i,
            depth=1,
            msg_id=MSG_ID,
        )
        for i in range(count)
    )
    batch = Batch(
        kind=PODS, batch_type=BATCH_RECONCILIATION, new_checksum=items, depth=1, msg_id=MSG_ID
    )
    msg = encode_pulsar(env(batch), now=NOW)
    assert msg.properties["event"] == "ReconciliationRequest"
    assert decode_pulsar(msg.payload, msg.properties) == env(batch)


def test_other_batches_unroll_in_kubescape_order() -> None:
    get = GetObject(ref=POD, depth=1, msg_id="g")
    verify = NewChecksum(ref=POD, checksum="s", depth=1, msg_id="v")
    delete = ObjectDeleted(ref=ObjectRef(PODS, "default", "old"), depth=1, msg_id="d")
    patch = PatchObject(ref=POD, checksum="s2", patch=PATCH, depth=1, msg_id="p")
    put = PutObject(ref=POD, checksum="s3", object=OBJ, depth=1, msg_id="u")
    batch = Batch(
        kind=PODS,
        put_object=(put,),
        patch_object=(patch,),
        object_deleted=(delete,),
        new_checksum=(verify,),
        get_object=(get,),
    )
    msgs = encode_pulsar_all(env(batch), now=NOW)
    assert [m.properties["event"] for m in msgs] == [
        "GetObject",
        "VerifyObject",
        "DeleteObject",
        "PatchObject",
        "PutObject",
    ]
    assert [decode_pulsar(m.payload, m.properties) for m in msgs] == [
        env(item) for item in (get, verify, delete, patch, put)
    ]
    assert encode_pulsar_all(env(Batch(kind=PODS)), now=NOW) == []
    with pytest.raises(ValueError, match="encode_pulsar_all"):
        encode_pulsar(env(batch), now=NOW)


# ---------------------------------------------------------------- exact wire form


def test_verify_object_payload_properties_and_key() -> None:
    message = NewChecksum(ref=POD, checksum="abc", resource_version=12, depth=1, msg_id=MSG_ID)
    msg = encode_pulsar(env(message), now=NOW)
    assert payload(msg) == {
        "checksum": "abc",
        "cluster": CLUSTER,
        "account": ACCOUNT,
        "depth": 1,
        "kind": "/v1/pods",
        "msgId": MSG_ID,
        "name": "web-1",
        "namespace": "default",
        "resourceVersion": 0,  # a Go server never copies it into the payload...
    }
    assert msg.properties == {
        "timestamp": "2024-05-01T12:30:45.1234Z",
        "event": "VerifyObject",
        "account": ACCOUNT,
        "cluster": CLUSTER,
        "group": "",
        "version": "v1",
        "resource": "pods",
        "name": "web-1",
        "namespace": "default",
        "resourceVersion": "12",  # ...only into this property
    }
    assert msg.key == "acct-1/prod-eu//v1/pods/default/web-1"
    # Key order follows kubescape's Go struct, byte for byte.
    assert msg.payload == (
        b'{"checksum":"abc","cluster":"prod-eu","account":"acct-1","depth":1,'
        b'"kind":"/v1/pods","msgId":"' + MSG_ID.encode() + b'","name":"web-1",'
        b'"namespace":"default","resourceVersion":0}'
    )


def test_delete_object_payload() -> None:
    message = ObjectDeleted(ref=DEPLOY, resource_version=7, depth=2, msg_id="m")
    msg = encode_pulsar(env(message), now=NOW)
    assert payload(msg) == {
        "cluster": CLUSTER,
        "account": ACCOUNT,
        "depth": 2,
        "kind": "apps/v1/deployments",
        "msgId": "m",
        "name": "api",
        "namespace": "prod",
        "resourceVersion": 0,
    }
    assert msg.properties["event"] == "DeleteObject"
    assert (msg.properties["group"], msg.properties["resourceVersion"]) == ("apps", "7")
    assert msg.key == "acct-1/prod-eu/apps/v1/deployments/prod/api"


def test_get_object_base_object_is_base64_or_null() -> None:
    with_base = encode_pulsar(env(GetObject(ref=DEPLOY, base_object=OBJ, msg_id="m")), now=NOW)
    assert payload(with_base)["baseObject"] == b64(OBJ)
    assert set(payload(with_base)) == {
        "baseObject", "cluster", "account", "depth", "kind", "msgId", "name", "namespace",
        "resourceVersion",
    }
    without = encode_pulsar(env(GetObject(ref=DEPLOY, msg_id="m")), now=NOW)
    assert payload(without)["baseObject"] is None
    assert without.properties["event"] == "GetObject"


def test_patch_object_payload() -> None:
    msg = encode_pulsar(env(PatchObject(ref=POD, checksum="c", patch=PATCH, msg_id="m")), now=NOW)
    doc = payload(msg)
    assert doc["patch"] == "eyJzcGVjIjp7InJlcGxpY2FzIjozfX0="  # base64 of PATCH
    assert base64.b64decode(doc["patch"]) == PATCH
    assert (doc["checksum"], doc["kind"], doc["resourceVersion"]) == ("c", "/v1/pods", 0)
    assert msg.properties["event"] == "PatchObject"


def test_put_object_carries_the_object_under_patch() -> None:
    msg = encode_pulsar(env(PutObject(ref=POD, checksum="c", object=OBJ, msg_id="m")), now=NOW)
    doc = payload(msg)
    assert "object" not in doc
    assert doc["patch"] == b64(OBJ)
    assert doc["checksum"] == "c"
    assert msg.properties["event"] == "PutObject"
    assert msg.properties["namespace"] == "default"


def test_cluster_scoped_object_properties() -> None:
    msg = encode_pulsar(env(NewChecksum(ref=NODE, checksum="x")), now=NOW)
    assert msg.properties["namespace"] == ""
    assert msg.properties["resourceVersion"] == "0"
    assert msg.key == "acct-1/prod-eu//v1/nodes//node-1"


def test_server_connected_payload() -> None:
    msg = encode_pulsar(env(control=CONTROL_CONNECTED), now=NOW, msg_id="conn-1")
    assert payload(msg) == {"cluster": CLUSTER, "account": ACCOUNT, "depth": 0, "msgId": "conn-1"}
    assert msg.properties == {
        "timestamp": "2024-05-01T12:30:45.1234Z",
        "event": "ServerConnected",
        "account": ACCOUNT,
        "cluster": CLUSTER,
    }
    assert msg.key == "acct-1/prod-eu"
    # Without an explicit id, each control message gets a fresh one.
    first = payload(encode_pulsar(env(control=CONTROL_CONNECTED)))["msgId"]
    assert first and first != payload(encode_pulsar(env(control=CONTROL_CONNECTED)))["msgId"]


def test_server_initiated_reconciliation_payload() -> None:
    msg = encode_pulsar(env(control=CONTROL_RECONCILE), now=NOW, msg_id="r-1")
    assert payload(msg) == {
        "cluster": CLUSTER,
        "account": ACCOUNT,
        "depth": 0,
        "msgId": "r-1",
        "serverInitiated": True,
        "kindToObject": None,  # Go's nil map
    }
    assert msg.properties["event"] == "ReconciliationRequest"
    assert msg.key == "acct-1/prod-eu"


def test_backend_reconciliation_payload() -> None:
    items = (
        NewChecksum(ref=DEPLOY, checksum="s1", resource_version=5, depth=1, msg_id="r"),
        NewChecksum(ref=ObjectRef(DEPLOYMENTS, "", "x"), checksum="s2", depth=1, msg_id="r"),
    )
    batch = Batch(
        kind=DEPLOYMENTS, batch_type=BATCH_RECONCILIATION, new_checksum=items, depth=1, msg_id="r"
    )
    msg = encode_pulsar(env(batch), now=NOW)
    assert payload(msg) == {
        "cluster": CLUSTER,
        "account": ACCOUNT,
        "depth": 1,
        "msgId": "r",
        "serverInitiated": False,
        "kindToObject": {
            "apps/v1/deployments": [
                {"checksum": "s1", "resourceVersion": 5, "name": "api", "namespace": "prod"},
                {"checksum": "s2", "resourceVersion": 0, "name": "x", "namespace": ""},
            ]
        },
    }
    assert set(msg.properties) == {"timestamp", "event", "account", "cluster"}
    assert msg.key == "acct-1/prod-eu"


def test_reconciliation_item_of_another_kind_is_refused() -> None:
    batch = Batch(
        kind=DEPLOYMENTS, batch_type=BATCH_RECONCILIATION, new_checksum=(NewChecksum(ref=POD,
                                                                                    checksum="s"),)
    )
    with pytest.raises(ValueError, match="holds an item"):
        encode_pulsar(env(batch))


@pytest.mark.parametrize(
    "batch",
    [
        Batch(kind=PODS, batch_type=BATCH_RECONCILIATION,
              new_checksum=(NewChecksum(ref=POD, checksum="s"),),
              object_deleted=(ObjectDeleted(ref=POD),)),
        Batch(kind=PODS, batch_type=BATCH_RECONCILIATION,
              put_object=(PutObject(ref=POD, checksum="s", object=b"{}"),)),
    ],
)
def test_reconciliation_with_other_items_is_refused(batch: Batch) -> None:
    # A ReconciliationRequest lists checksums only: the rest would be lost.
    with pytest.raises(ValueError, match="other than checksums"):
        encode_pulsar_all(env(batch))


@pytest.mark.parametrize(("depth", "msg_id"), [(2, MSG_ID), (1, "other"), (0, "")])
def test_reconciliation_items_with_their_own_meta_are_refused(depth: int, msg_id: str) -> None:
    # The request's items take its depth and msgId on decoding: different ones would change.
    batch = Batch(
        kind=PODS, batch_type=BATCH_RECONCILIATION, depth=1, msg_id=MSG_ID,
        new_checksum=(NewChecksum(ref=POD, checksum="s", depth=depth, msg_id=msg_id),),
    )
    with pytest.raises(ValueError, match="own depth or msgId"):
        encode_pulsar_all(env(batch))


def test_empty_identity_is_left_out_of_the_properties() -> None:
    msg = encode_pulsar(Envelope("", "", control=CONTROL_CONNECTED), now=NOW)
    assert set(msg.properties) == {"timestamp", "event"}


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), "2024-01-02T03:04:05Z"),
        (datetime(2024, 1, 2, 3, 4, 5, 500000, tzinfo=UTC), "2024-01-02T03:04:05.5Z"),
        (datetime(2024, 1, 2, 3, 4, 5, 1, tzinfo=UTC), "2024-01-02T03:04:05.000001Z"),
        # Converted to UTC, as Go's time.Now().UTC() would print it.
        (
            datetime(2024, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2))),
            "2024-01-02T03:04:05Z",
        ),
    ],
)
def test_timestamp_format(moment: datetime, text: str) -> None:
    assert format_timestamp(moment) == text


def test_timestamp_defaults_to_now() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    stamp = encode_pulsar(env(control=CONTROL_CONNECTED)).properties["timestamp"]
    parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert before <= parsed <= datetime.now(UTC)


def test_message_key() -> None:
    assert message_key("a", "c") == "a/c"
    assert message_key("a", "c", DEPLOY) == "a/c/apps/v1/deployments/prod/api"


@pytest.mark.parametrize(
    "envelope",
    [
        env(Ping(depth=1, msg_id="p")),
        env(),
        env(NewChecksum(ref=POD, checksum="x"), control=CONTROL_CONNECTED),
        env(control="bogus"),
    ],
    ids=["ping", "empty", "both", "unknown-control"],
)
def test_what_has_no_pulsar_form(envelope: Envelope) -> None:
    with pytest.raises(ValueError):
        encode_pulsar_all(envelope)


# ---------------------------------------------------------------- decoding what Go writes


def go_props(event: str, **extra: str) -> dict[str, str]:
    return {"timestamp": "2024-05-01T12:30:45.123456789Z", "event": event, "account": ACCOUNT,
            "cluster": CLUSTER, **extra}


def test_decodes_a_kubescape_put_object() -> None:
    # As kubescape's ingester writes it: no checksum on PutObject, Go's []byte base64.
    doc = {
        "cluster": CLUSTER,
        "account": ACCOUNT,
        "depth": 2,
        "kind": "/v1/pods",
        "msgId": MSG_ID,
        "name": "web-1",
        "namespace": "default",
        "patch": b64(OBJ),
        "resourceVersion": 0,
    }
    got = decode_pulsar(orjson.dumps(doc), go_props("PutObject"))
    assert got == env(PutObject(ref=POD, checksum="", object=OBJ, depth=2, msg_id=MSG_ID))


def test_decode_accepts_what_go_accepts() -> None:
    # Keys in any case, an unknown key, a base64 value wrapped over lines, a whole float.
    text = b64(OBJ)
    doc = {
        "Cluster": CLUSTER,
        "ACCOUNT": ACCOUNT,
        "Depth": 1.0,
        "Kind": "apps/v1/deployments",
        "msgid": "m",
        "Name": "api",
        "Namespace": "prod",
        "BaseObject": text[:20] + "\r\n" + text[20:],
        "extra": {"ignored": True},
    }
    got = decode_pulsar(orjson.dumps(doc), go_props("GetObject"))
    assert got == env(GetObject(ref=DEPLOY, base_object=OBJ, depth=1, msg_id="m"))


def test_identity_may_come_from_the_properties_alone() -> None:
    doc = {"depth": 0, "msgId": "x"}
    got = decode_pulsar(orjson.dumps(doc), go_props("ServerConnected"))
    assert got == env(control=CONTROL_CONNECTED)


def test_multi_kind_reconciliation_request() -> None:
    doc = {
        "cluster": CLUSTER,
        "account": ACCOUNT,
        "depth": 1,
        "msgId": "r",
        "serverInitiated": False,
        "kindToObject": {
            "/v1/pods": [{"checksum": "a", "resourceVersion": 1, "name": "web-1",
                          "namespace": "default"}],
            "/v1/nodes": None,
        },
    }
    data, props = orjson.dumps(doc), go_props("ReconciliationRequest")
    got = decode_pulsar_all(data, props)
    assert got == [
        env(Batch(
            kind=PODS,
            batch_type=BATCH_RECONCILIATION,
            new_checksum=(NewChecksum(ref=POD, checksum="a", resource_version=1, depth=1,
                                      msg_id="r"),),
            depth=1,
            msg_id="r",
        )),
        env(Batch(kind=NODES, batch_type=BATCH_RECONCILIATION, depth=1, msg_id="r")),
    ]
    with pytest.raises(DecodeError, match="decode_pulsar_all"):
        decode_pulsar(data, props)
    # A backend request with no kinds at all asks for nothing.
    empty = orjson.dumps({"cluster": CLUSTER, "account": ACCOUNT, "kindToObject": None})
    assert decode_pulsar_all(empty, props) == []


def test_a_listed_inventory_is_batches_whatever_server_initiated_says() -> None:
    # As a Go server handles it (golden consume_reconciliation_empty_kind_list).
    doc = {"serverInitiated": True, "kindToObject": {"/v1/pods": []}}
    got = decode_pulsar(orjson.dumps(doc), go_props("ReconciliationRequest"))
    assert got == env(Batch(kind=PODS, batch_type=BATCH_RECONCILIATION))


@pytest.mark.parametrize(("initiated", "controls"), [(True, [CONTROL_RECONCILE]), (False, [])])
def test_a_request_without_inventory(initiated: bool, controls: list[str]) -> None:
    doc = {"serverInitiated": initiated, "kindToObject": None}
    got = decode_pulsar_all(orjson.dumps(doc), go_props("ReconciliationRequest"))
    assert got == [env(control=control) for control in controls]


def test_resource_version_comes_from_the_property_when_the_payload_has_zero() -> None:
    doc = good_verify() | {"resourceVersion": 0}
    got = decode_pulsar(orjson.dumps(doc), go_props("VerifyObject", resourceVersion="41"))
    assert isinstance(got.message, NewChecksum)
    assert got.message.resource_version == 41
    doc["resourceVersion"] = 7  # a payload value wins
    got = decode_pulsar(orjson.dumps(doc), go_props("VerifyObject", resourceVersion="41"))
    assert isinstance(got.message, NewChecksum)
    assert got.message.resource_version == 7


def test_rejects_a_resource_version_property_that_is_no_integer() -> None:
    props = go_props("VerifyObject", resourceVersion="x1")
    doc = good_verify() | {"resourceVersion": 0}
    assert reject(orjson.dumps(doc), props).reason == "malformed"


# ---------------------------------------------------------------- rejections


def good_verify() -> dict[str, Any]:
    return {
        "checksum": "abc",
        "cluster": CLUSTER,
        "account": ACCOUNT,
        "depth": 1,
        "kind": "/v1/pods",
        "msgId": "m",
        "name": "web-1",
        "namespace": "default",
        "resourceVersion": 1,
    }


def reject(data: bytes, props: dict[str, str]) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode_pulsar_all(data, props)
    return info.value


def test_the_good_verify_decodes() -> None:
    decode_pulsar(orjson.dumps(good_verify()), go_props("VerifyObject"))


@pytest.mark.parametrize("data", [b"", b"not json", b"{", b"\xff\xfe"])
def test_rejects_non_json(data: bytes) -> None:
    assert reject(data, go_props("VerifyObject")).reason == "malformed"


@pytest.mark.parametrize("data", [b"[]", b'"text"', b"null", b"42"])
def test_rejects_json_that_is_not_an_object(data: bytes) -> None:
    assert reject(data, go_props("VerifyObject")).reason == "malformed"


@pytest.mark.parametrize("event", ["", "NewChecksum", "verifyobject", "connectedclients", "Ping"])
def test_rejects_unknown_events(event: str) -> None:
    props = go_props(event)
    assert reject(orjson.dumps(good_verify()), props).reason == "unknown_event"


def test_rejects_missing_event_property() -> None:
    props = go_props("VerifyObject")
    del props["event"]
    assert reject(orjson.dumps(good_verify()), props).reason == "unknown_event"


@pytest.mark.parametrize(
    "kind", ["", "pods", "v1/pods", "/v1/pods/extra", "/V1/pods", "apps//deployments", None, 7]
)
def test_rejects_bad_kind_strings(kind: Any) -> None:
    doc = good_verify() | {"kind": kind}
    reason = reject(orjson.dumps(doc), go_props("VerifyObject")).reason
    assert reason == ("malformed" if kind == 7 else "bad_kind")


def test_rejects_bad_kind_in_reconciliation_request() -> None:
    doc: dict[str, Any] = {"kindToObject": {"pods": []}}
    assert reject(orjson.dumps(doc), go_props("ReconciliationRequest")).reason == "bad_kind"


@pytest.mark.parametrize(
    ("event", "key"),
    [("PatchObject", "patch"), ("PutObject", "patch"), ("GetObject", "baseObject")],
)
@pytest.mark.parametrize("value", ["not base64!", "eyJ", "e30=x", "{}", "e30"])
def test_rejects_bad_base64(event: str, key: str, value: str) -> None:
    doc = good_verify() | {key: value}
    assert reject(orjson.dumps(doc), go_props(event)).reason == "bad_base64"


def test_rejects_base64_that_is_not_json() -> None:
    doc = good_verify() | {"patch": b64(b"not json")}
    assert reject(orjson.dumps(doc), go_props("PatchObject")).reason == "malformed"


@pytest.mark.parametrize("event", ["PatchObject", "PutObject"])
def test_rejects_missing_body(event: str) -> None:
    assert reject(orjson.dumps(good_verify()), go_props(event)).reason == "malformed"


@pytest.mark.parametrize("key", ["account", "cluster"])
def test_rejects_missing_identity(key: str) -> None:
    doc = good_verify()
    del doc[key]
    props = go_props("VerifyObject")
    del props[key]
    assert reject(orjson.dumps(doc), props).reason == "no_identity"
    doc[key] = ""
    assert reject(orjson.dumps(doc), props).reason == "no_identity"


@pytest.mark.parametrize("key", ["account", "cluster"])
def test_rejects_identity_mismatch(key: str) -> None:
    props = go_props("VerifyObject", **{key: "someone-else"})
    error = reject(orjson.dumps(good_verify()), props)
    assert error.reason == "identity_mismatch"
    assert "someone-else" in str(error)


def test_rejects_depth_out_of_range() -> None:
    props = go_props("VerifyObject")
    with pytest.raises(TooDeepError):
        decode_pulsar(orjson.dumps(good_verify() | {"depth": MAX_DEPTH + 1}), props)
    assert reject(orjson.dumps(good_verify() | {"depth": -1}), props).reason == "malformed"


@pytest.mark.parametrize(
    "change",
    [
        {"name": ""},
        {"name": None},
        {"depth": "1"},
        {"depth": True},
        {"resourceVersion": "12"},
        {"checksum": 5},
        {"msgId": ["x"]},
    ],
)
def test_rejects_wrong_fields(change: dict[str, Any]) -> None:
    error = reject(orjson.dumps(good_verify() | change), go_props("VerifyObject"))
    assert error.reason == "malformed"


@pytest.mark.parametrize(
    "doc",
    [
        {"serverInitiated": "yes"},
        {"kindToObject": []},
        {"kindToObject": {"/v1/pods": {}}},
        {"kindToObject": {"/v1/pods": [{"checksum": "a"}]}},
        {"kindToObject": {"/v1/pods": ["x"]}},
    ],
)
def test_rejects_malformed_reconciliation_requests(doc: dict[str, Any]) -> None:
    data = orjson.dumps({"account": ACCOUNT, "cluster": CLUSTER} | doc)
    assert reject(data, go_props("ReconciliationRequest")).reason == "malformed"
