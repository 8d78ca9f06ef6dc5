"""What travels on a Pulsar topic for one bus message, and what a received message delivers.

Messages are in kubescape's Pulsar encoding (:mod:`clustersync.protocol.pulsar_codec`) whenever
that can carry them exactly (:func:`kubescape_form`): ``data`` that is one of our envelopes and
makes one kubescape message which decodes back to the same envelope. Anything else is sent as the
raw bytes with ``clustersyncEncoding=raw`` and its subject in the ``subject`` property. On
delivery (:func:`kubescape_envelopes`) a kubescape message is decoded and handed on as
:func:`~clustersync.protocol.envelope.encode_envelope` bytes, so handlers only ever see our
envelope format; a kubescape message that does not decode is delivered raw, unchanged, so the
ingester's dead-letter path parks it with the decoder's complaint instead of it vanishing.

A message without a ``subject`` property (a kubescape component's, or ours where the properties
tell it) gets its subject from its properties (:func:`routed_subject`), so that each durable can
tell its own messages without decoding everyone's, else from its decoded content.

Versions: ``Delivery.seq`` is built from the message id (:func:`message_seq`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from clustersync.adapters.bus.base import BusError, subject_matches
from clustersync.model import Kind, KindError, ObjectRef
from clustersync.protocol.codec import DecodeError
from clustersync.protocol.envelope import (
    Envelope,
    decode_envelope,
    down_subject,
    encode_envelope,
    partition_of,
    up_subject,
)
from clustersync.protocol.messages import ObjectDeleted
from clustersync.protocol.pulsar_codec import (
    EVENT_CONNECTED_CLIENTS,
    EVENT_DELETE,
    EVENT_GET,
    EVENT_PATCH,
    EVENT_PUT,
    EVENT_RECONCILIATION,
    EVENT_SERVER_CONNECTED,
    EVENT_VERIFY,
    PROP_ACCOUNT,
    PROP_CLUSTER,
    PROP_EVENT,
    PROP_GROUP,
    PROP_NAME,
    PROP_NAMESPACE,
    PROP_RESOURCE,
    PROP_VERSION,
    decode_pulsar_all,
    encode_pulsar_all,
)
from clustersync.protocol.pulsar_codec import PulsarMessage as KubescapeMessage

log = logging.getLogger(__name__)

FAMILY_IN = "in"
FAMILY_DOWN = "down"
FAMILY_OTHER = "other"
FAMILIES = (FAMILY_IN, FAMILY_DOWN, FAMILY_OTHER)
# The second token of a ``cs.`` subject names its family.
_FAMILY_OF_TOKEN = {"up": FAMILY_IN, "write": FAMILY_IN, "down": FAMILY_DOWN}

SUBJECT_PROPERTY = "subject"
ENCODING_PROPERTY = "clustersyncEncoding"
ENCODING_KUBESCAPE = "kubescape"
ENCODING_RAW = "raw"

_OBJECT_EVENTS = frozenset({EVENT_GET, EVENT_PATCH, EVENT_VERIFY, EVENT_DELETE, EVENT_PUT})
# Messages about a whole cluster: delivered on its partition 0, as our server publishes controls.
_CLUSTER_EVENTS = frozenset({EVENT_SERVER_CONNECTED, EVENT_RECONCILIATION, EVENT_CONNECTED_CLIENTS})

ENTRY_BITS = 24
"""Bits of a seq that hold the entry id within a ledger. A broker rolls a ledger over after
``managedLedgerMaxEntriesPerLedger`` entries (50,000 by default), far below 2**24."""


def message_seq(ledger_id: int, entry_id: int) -> int:
    """The seq of a message from its id: ``((ledger_id << ENTRY_BITS) | entry_id) + 1``.

    Within one non-partitioned topic this grows with every message: entries count up within a
    ledger and a topic's next ledger always has a larger id (ledger ids come from one
    cluster-wide counter, which also outlives the topic). The ``+ 1`` keeps seqs positive
    (ledger 0, entry 0 exists). Batching is off, so a message is a whole entry (or, chunked, the
    id of its last chunk) and needs no batch index bits."""
    if ledger_id < 0 or entry_id < 0:
        raise BusError(f"message id ({ledger_id}, {entry_id}) has no seq")
    if entry_id >= 1 << ENTRY_BITS:
        # Only if the broker is configured for giant ledgers; seqs would then collide.
        log.error("entry id %d in ledger %d exceeds %d bits", entry_id, ledger_id, ENTRY_BITS)
    seq = ((ledger_id << ENTRY_BITS) | entry_id) + 1
    if seq >= 1 << 63:
        raise BusError(f"message id ({ledger_id}, {entry_id}) exceeds a 63-bit version")
    return seq


def subject_family(subject: str) -> str:
    tokens = subject.split(".")
    if len(tokens) >= 2 and tokens[0] == "cs":
        return _FAMILY_OF_TOKEN.get(tokens[1], FAMILY_OTHER)
    return FAMILY_OTHER


def filter_families(subject_filter: str) -> list[str]:
    """The families holding at least one subject that ``subject_filter`` matches."""
    tokens = subject_filter.split(".")
    first = tokens[0]
    if first == ">":
        return list(FAMILIES)
    if first not in ("cs", "*"):
        return [FAMILY_OTHER]
    if len(tokens) == 1:
        return [FAMILY_OTHER]  # "cs" or "*": single-token subjects only
    second = tokens[1]
    if second in ("*", ">"):
        return list(FAMILIES)
    family = _FAMILY_OF_TOKEN.get(second, FAMILY_OTHER)
    if first == "*" and family != FAMILY_OTHER:
        return [family, FAMILY_OTHER]  # e.g. "x.up" matches too
    return [family]


def is_up(subject: str) -> bool:
    return subject.startswith("cs.up.")


# ---------------------------------------------------------------- the wire format


def kubescape_form(
    data: bytes, *, now: datetime | None = None
) -> tuple[Envelope, KubescapeMessage] | None:
    """The envelope in ``data`` and its one kubescape message, if the encoding carries it
    exactly (it decodes back to the same envelope); else None."""
    try:
        env = decode_envelope(data)
    except Exception:  # not an envelope, whatever the decoder makes of it: any bytes publish
        return None
    try:
        messages = encode_pulsar_all(env, now=now)
    except ValueError:  # no kubescape form
        return None
    if len(messages) != 1:
        return None  # one bus message must stay one Pulsar message with one seq
    (message,) = messages
    try:
        # The connect details travel in the ConnectedClients report beside it, not in here.
        same = decode_pulsar_all(message.payload, message.properties) == [replace(env, client=())]
    except DecodeError:
        same = False
    return (env, message) if same else None


def is_kubescape(properties: Mapping[str, str]) -> bool:
    """Whether a message is in kubescape's encoding: marked so by us, or unmarked and carrying
    kubescape's ``event`` property (a kubescape component wrote it)."""
    encoding = properties.get(ENCODING_PROPERTY)
    if encoding is None:
        return PROP_EVENT in properties
    return encoding == ENCODING_KUBESCAPE


def kubescape_envelopes(data: bytes, properties: Mapping[str, str]) -> list[Envelope] | None:
    """The envelopes in a kubescape-encoded message; None for one to deliver raw: not in that
    encoding (marked raw, or foreign without an ``event``), or not decodable."""
    encoding = properties.get(ENCODING_PROPERTY)
    if not is_kubescape(properties):
        if encoding not in (None, ENCODING_RAW):
            log.warning("Pulsar message in unknown encoding %r: delivered raw", encoding)
        return None
    try:
        return decode_pulsar_all(data, properties)
    except DecodeError as exc:
        log.warning(
            "undecodable kubescape message (%s) on %s: delivered raw: %s",
            properties.get(PROP_EVENT, ""),
            properties.get(SUBJECT_PROPERTY, "?"),
            exc,
        )
        return None


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One Pulsar message to send."""

    topic: str
    payload: bytes
    properties: dict[str, str]
    key: str
    report: bool = False  # informs only (ConnectedClients): losing it must not fail the publish


@dataclass(frozen=True, slots=True)
class Incoming:
    """What a received message delivers: ``(subject, data)`` pairs, in order (none for a
    message that asks nothing, e.g. ConnectedClients; several for a multi-kind reconciliation
    request or a request batch)."""

    items: list[tuple[str, bytes]]
    fallback_subject: str  # for routing and logs when ``items`` is empty


def deliver_raw_or_decoded(data: bytes, properties: Mapping[str, str], subject: str) -> Incoming:
    envelopes = kubescape_envelopes(data, properties)
    if envelopes is None:
        return Incoming([(subject, data)], subject)
    return Incoming([(subject, encode_envelope(env)) for env in envelopes], subject)


def foreign_identity(properties: Mapping[str, str]) -> tuple[str, str]:
    # "_" keeps the subject well-formed for a message that names no identity at all.
    return properties.get(PROP_ACCOUNT) or "_", properties.get(PROP_CLUSTER) or "_"


def _property_ref(properties: Mapping[str, str]) -> ObjectRef | None:
    """The object an object message's properties name (kubescape sets all five)."""
    name = properties.get(PROP_NAME)
    if not name:
        return None
    try:
        kind = Kind(properties[PROP_GROUP], properties[PROP_VERSION], properties[PROP_RESOURCE])
    except (KeyError, KindError):
        return None
    return ObjectRef(kind, properties.get(PROP_NAMESPACE, ""), name)


def routed_subject(properties: Mapping[str, str], *, up: bool) -> str | None:
    """The subject of a message without a ``subject`` property, from its properties alone (no
    decoding), or None when they do not tell: kubescape's server-to-backend traffic is our up
    direction, on the partition our server would have published it on."""
    account, cluster = properties.get(PROP_ACCOUNT), properties.get(PROP_CLUSTER)
    if not (account and cluster):
        return None  # e.g. a ReconciliationRequestBatch: each request names its own cluster
    if not up:
        return down_subject(account, cluster)
    event = properties.get(PROP_EVENT)
    if event in _CLUSTER_EVENTS:
        return up_subject(account, cluster, 0)
    ref = _property_ref(properties) if event in _OBJECT_EVENTS else None
    if ref is None:
        return None
    return up_subject(account, cluster, partition_of(ObjectDeleted(ref=ref)))


def derived_subject(env: Envelope, properties: Mapping[str, str], *, up: bool) -> str:
    """The subject a message without a ``subject`` property is delivered on: what its
    properties say (so that a durable can tell without decoding, see ``may_match``), else what
    its content says."""
    routed = routed_subject(properties, up=up)
    if routed is not None:
        return routed
    if up:
        return up_subject(env.account, env.cluster, partition_of(env.message))
    return down_subject(env.account, env.cluster)


def may_match_foreign(subject_filter: str, properties: Mapping[str, str], *, up: bool) -> bool:
    routed = routed_subject(properties, up=up)
    if routed is not None:
        return subject_matches(subject_filter, routed)
    return (FAMILY_IN if up else FAMILY_DOWN) in filter_families(subject_filter)


def up_topic(topic: str) -> bool:
    return not topic.endswith(f"-{FAMILY_DOWN}")


def foreign(data: bytes, properties: Mapping[str, str], *, up: bool) -> Incoming:
    """A message without a ``subject`` property: each envelope gets its subject from its own
    identity (a ReconciliationRequestBatch spans clusters)."""
    account, cluster = foreign_identity(properties)
    # Undecodable, it goes where its properties say (as may_match predicted), so exactly one
    # durable of a partitioned set still gets it for the dead-letter path.
    fallback = routed_subject(properties, up=up) or (
        up_subject(account, cluster) if up else down_subject(account, cluster)
    )
    envelopes = kubescape_envelopes(data, properties)
    if envelopes is None:
        return Incoming([(fallback, data)], fallback)
    items = [(derived_subject(env, properties, up=up), encode_envelope(env)) for env in envelopes]
    return Incoming(items, items[0][0] if items else fallback)


def is_report(properties: Mapping[str, str]) -> bool:
    """A message that informs and asks nothing (ConnectedClients)."""
    return properties.get(PROP_EVENT) == EVENT_CONNECTED_CLIENTS
