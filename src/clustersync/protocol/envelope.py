"""How messages travel on the backend's bus, and which subjects they use.

An envelope tags a protocol message with the account and cluster it belongs to; that identity is
set by the server from the agent's verified token, never taken from the agent's payload.
Subjects: ``cs.up.<account>.<cluster>.<partition>`` (agent to backend),
``cs.write.<account>.<cluster>`` (writes authored by the backend API),
``cs.down.<account>.<cluster>`` (backend to agent) and ``cs.report.<account>.<cluster>`` (what
agents and servers report: synced kinds, write outcomes).
"""

from __future__ import annotations

import base64
import zlib
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from clustersync.protocol.codec import DecodeError, TooDeepError, from_wire, to_wire
from clustersync.protocol.messages import (
    MAX_DEPTH,
    Ack,
    AgentInfo,
    Batch,
    Message,
    Ping,
    Report,
    SyncProgress,
    WriteOutcome,
)

CONTROL_CONNECTED = "connected"  # an agent connected: the ingester answers with reconciliation
CONTROL_RECONCILE = "reconcile"  # periodic reconciliation request for a connected agent
# On a cluster's report subject: a server replica's facts about that cluster's connection, in
# ``client`` (see runtime/status_report.py); the ingester keeps them for the fleet status.
CONTROL_LINK = "link"
CONTROLS = frozenset({CONTROL_CONNECTED, CONTROL_RECONCILE, CONTROL_LINK})


@dataclass(frozen=True, slots=True)
class Envelope:
    account: str
    cluster: str
    message: Message | None = None
    control: str = ""
    # With CONTROL_CONNECTED: what the agent said of itself at connect (synchronizerVersion,
    # helmVersion, gitVersion, cloudProvider, connectionId, connectionTime), sorted pairs so
    # the envelope stays hashable; kubescape's Pulsar backend reads it from ConnectedClients.
    client: tuple[tuple[str, str], ...] = ()
    report: Report | None = None
    # Epoch seconds at which the server published an agent's message: the ingester's sync lag.
    # Metadata, not part of what the envelope says: equal envelopes may differ in it (Pulsar's
    # kubescape encoding, checked by round trip, does not carry it).
    at: float = field(default=0.0, compare=False)


def encode_envelope(env: Envelope) -> bytes:
    doc: dict[str, Any] = {"account": env.account, "cluster": env.cluster}
    if env.message is not None:
        doc["message"] = to_wire(env.message)
    if env.control:
        doc["control"] = env.control
    if env.client:
        doc["client"] = dict(env.client)
    if env.report is not None:
        doc["report"] = to_wire(env.report)
    if env.at:
        doc["at"] = env.at
    return orjson.dumps(doc)


def encode_relayed(account: str, cluster: str, frame: bytes, at: float) -> bytes:
    """The envelope of an agent's frame as the server forwards it: the frame's own JSON text,
    spliced in as it came, with ``hop`` saying that it is one level deeper than it reads (what
    ``backend.bridge_hop`` does to a decoded message). Decoding a relayed frame only to encode
    it again was a third of a server's time on an initial sync. ``frame`` must be a JSON
    object that decodes as a message (the server has decoded it to route it)."""
    head = orjson.dumps({"account": account, "cluster": cluster, "at": at, "hop": 1})
    return b"".join((head[:-1], b',"message":', frame, b"}"))


def _hop(doc: dict[str, Any]) -> int:
    hop = doc.get("hop", 0)
    if hop is None:
        return 0
    if type(hop) is not int or hop not in (0, 1):
        raise DecodeError(f"hop must be 0 or 1, got {hop!r}")
    return hop


def decode_envelope(data: bytes, *, check_payloads: bool = True) -> Envelope:
    """The envelope in ``data``; ``check_payloads=False`` leaves the message's JSON payloads
    unparsed, for a reader that parses (and refuses) each itself (see ``codec.from_wire``)."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"bus message is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise DecodeError("bus message is not a JSON object")
    account, cluster = doc.get("account"), doc.get("cluster")
    if not isinstance(account, str) or not account or not isinstance(cluster, str) or not cluster:
        raise DecodeError("bus message without account and cluster")
    control = doc.get("control", "")
    if not isinstance(control, str):
        raise DecodeError("control must be a string")
    if control and control not in CONTROLS:
        raise DecodeError(f"unknown control {control!r}", "unknown_event")
    raw = doc.get("message")
    message = None if raw is None else from_wire(raw, check_payloads=check_payloads)
    hop = _hop(doc)
    if hop and message is not None:
        if message.depth + hop > MAX_DEPTH:
            raise TooDeepError(message.depth + hop)
        message = replace(message, depth=message.depth + hop)
    if isinstance(message, Ack | AgentInfo | WriteOutcome | SyncProgress):
        raise DecodeError(f"a {message.event.name} frame cannot travel as a message")
    report = from_wire(doc["report"]) if doc.get("report") is not None else None
    if report is not None and not isinstance(report, AgentInfo | WriteOutcome | SyncProgress):
        raise DecodeError(f"a {report.event.name} frame is not a report")
    if message is None and not control and report is None:
        raise DecodeError("bus message carries neither a message, a control nor a report")
    client = doc.get("client") or {}
    if not isinstance(client, dict) or not all(isinstance(v, str) for v in client.values()):
        raise DecodeError("client must map names to strings")
    at = doc.get("at")
    at = 0.0 if at is None else at
    if not isinstance(at, int | float) or isinstance(at, bool):
        raise DecodeError("at must be a number of epoch seconds")
    pairs = tuple(sorted(client.items()))
    return Envelope(account, cluster, message, control, pairs, report, float(at))


_KEPT = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def subject_token(text: str) -> str:
    """``text`` as one subject token, injectively: distinct texts never share a token.

    ASCII letters, digits, ``-`` and ``_`` stay; every other character becomes its UTF-8 bytes,
    each written ``~hh`` (always two lowercase hex digits, so an escape is self-delimiting, and
    ``~`` itself is escaped). The empty text is ``~``, which no other text produces. The result
    is printable ASCII without ``.``, ``*``, ``>``, ``/``, ``\\`` or whitespace: a valid NATS
    subject token and consumer name."""
    if not text:
        return "~"
    return "".join(ch if ch in _KEPT else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    # surrogatepass: a lone surrogate (possible in a Python str) still has one byte sequence.
    return "".join(f"~{byte:02x}" for byte in ch.encode("utf-8", "surrogatepass"))


def durable_token(text: str) -> str:
    """Like :func:`subject_token`, without ``-`` (written ``~2d``, an escape the subject token
    never produces), so that tokens joined by ``-`` in a durable name stay apart."""
    return subject_token(text).replace("-", "~2d")


def down_durable(account: str, cluster: str) -> str:
    """The durable through which a server replica delivers ``cs.down`` to a cluster's agent:
    one per cluster, never shared by two (``a-b``/``c`` and ``a``/``b-c`` differ)."""
    return f"down-{durable_token(account)}-{durable_token(cluster)}"


UP_PARTITIONS = 16
"""Agent traffic of one cluster is spread over this many subjects, so consumers can work on
several objects at once while every object keeps its order (it always maps to one partition)."""


def partition_of(msg: Message | None) -> int:
    if msg is None or isinstance(msg, Ping):
        return 0
    key = (
        str(msg.kind)
        if isinstance(msg, Batch)
        else f"{msg.ref.kind}/{msg.ref.namespace}/{msg.ref.name}"
    )
    return zlib.crc32(key.encode()) % UP_PARTITIONS


def up_subject(account: str, cluster: str, partition: int = 0) -> str:
    return f"cs.up.{subject_token(account)}.{subject_token(cluster)}.{partition}"


def write_subject(account: str, cluster: str) -> str:
    return f"cs.write.{subject_token(account)}.{subject_token(cluster)}"


def down_subject(account: str, cluster: str) -> str:
    return f"cs.down.{subject_token(account)}.{subject_token(cluster)}"


def report_subject(account: str, cluster: str) -> str:
    return f"cs.report.{subject_token(account)}.{subject_token(cluster)}"


REPORT_FILTER = "cs.report.>"


DEAD_SUBJECT = "cs.dead"
"""Where processes without a store (servers) send messages they cannot handle; the ingester
parks them in the dead-letter table."""
DEAD_FILTER = "cs.dead"


def encode_dead_letter(subject: str, data: bytes, reason: str) -> bytes:
    return orjson.dumps(
        {"subject": subject, "reason": reason, "data": base64.b64encode(data).decode()}
    )


def decode_dead_letter(data: bytes) -> tuple[str, bytes, str]:
    """(original subject, original data, reason) of a message sent to :data:`DEAD_SUBJECT`."""
    try:
        doc = orjson.loads(data)
        return str(doc["subject"]), base64.b64decode(doc["data"], validate=True), str(doc["reason"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DecodeError(f"dead letter is not well formed: {exc}") from None


UP_FILTER = "cs.up.>"


def up_partition_filter(partition: int) -> str:
    return f"cs.up.*.*.{partition}"


WRITE_FILTER = "cs.write.>"
