"""The kubescape websocket encoding, and the bus envelope around it."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from clustersync.model import Kind, ObjectRef
from clustersync.protocol import codec
from clustersync.protocol.codec import (
    DecodeError,
    TooDeepError,
    decode,
    decode_delivery,
    encode,
    from_wire,
    to_wire,
)
from clustersync.protocol.envelope import (
    CONTROL_CONNECTED,
    CONTROL_RECONCILE,
    Envelope,
    decode_envelope,
    down_subject,
    encode_envelope,
    subject_token,
    up_subject,
    write_subject,
)
from clustersync.protocol.messages import (
    BATCH_RECONCILIATION,
    MAX_DEPTH,
    Ack,
    AgentInfo,
    Batch,
    Event,
    Frame,
    GetObject,
    KindProgress,
    Message,
    NewChecksum,
    ObjectDeleted,
    PatchObject,
    Ping,
    PutObject,
    SyncedKind,
    SyncProgress,
    WriteOutcome,
    WriteStatus,
    reply_meta,
)

PODS = Kind.parse("/v1/pods")
DEPLOYMENTS = Kind.parse("apps/v1/deployments")
NODES = Kind.parse("/v1/nodes")
POD = ObjectRef(PODS, "default", "web-1")
DEPLOY = ObjectRef(DEPLOYMENTS, "prod", "api")
NODE = ObjectRef(NODES, "", "node-1")
OBJ = b'{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web-1","namespace":"default"}}'
MSG_ID = "7d9f4c1e-1111-4222-8333-944455556666"


def _messages() -> list[Frame]:
    return [
        NewChecksum(ref=POD, checksum="abc", resource_version=12, depth=1, msg_id=MSG_ID),
        NewChecksum(ref=NODE, checksum="def"),
        ObjectDeleted(ref=POD, resource_version=3, depth=2, msg_id=MSG_ID),
        ObjectDeleted(ref=NODE),
        GetObject(ref=DEPLOY, depth=3, msg_id=MSG_ID),
        GetObject(ref=DEPLOY, base_object=OBJ, depth=4, msg_id=MSG_ID),
        PatchObject(ref=POD, checksum="c1", patch=b'{"spec":{"x":null}}', depth=5, msg_id="m"),
        PutObject(ref=POD, checksum="c2", object=OBJ, depth=MAX_DEPTH, msg_id=MSG_ID),
        Ack(ids=()),
        Ack(ids=(3, 1, 1234)),
        AgentInfo(kinds=()),
        AgentInfo(kinds=(SyncedKind(PODS, True), SyncedKind(NODES, False)), msg_id=MSG_ID),
        AgentInfo(kinds=(SyncedKind(Kind.parse("example.com/v1/widgets"), None),)),
        SyncProgress(kinds=(KindProgress(PODS, 3, 2, 1, False),), msg_id=MSG_ID),
        WriteOutcome(ref=POD, status=WriteStatus.APPLIED, msg_id=MSG_ID),
        WriteOutcome(
            ref=NODE, status=WriteStatus.REFUSED, reason="policy: no", msg_id="w", depth=1
        ),
        Ping(depth=1, msg_id=MSG_ID),
        Ping(),
        Batch(kind=PODS, depth=1, msg_id=MSG_ID),
        Batch(
            kind=PODS,
            batch_type=BATCH_RECONCILIATION,
            new_checksum=(
                NewChecksum(ref=POD, checksum="a", depth=1, msg_id=MSG_ID),
                NewChecksum(ref=ObjectRef(PODS, "kube-system", "dns"), checksum="b"),
            ),
            object_deleted=(ObjectDeleted(ref=POD, resource_version=9),),
            get_object=(
                GetObject(ref=POD),
                GetObject(ref=POD, base_object=OBJ, depth=2, msg_id="g"),
            ),
            patch_object=(PatchObject(ref=POD, checksum="p", patch=b"{}"),),
            put_object=(PutObject(ref=POD, checksum="q", object=OBJ),),
            depth=1,
            msg_id=MSG_ID,
        ),
    ]


@pytest.mark.parametrize("msg", _messages(), ids=lambda m: type(m).__name__)
def test_round_trip(msg: Frame) -> None:
    frame = encode(msg)
    assert isinstance(frame, bytes)
    assert decode(frame) == msg
    assert decode(frame.decode()) == msg
    assert from_wire(orjson.loads(frame)) == msg
    assert from_wire(to_wire(msg)) == msg


def test_ack_is_our_extension_listing_delivery_ids() -> None:
    assert orjson.loads(encode(Ack(ids=(7, 9)))) == {
        "Depth": 0, "Event": 100, "MsgId": "", "Ids": [7, 9]
    }
    assert decode(b'{"event": 100, "ids": [2]}') == Ack(ids=(2,))
    for bad in (
        b'{"Event": 100}',
        b'{"Event": 100, "Count": 3}',  # the old cumulative form is not an id list
        b'{"Event": 100, "Ids": [0]}',
        b'{"Event": 100, "Ids": [-1]}',
        b'{"Event": 100, "Ids": ["1"]}',
        b'{"Event": 100, "Ids": [true]}',
        b'{"Event": 100, "Ids": 5}',
        b'{"Event": 100, "Ids": [' + b",".join([b"1"] * 4097) + b"]}",
    ):
        with pytest.raises(DecodeError):
            decode(bad)


def test_a_delivery_id_rides_along_and_is_read_even_from_a_frame_that_does_not_decode() -> None:
    put = PutObject(ref=POD, checksum="c", object=OBJ)
    frame = encode(put, delivery_id=41)
    assert orjson.loads(frame)["DeliveryId"] == 41
    assert decode(frame) == put  # peers that do not know the key ignore it
    assert decode_delivery(frame) == (put, 41)
    assert decode_delivery(encode(put)) == (put, None)

    unknown, delivery_id = decode_delivery(b'{"Event": 55, "deliveryID": 7}')
    assert isinstance(unknown, DecodeError) and unknown.reason == "unknown_event"
    assert delivery_id == 7
    broken, delivery_id = decode_delivery(b'{"Event": 6, "DeliveryId": 8.0, "Kind": 3}')
    assert isinstance(broken, DecodeError) and delivery_id == 8
    for frame, expected in [
        (b"not json", None),
        (b"[1, 2]", None),
        (b'{"Event": 7, "DeliveryId": "9"}', None),
        (b'{"Event": 7, "DeliveryId": true}', None),
        (b'{"Event": 7, "DeliveryId": 0}', None),
        (b'{"Event": 7, "DeliveryId": 2.5}', None),
    ]:
        assert decode_delivery(frame)[1] == expected, frame


def test_acks_never_travel_on_the_bus() -> None:
    data = orjson.dumps({"account": "a", "cluster": "c", "message": to_wire(Ack(ids=(1,)))})
    with pytest.raises(DecodeError):
        decode_envelope(data)


def test_every_sendable_event_is_covered() -> None:
    covered = {m.event for m in _messages()}
    assert covered == set(Event) - {Event.OBJECT_ADDED, Event.OBJECT_MODIFIED}


def test_batch_unrolled_order() -> None:
    batch = _messages()[-1]
    assert isinstance(batch, Batch)
    events = [m.event for m in batch.unrolled()]
    assert events == [
        Event.GET_OBJECT,
        Event.GET_OBJECT,
        Event.NEW_CHECKSUM,
        Event.NEW_CHECKSUM,
        Event.OBJECT_DELETED,
        Event.PATCH_OBJECT,
        Event.PUT_OBJECT,
    ]


# ------------------------------------------------------------------ golden frames


def test_golden_new_checksum_frame() -> None:
    msg = NewChecksum(ref=POD, checksum="abc", resource_version=12, depth=1, msg_id=MSG_ID)
    assert orjson.loads(encode(msg)) == {
        "Depth": 1,
        "Event": 0,
        "MsgId": MSG_ID,
        "Kind": {"Group": "", "Version": "v1", "Resource": "pods", "AdditionalProperties": None},
        "Name": "web-1",
        "Namespace": "default",
        "Checksum": "abc",
        "ResourceVersion": 12,
    }


def test_golden_put_object_frame() -> None:
    msg = PutObject(ref=DEPLOY, checksum="c2", object=OBJ, depth=3, msg_id=MSG_ID)
    doc = orjson.loads(encode(msg))
    assert doc == {
        "Depth": 3,
        "Event": 6,
        "MsgId": MSG_ID,
        "Kind": {
            "Group": "apps",
            "Version": "v1",
            "Resource": "deployments",
            "AdditionalProperties": None,
        },
        "Name": "api",
        "Namespace": "prod",
        "Checksum": "c2",
        "Object": OBJ.decode(),
    }
    assert isinstance(doc["Object"], str)
    assert type(doc["Event"]) is int
    # The object is JSON text inside the JSON frame, i.e. escaped once.
    assert b'"Object":"{\\"apiVersion\\":\\"v1\\"' in encode(msg)


def test_golden_other_frames() -> None:
    assert orjson.loads(encode(Ping(depth=1, msg_id="x"))) == {
        "Depth": 1,
        "Event": 7,
        "MsgId": "x",
        "Kind": None,
    }
    get = orjson.loads(encode(GetObject(ref=POD, depth=2, msg_id="x")))
    assert get["Event"] == 4
    assert get["BaseObject"] == ""
    patch = orjson.loads(encode(PatchObject(ref=POD, checksum="c", patch=b"{}", msg_id="x")))
    assert (patch["Event"], patch["Patch"], patch["Checksum"]) == (5, "{}", "c")
    deleted = orjson.loads(encode(ObjectDeleted(ref=POD, resource_version=4)))
    assert (deleted["Event"], deleted["ResourceVersion"]) == (2, 4)
    batch = orjson.loads(encode(_messages()[-1]))
    assert batch["Event"] == 8
    assert batch["BatchType"] == "reconciliation"
    assert set(batch["Items"]) == {
        "NewChecksum",
        "ObjectDeleted",
        "GetObject",
        "PatchObject",
        "PutObject",
    }
    assert batch["Items"]["NewChecksum"][0]["Checksum"] == "a"
    assert batch["Items"]["NewChecksum"][0]["Event"] == 0


# ------------------------------------------------------------------ key case


def _recase(doc: Any, how: str) -> Any:
    if isinstance(doc, list):
        return [_recase(item, how) for item in doc]
    if not isinstance(doc, dict):
        return doc
    out = {}
    for key, value in doc.items():
        if how == "lower":
            new = key.lower()
        elif how == "camel":
            new = key[0].lower() + key[1:]
        else:
            new = key.upper()
        out[new] = _recase(value, how)
    return out


@pytest.mark.parametrize("how", ["lower", "camel", "upper"])
@pytest.mark.parametrize("msg", _messages(), ids=lambda m: type(m).__name__)
def test_any_key_case_decodes(msg: Message, how: str) -> None:
    doc = _recase(to_wire(msg), how)
    assert decode(orjson.dumps(doc)) == msg


def test_camel_case_frame_as_a_go_peer_might_send() -> None:
    frame = (
        b'{"depth":2,"event":6,"msgId":"m","kind":{"group":"apps","version":"v1",'
        b'"resource":"deployments"},"name":"api","namespace":"prod","checksum":"c",'
        b'"object":"{\\"a\\":1}"}'
    )
    assert decode(frame) == PutObject(
        ref=DEPLOY, checksum="c", object=b'{"a":1}', depth=2, msg_id="m"
    )


def test_minimal_frames_use_defaults() -> None:
    kind = {"Group": "", "Version": "v1", "Resource": "pods"}
    doc = {"Event": 0, "Kind": kind, "Name": "web-1"}
    assert decode(orjson.dumps(doc)) == NewChecksum(ref=ObjectRef(PODS, "", "web-1"), checksum="")
    doc = {"Event": 4, "Kind": kind, "Name": "web-1", "Namespace": "default", "Depth": None}
    assert decode(orjson.dumps(doc)) == GetObject(ref=POD)
    assert decode(b'{"Event":7}') == Ping()


def test_integral_float_numbers_accepted() -> None:
    kind = {"Group": "", "Version": "v1", "Resource": "pods"}
    doc = {"Event": 2.0, "Depth": 3.0, "Kind": kind, "Name": "web-1", "ResourceVersion": 5.0}
    msg = decode(orjson.dumps(doc))
    assert msg == ObjectDeleted(ref=ObjectRef(PODS, "", "web-1"), resource_version=5, depth=3)


# ------------------------------------------------------------------ rejections

_KIND = {"Group": "", "Version": "v1", "Resource": "pods"}


_DROP = object()


def _put(**changes: Any) -> bytes:
    doc: dict[str, Any] = {
        "Depth": 1,
        "Event": 6,
        "MsgId": "m",
        "Kind": dict(_KIND),
        "Name": "web-1",
        "Namespace": "default",
        "Checksum": "c",
        "Object": '{"a":1}',
    }
    for key, value in changes.items():
        if value is _DROP:
            doc.pop(key)
        else:
            doc[key] = value
    return orjson.dumps(doc)


def test_valid_base_frame() -> None:
    assert isinstance(decode(_put()), PutObject)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"", "malformed"),
        (b"not json", "malformed"),
        (b'{"Event": 0', "malformed"),
        (b"\xff\xfe", "malformed"),
        (b"[]", "malformed"),
        (b'"text"', "malformed"),
        (b"42", "malformed"),
        (b"null", "malformed"),
        (b"{}", "malformed"),
        (_put(Event=_DROP), "malformed"),
        (_put(Event=None), "malformed"),
        (_put(Event=42), "unknown_event"),
        (_put(Event=-1), "unknown_event"),
        (_put(Event=1), "unknown_event"),
        (_put(Event=3), "unknown_event"),
        (_put(Event="6"), "malformed"),
        (_put(Event=6.5), "malformed"),
        (_put(Event=True), "malformed"),
        (_put(Depth=-1), "malformed"),
        (_put(Depth="1"), "malformed"),
        (_put(Kind=_DROP), "malformed"),
        (_put(Kind=None), "malformed"),
        (_put(Kind="/v1/pods"), "malformed"),
        (_put(Kind={"Group": "", "Version": "v1", "Resource": "Pods"}), "bad_kind"),
        (_put(Kind={"Group": "", "Version": "", "Resource": "pods"}), "bad_kind"),
        (_put(Kind={"Group": "a b", "Version": "v1", "Resource": "pods"}), "bad_kind"),
        (_put(Kind={"Group": "", "Version": "v1"}), "bad_kind"),
        (_put(Kind={"Group": 1, "Version": "v1", "Resource": "pods"}), "malformed"),
        (_put(Object="not json"), "malformed"),
        (_put(Object='{"a":'), "malformed"),
        (_put(Object=""), "malformed"),
        (_put(Object=_DROP), "malformed"),
        (_put(Object={"a": 1}), "malformed"),
        (_put(Name=_DROP), "malformed"),
        (_put(Name=""), "malformed"),
        (_put(Name=7), "malformed"),
        (_put(Namespace=7), "malformed"),
        (_put(MsgId=7), "malformed"),
        (_put(Checksum=["c"]), "malformed"),
        (_put(Event=5, Object=_DROP), "malformed"),
        (_put(Event=5, Patch="{"), "malformed"),
        (_put(Event=4, BaseObject="{"), "malformed"),
        (_put(Event=0, ResourceVersion="12"), "malformed"),
        (_put(Event=8, Items={"NewChecksum": {}}), "malformed"),
        (_put(Event=8, Items={"NewChecksum": [{"Name": "x"}]}), "malformed"),
        (_put(Event=8, Items={"PutObject": [{"Kind": _KIND, "Name": "x"}]}), "malformed"),
        (_put(Event=8, Kind=None, Items={}), "malformed"),
    ],
)
def test_rejections(frame: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode(frame)
    assert info.value.reason == reason
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 100])
def test_too_deep(depth: int) -> None:
    with pytest.raises(TooDeepError) as info:
        decode(_put(Depth=depth))
    assert info.value.reason == "too_deep"
    assert isinstance(info.value, DecodeError)
    with pytest.raises(TooDeepError):
        decode(orjson.dumps({"Event": 7, "Depth": depth}))


def test_max_depth_is_eight_and_accepted() -> None:
    assert MAX_DEPTH == 8
    msg = decode(_put(Depth=MAX_DEPTH))
    assert msg.depth == MAX_DEPTH


def test_payloads_are_kept_verbatim() -> None:
    text = '{ "b" : 2,\n "a" : [1, 2] }'
    msg = decode(_put(Object=text))
    assert isinstance(msg, PutObject)
    assert msg.object == text.encode()


def test_empty_base_object_means_none() -> None:
    msg = decode(_put(Event=4, BaseObject=""))
    assert msg == GetObject(ref=POD, depth=1, msg_id="m")
    assert decode(_put(Event=4, BaseObject=None)) == msg


@pytest.mark.parametrize(
    "changes",
    [
        {"Object": "not json"},
        {"Event": 5, "Patch": "{"},
        {"Event": 4, "BaseObject": "{"},
        {"Event": 8, "Items": {"PutObject": [{"Kind": _KIND, "Name": "x", "Object": "{"}]}},
    ],
    ids=["object", "patch", "base-object", "batch-item"],
)
def test_unchecked_payloads_pass_as_their_text(changes: dict[str, Any]) -> None:
    """A relay or a reader that parses each payload itself takes the text as it is; the
    default decode refuses the same frame."""
    frame = _put(**changes)
    with pytest.raises(DecodeError):
        decode(frame)
    msg = from_wire(orjson.loads(frame), check_payloads=False)
    items = msg.unrolled() if isinstance(msg, Batch) else (msg,)
    texts = [getattr(i, "object", None) or getattr(i, "patch", None) or i.base_object
             for i in items]  # fmt: skip
    assert texts == [b"not json" if "Object" in changes else b"{"]
    decoded, _ = decode_delivery(frame, check_payloads=False)
    assert decoded == msg
    env = orjson.dumps({"account": "a", "cluster": "c", "message": orjson.loads(frame)})
    assert decode_envelope(env, check_payloads=False).message == msg
    with pytest.raises(DecodeError):
        decode_envelope(env)


@pytest.mark.parametrize(
    "changes",
    [{"Object": ""}, {"Object": {"a": 1}}, {"Kind": {"Group": "", "Version": "v1"}}],
    ids=["empty-object", "object-not-text", "bad-kind"],
)
def test_unchecked_payloads_still_refuse_a_bad_frame(changes: dict[str, Any]) -> None:
    with pytest.raises(DecodeError):
        from_wire(orjson.loads(_put(**changes)), check_payloads=False)


_GO_ITEM = {"Kind": {**_KIND, "AdditionalProperties": None}, "Name": "web-1",
            "Namespace": "default", "Depth": 1, "MsgId": "m", "Checksum": "c", "Object": "{}"}


@pytest.mark.parametrize(
    "item",
    [
        _GO_ITEM,
        {**_GO_ITEM, "Event": 6, "Patch": "", "BaseObject": "", "ResourceVersion": 0},
        {key.lower(): value for key, value in _GO_ITEM.items()},
        {**_GO_ITEM, "Kind": {"group": "", "VERSION": "v1", "Resource": "pods"}},
        {**_GO_ITEM, "Depth": 1.0},
        {**_GO_ITEM, "Extra": [1, 2]},
    ],
    ids=["go", "go-with-zero-fields", "lower-case", "kind-other-case", "float-depth", "extra"],
)
def test_batch_items_in_any_spelling_decode_alike(item: dict[str, Any]) -> None:
    expected = PutObject(ref=POD, checksum="c", object=b"{}", depth=1, msg_id="m")
    for check in (True, False):
        batch = from_wire(
            {"Event": 8, "Kind": _KIND, "Items": {"PutObject": [item]}}, check_payloads=check
        )
        assert isinstance(batch, Batch)
        assert batch.put_object == (expected,)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"Name": ""}, "malformed"),
        ({"Name": None}, "malformed"),
        ({"Namespace": 3}, "malformed"),
        ({"Depth": True}, "malformed"),
        ({"Object": ""}, "malformed"),
        ({"Object": None}, "malformed"),
        ({"Checksum": 5}, "malformed"),
        ({"Kind": {"Group": "", "Version": "v1", "Resource": "Pods"}}, "bad_kind"),
        ({"Kind": {"Group": "", "Version": "v1", "Resource": ["pods"]}}, "malformed"),
        ({"Kind": "pods"}, "malformed"),
    ],
)
def test_bad_batch_items_are_refused(changes: dict[str, Any], reason: str) -> None:
    doc = {"Event": 8, "Kind": _KIND, "Items": {"PutObject": [{**_GO_ITEM, **changes}]}}
    for check in (True, False):
        with pytest.raises(DecodeError) as info:
            from_wire(doc, check_payloads=check)
        assert info.value.reason == reason


def test_unknown_fields_are_ignored() -> None:
    msg = decode(_put(Extra={"x": 1}, Patch="{", BaseObject="{"))
    assert isinstance(msg, PutObject)


# ------------------------------------------------------------------ reply metadata


def test_reply_meta() -> None:
    local = reply_meta(None)
    assert local.depth == 1
    assert local.msg_id and local.msg_id != reply_meta(None).msg_id
    cause = GetObject(ref=POD, depth=3, msg_id="chain")
    assert (reply_meta(cause).depth, reply_meta(cause).msg_id) == (4, "chain")
    anonymous = reply_meta(GetObject(ref=POD, depth=2))
    assert anonymous.depth == 3
    assert anonymous.msg_id


# ------------------------------------------------------------------ envelope


@pytest.mark.parametrize(
    "env",
    [
        Envelope("acme", "prod-1", _messages()[0]),
        Envelope("acme", "prod-1", _messages()[-1]),
        Envelope("acme", "prod-1", Ping(depth=1, msg_id="x")),
        Envelope("acme", "prod-1", None, CONTROL_CONNECTED),
        Envelope("acme", "prod-1", None, CONTROL_RECONCILE),
        Envelope("a.b c", "x*y>z", _messages()[7], CONTROL_RECONCILE),
    ],
)
def test_envelope_round_trip(env: Envelope) -> None:
    assert decode_envelope(encode_envelope(env)) == env


def test_envelope_message_is_in_wire_form() -> None:
    msg = _messages()[0]
    doc = orjson.loads(encode_envelope(Envelope("acme", "c1", msg)))
    assert doc == {"account": "acme", "cluster": "c1", "message": to_wire(msg)}


def _env(**fields: Any) -> bytes:
    doc: dict[str, Any] = {"account": "acme", "cluster": "c1", "control": "connected"}
    doc.update(fields)
    return orjson.dumps({k: v for k, v in doc.items() if v is not _DROP})


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"nope", "malformed"),
        (b"[1]", "malformed"),
        (_env(account=_DROP), "malformed"),
        (_env(account=""), "malformed"),
        (_env(account=3), "malformed"),
        (_env(cluster=_DROP), "malformed"),
        (_env(cluster=""), "malformed"),
        (_env(cluster=None), "malformed"),
        (_env(control="reboot"), "unknown_event"),
        (_env(control=["connected"]), "malformed"),
        (_env(control=1), "malformed"),
        (_env(control=_DROP), "malformed"),
        (_env(control=""), "malformed"),
        (_env(control=_DROP, message=None), "malformed"),
        (_env(message={"Event": 42}), "unknown_event"),
        (_env(message={"Event": 7, "Depth": 9}), "too_deep"),
        (_env(message="x"), "malformed"),
    ],
)
def test_envelope_rejections(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_envelope(data)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("text", "token"),
    [
        ("acme", "acme"),
        ("Prod-1_x", "Prod-1_x"),
        ("", "~"),
        ("a.b", "a~2eb"),
        ("a b", "a~20b"),
        ("*", "~2a"),
        (">", "~3e"),
        ("a~2eb", "a~7e2eb"),
        ("tab\there", "tab~09here"),
        ("a/b", "a~2fb"),
    ],
)
def test_subject_token(text: str, token: str) -> None:
    assert subject_token(text) == token


@pytest.mark.parametrize("text", ["a.b", "a b", "*", ">", "x.*.>", " ", "a\tb", "a\nb", "."])
def test_subject_token_has_no_separator_or_wildcard(text: str) -> None:
    token = subject_token(text)
    assert token
    for forbidden in (".", " ", "*", ">", "\t", "\n"):
        assert forbidden not in token


def test_subject_tokens_are_distinct_for_ascii_names() -> None:
    names = ["a.b", "a~2eb", "a_b", "a-b", "a b", "ab", "a*b", "a>b", "a~b"]
    assert len({subject_token(n) for n in names}) == len(names)


def test_subjects() -> None:
    assert up_subject("acme", "prod.eu") == "cs.up.acme.prod~2eeu.0"
    assert up_subject("acme", "prod", 7) == "cs.up.acme.prod.7"
    assert write_subject("acme", "c1") == "cs.write.acme.c1"
    assert down_subject("a*", "c>") == "cs.down.a~2a.c~3e"
    assert len(up_subject("x.y", "*").split(".")) == 5  # cs, up, account, cluster, partition
    for subject in (down_subject(">", " "), write_subject(".", ".")):
        assert len(subject.split(".")) == 4


def test_puts_of_a_batch_are_worded_as_a_lone_put_with_the_batch_kind() -> None:
    puts = tuple(
        PutObject(ref=ObjectRef(DEPLOY.kind, "prod", name), checksum="c" + name, object=OBJ,
                  depth=1, msg_id="m-1")
        for name in ("api", "web")
    )
    frame = encode(Batch(kind=DEPLOY.kind, put_object=puts, msg_id="b-1"))
    items = orjson.loads(frame)["Items"]["PutObject"]
    kind = {"Group": "apps", "Version": "v1", "Resource": "deployments",
            "AdditionalProperties": None}
    expected = [
        {"Depth": 1, "Event": 6, "MsgId": "m-1", "Kind": kind, "Name": name, "Namespace": "prod",
         "Checksum": "c" + name, "Object": OBJ.decode()}
        for name in ("api", "web")
    ]
    assert items == expected
    assert [list(item) for item in items] == [list(item) for item in expected]  # key order too


def test_batch_items_keep_each_its_own_kind() -> None:
    # Items repeat their kind; a kind read once must not stand in for a different one.
    deployments = {"Group": "apps", "Version": "v1", "Resource": "deployments"}
    items = [_GO_ITEM, {**_GO_ITEM, "Kind": deployments}, {**_GO_ITEM, "Kind": dict(_KIND)}]
    batch = from_wire({"Event": 8, "Kind": _KIND, "Items": {"PutObject": items}})
    assert isinstance(batch, Batch)
    assert [item.ref.kind for item in batch.put_object] == [PODS, DEPLOYMENTS, PODS]


def test_refused_item_kinds_are_not_remembered() -> None:
    # Items' kinds are looked up in a cache; an agent's junk must not fill it.
    before = codec._quick_kind.cache_info().currsize
    junk = {"Group": "x" * 100_000, "Version": "v1", "Resource": "Pods"}
    doc = {"Event": 8, "Kind": _KIND, "Items": {"PutObject": [{**_GO_ITEM, "Kind": junk}]}}
    with pytest.raises(DecodeError) as info:
        from_wire(doc)
    assert info.value.reason == "bad_kind"
    assert codec._quick_kind.cache_info().currsize == before
