"""An agent's frame relayed by the server as it came (``encode_relayed``): it reads back as the
message one hop deeper, whatever the frame's spelling, and a bad hop is refused."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
import pytest

from clustersync.model import Kind, ObjectRef
from clustersync.protocol.codec import DecodeError, TooDeepError, encode
from clustersync.protocol.envelope import Envelope, decode_envelope, encode_relayed
from clustersync.protocol.messages import (
    MAX_DEPTH,
    Batch,
    GetObject,
    Message,
    NewChecksum,
    ObjectDeleted,
    PatchObject,
    PutObject,
)

PODS = Kind("", "v1", "pods")
REF = ObjectRef(PODS, "shop", "web")
OBJ = b'{"kind":"Pod","metadata":{"name":"web","namespace":"shop"}}'

MESSAGES: list[Message] = [
    PutObject(ref=REF, checksum="c", object=OBJ, depth=1, msg_id="m"),
    PatchObject(ref=REF, checksum="c", patch=b'{"spec":null}', depth=3, msg_id="m"),
    NewChecksum(ref=REF, checksum="c", resource_version=7),
    ObjectDeleted(ref=REF, resource_version=9, depth=2, msg_id="m"),
    GetObject(ref=REF, depth=1, msg_id="m"),
    Batch(
        kind=PODS,
        put_object=(
            PutObject(ref=REF, checksum="a", object=OBJ, depth=1, msg_id="p1"),
            PutObject(ref=replace(REF, name="db"), checksum="b", object=b"{}", msg_id="p2"),
        ),
        patch_object=(PatchObject(ref=REF, checksum="d", patch=b"{}", depth=2, msg_id="q"),),
        depth=1,
        msg_id="b",
    ),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_a_relayed_frame_reads_as_the_message_one_hop_deeper(msg: Message) -> None:
    data = encode_relayed("acme", "c1", encode(msg), 1700000000.5)
    for check in (True, False):
        env = decode_envelope(data, check_payloads=check)
        assert env == Envelope("acme", "c1", replace(msg, depth=msg.depth + 1))
        assert env.at == 1700000000.5


def test_a_frame_in_another_spelling_relays_alike() -> None:
    def lowered(value: Any) -> Any:
        if isinstance(value, dict):
            return {key.lower(): lowered(item) for key, item in value.items()}
        if isinstance(value, list):
            return [lowered(item) for item in value]
        return value

    msg = MESSAGES[-1]
    frame = orjson.dumps(lowered(orjson.loads(encode(msg))), option=orjson.OPT_INDENT_2)
    env = decode_envelope(encode_relayed("acme", "c1", frame, 1.0))
    assert env.message == replace(msg, depth=msg.depth + 1)


def test_the_hop_may_not_pass_the_depth_limit() -> None:
    msg = PutObject(ref=REF, checksum="c", object=OBJ, depth=MAX_DEPTH, msg_id="m")
    with pytest.raises(TooDeepError):
        decode_envelope(encode_relayed("acme", "c1", encode(msg), 1.0))


@pytest.mark.parametrize("hop", [2, -1, "1", True, 1.0, [1]])
def test_a_hop_other_than_zero_or_one_is_refused(hop: object) -> None:
    msg = MESSAGES[0]
    doc = {"account": "acme", "cluster": "c1", "hop": hop, "message": orjson.loads(encode(msg))}
    with pytest.raises(DecodeError, match="hop"):
        decode_envelope(orjson.dumps(doc))


def test_without_a_hop_the_message_keeps_its_depth() -> None:
    msg = MESSAGES[0]
    for hop in (0, None):
        doc = {"account": "a", "cluster": "c", "hop": hop, "message": orjson.loads(encode(msg))}
        assert decode_envelope(orjson.dumps(doc)).message == msg
