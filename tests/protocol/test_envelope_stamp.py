"""The server's publish time on an envelope (``at``): carried through the bus encoding, checked,
and not part of what the envelope says."""

from __future__ import annotations

import orjson
import pytest

from clustersync.model import Kind, ObjectRef
from clustersync.protocol.codec import DecodeError
from clustersync.protocol.envelope import Envelope, decode_envelope, encode_envelope
from clustersync.protocol.messages import ObjectDeleted

REF = ObjectRef(Kind("", "v1", "pods"), "shop", "web")


def test_the_publish_time_round_trips_and_is_not_identity() -> None:
    env = Envelope("acme", "c1", ObjectDeleted(ref=REF, depth=1, msg_id="m"), at=1700000000.25)
    back = decode_envelope(encode_envelope(env))
    assert back.at == 1700000000.25
    assert back == Envelope("acme", "c1", ObjectDeleted(ref=REF, depth=1, msg_id="m"))
    assert "at" not in orjson.loads(encode_envelope(Envelope("acme", "c1", control="reconcile")))


@pytest.mark.parametrize("at", ["soon", True, None, [1]])
def test_a_publish_time_that_is_not_a_number_is_refused(at: object) -> None:
    doc = {"account": "acme", "cluster": "c1", "control": "reconcile", "at": at}
    if at is None:  # JSON null reads as absent
        assert decode_envelope(orjson.dumps(doc)).at == 0.0
        return
    with pytest.raises(DecodeError, match="epoch seconds"):
        decode_envelope(orjson.dumps(doc))
