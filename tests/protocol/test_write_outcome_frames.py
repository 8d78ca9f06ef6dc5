"""The extension frames of honest write outcomes: what the agent says it syncs (101) and what
became of a backend write (102), on the websocket and on the bus."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from clustersync.model import Kind, ObjectRef
from clustersync.protocol.codec import DecodeError, decode, encode
from clustersync.protocol.envelope import (
    Envelope,
    decode_envelope,
    encode_envelope,
    report_subject,
)
from clustersync.protocol.messages import (
    AgentInfo,
    ObjectDeleted,
    PutObject,
    SyncedKind,
    WriteOutcome,
    WriteStatus,
)
from clustersync.protocol.outcomes import may_replace, status_for_api_error, write_id

CONFIGMAPS = Kind("", "v1", "configmaps")
REF = ObjectRef(CONFIGMAPS, "shop", "settings")
KIND_WIRE = {"Group": "", "Version": "v1", "Resource": "configmaps", "AdditionalProperties": None}


def test_agent_info_wire_form() -> None:
    info = AgentInfo(kinds=(SyncedKind(CONFIGMAPS, True),))
    assert orjson.loads(encode(info)) == {
        "Depth": 0,
        "Event": 101,
        "MsgId": "",
        "Kinds": [{**KIND_WIRE, "Namespaced": True}],
    }


def test_write_outcome_wire_form() -> None:
    outcome = WriteOutcome(ref=REF, status=WriteStatus.NOT_FOUND, reason="absent", msg_id="w-1")
    assert orjson.loads(encode(outcome)) == {
        "Depth": 0,
        "Event": 102,
        "MsgId": "w-1",
        "Kind": KIND_WIRE,
        "Name": "settings",
        "Namespace": "shop",
        "Status": "not_found",
        "Reason": "absent",
    }


def _outcome(**overrides: Any) -> bytes:
    doc = {"Event": 102, "MsgId": "w-1", "Kind": KIND_WIRE, "Name": "n", "Status": "applied"}
    doc.update(overrides)
    return orjson.dumps({k: v for k, v in doc.items() if v is not None})


@pytest.mark.parametrize(
    ("frame", "needle"),
    [
        (_outcome(Status="done"), "unknown write status"),
        (_outcome(Status="pending"), "cannot be pending"),
        (_outcome(MsgId=None), "without MsgId"),
        (_outcome(Name=None), "without Kind and Name"),
        (_outcome(Reason="x" * 9000), "Reason longer"),
        (_outcome(Reason=5), "Reason must be a string"),
        (b'{"Event": 101}', "Kinds must be a list"),
        (b'{"Event": 101, "Kinds": {"a": 1}}', "Kinds must be a list"),
        (
            b'{"Event": 101, "Kinds": [{"Version": "v1", "Resource": "x", "Namespaced": 1}]}',
            "Namespaced must be",
        ),
        (b'{"Event": 101, "Kinds": [{"Resource": "x"}]}', "version"),
    ],
)
def test_bad_extension_frames_are_refused(frame: bytes, needle: str) -> None:
    with pytest.raises(DecodeError, match=needle):
        decode(frame)


def test_reports_travel_on_the_bus_under_their_own_key() -> None:
    outcome = WriteOutcome(ref=REF, status=WriteStatus.REFUSED, reason="no", msg_id="w-1")
    env = Envelope("acct", "c1", report=outcome)
    assert decode_envelope(encode_envelope(env)) == env
    assert report_subject("acct", "c1") == "cs.report.acct.c1"
    # A report is never an object message, and an object message never a report.
    doc = orjson.loads(encode_envelope(env))
    with pytest.raises(DecodeError, match="cannot travel as a message"):
        decode_envelope(orjson.dumps({"account": "a", "cluster": "c", "message": doc["report"]}))
    put = orjson.loads(encode(PutObject(ref=REF, checksum="", object=b"{}")))
    with pytest.raises(DecodeError, match="is not a report"):
        decode_envelope(orjson.dumps({"account": "a", "cluster": "c", "report": put}))


def test_only_puts_and_deletes_from_the_api_are_backend_writes() -> None:
    assert write_id(PutObject(ref=REF, checksum="", object=b"{}", msg_id="w")) == "w"
    assert write_id(ObjectDeleted(ref=REF, msg_id="w")) == "w"
    # As the agent receives it: one level deeper after the server's hop.
    assert write_id(ObjectDeleted(ref=REF, depth=1, msg_id="w")) == "w"
    # A reply in a chain (the backend answering the agent's GetObject) is not a write.
    assert write_id(PutObject(ref=REF, checksum="", object=b"{}", depth=2, msg_id="w")) is None
    assert write_id(ObjectDeleted(ref=REF)) is None


@pytest.mark.parametrize(
    ("current", "new", "allowed"),
    [
        ("pending", "sent", True),
        ("pending", "applied", True),
        ("pending", "pending", False),
        ("sent", "applied", True),
        ("sent", "sent", False),
        ("sent", "pending", False),
        ("applied", "refused", False),
        ("refused", "applied", False),
        ("not_found", "applied", False),
        ("failed", "applied", False),
    ],
)
def test_outcomes_only_move_forward(current: str, new: str, allowed: bool) -> None:
    assert may_replace(WriteStatus(current), WriteStatus(new)) is allowed


@pytest.mark.parametrize(
    ("http_status", "status"),
    [
        (404, "refused"),  # e.g. namespaces "nowhere" not found
        (422, "refused"),  # validation
        (403, "refused"),  # RBAC, or an admission webhook's denial
        (400, "refused"),
        (409, "failed"),  # conflicts the agent retried and still lost
        (429, "failed"),
        (500, "failed"),
        (0, "failed"),  # no answer at all
    ],
)
def test_api_server_errors_as_outcomes(http_status: int, status: str) -> None:
    assert status_for_api_error(http_status) is WriteStatus(status)
