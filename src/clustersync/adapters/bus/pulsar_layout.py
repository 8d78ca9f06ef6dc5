"""Where the Pulsar bus puts each subject, and how a message comes back to its subject.

Two layouts, chosen per deployment (``layout=`` in the bus URL, see :func:`parse_pulsar_url`):

``kubescape`` (the default): kubescape's own layout
    ONE persistent topic carries both directions, and the message key tells them apart, as the Go
    server does it: everything the server bridges up from agents (``cs.up.*``) has the key
    :data:`~clustersync.protocol.pulsar_codec.SERVER_PRODUCER_KEY`; what the backend sends down
    (``cs.down.*``) has the key ``<account>/<cluster>``. A Go server reading the topic skips the
    server key and delivers the rest, and a Go backend reading it gets the server's messages
    exactly as a Go server writes them (payload, properties and key). Our own traffic that no
    kubescape component should act on (``cs.write.*`` backend writes, ``cs.dead`` and any other
    subject) travels raw, with its subject in the ``subject`` property and no ``event`` or
    identity properties, so a Go server ignores it. Subscriptions are Failover: all up traffic
    shares one key, so Key_Shared could not spread it anyway, and Failover is the subscription
    type Pulsar supports chunked messages on.

``split``: clustersync's own layout, for deployments without kubescape components
    Three topics per prefix: ``<prefix>-in`` (``cs.up.*`` and ``cs.write.*``), ``<prefix>-down``
    and ``<prefix>-other``; each message carries its subject as key and ``subject`` property;
    Key_Shared subscriptions give per-subject order across a durable's consumers.

Versions: ``Delivery.seq`` is built from the message id (:func:`message_seq`). Ledger ids come
from one cluster-wide counter, so within a topic the seq grows with every message, including
across the deletion and re-creation of the topic (its new ledger has a larger id than any before).
The kubescape layout puts every compared subject on one topic; the split layout puts up and write
on one topic, while ``cs.down`` seqs (never compared with them) live on another.

Wire format
-----------
Messages are in kubescape's Pulsar encoding (:mod:`clustersync.protocol.pulsar_codec`) whenever
that can carry them exactly (:func:`kubescape_form`): ``data`` that is one of our envelopes and
makes one kubescape message which decodes back to the same envelope. Anything else is sent as the
raw bytes with ``clustersyncEncoding=raw``. On delivery (:func:`kubescape_envelopes`) a kubescape
message is decoded and handed on as :func:`~clustersync.protocol.envelope.encode_envelope` bytes,
so handlers only ever see our envelope format; a kubescape message that does not decode is
delivered raw, unchanged, so the ingester's dead-letter path parks it with the decoder's
complaint instead of it vanishing.
"""

from __future__ import annotations

import logging
import socket
import urllib.parse
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol

from clustersync.adapters.bus.base import BusError, subject_matches
from clustersync.model import Kind, KindError, ObjectRef
from clustersync.protocol.codec import DecodeError
from clustersync.protocol.envelope import (
    CONTROL_CONNECTED,
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
    SERVER_PRODUCER_KEY,
    ConnectedClient,
    ConnectedClients,
    decode_pulsar_all,
    encode_connected_clients,
    encode_pulsar_all,
    format_timestamp,
    message_key,
)
from clustersync.protocol.pulsar_codec import PulsarMessage as KubescapeMessage

log = logging.getLogger(__name__)

SUBJECT_PROPERTY = "subject"
ENCODING_PROPERTY = "clustersyncEncoding"
ENCODING_KUBESCAPE = "kubescape"
ENCODING_RAW = "raw"

LAYOUT_KUBESCAPE = "kubescape"
LAYOUT_SPLIT = "split"
DEFAULT_TOPIC = "persistent://public/default/synchronizer"
DEFAULT_TOPIC_PREFIX = "persistent://public/default/clustersync"

FAMILY_IN = "in"
FAMILY_DOWN = "down"
FAMILY_OTHER = "other"
FAMILIES = (FAMILY_IN, FAMILY_DOWN, FAMILY_OTHER)
# The second token of a ``cs.`` subject names its family.
_FAMILY_OF_TOKEN = {"up": FAMILY_IN, "write": FAMILY_IN, "down": FAMILY_DOWN}

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


# ---------------------------------------------------------------- subjects and families


def subject_family(subject: str) -> str:
    tokens = subject.split(".")
    if len(tokens) >= 2 and tokens[0] == "cs":
        return _FAMILY_OF_TOKEN.get(tokens[1], FAMILY_OTHER)
    return FAMILY_OTHER


def is_up(subject: str) -> bool:
    return subject.startswith("cs.up.")


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


def family_topic(prefix: str, family: str) -> str:
    return f"{prefix}-{family}"


def topic_for_subject(prefix: str, subject: str) -> str:
    return family_topic(prefix, subject_family(subject))


def topics_for_filter(prefix: str, subject_filter: str) -> list[str]:
    return [family_topic(prefix, family) for family in filter_families(subject_filter)]


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


@dataclass(frozen=True, slots=True)
class Incoming:
    """What a received message delivers: ``(subject, data)`` pairs, in order (none for a
    message that asks nothing, e.g. ConnectedClients; several for a multi-kind reconciliation
    request or a request batch)."""

    items: list[tuple[str, bytes]]
    fallback_subject: str  # for routing and logs when ``items`` is empty


class Layout(Protocol):
    @property
    def name(self) -> str: ...

    def topics(self) -> list[str]:
        """Every topic the bus publishes to (a producer each)."""
        ...

    def topics_for(self, subject_filter: str) -> list[str]: ...

    def outgoing(self, subject: str, data: bytes) -> list[Outgoing]:
        """The messages that carry ``data`` on ``subject``; the first one's id is its seq."""
        ...

    def subject_of(self, properties: Mapping[str, str]) -> str | None:
        """The subject a message names itself, if it does (no decoding needed)."""
        ...

    def may_match(
        self, subject_filter: str, properties: Mapping[str, str], key: str, topic: str
    ) -> bool:
        """False when a message cannot concern ``subject_filter``, decided without decoding it
        (every durable reads the whole topic, so this spares it decoding everyone's traffic)."""
        ...

    def incoming(
        self, data: bytes, properties: Mapping[str, str], key: str, topic: str
    ) -> Incoming: ...


def _deliver_raw_or_decoded(data: bytes, properties: Mapping[str, str], subject: str) -> Incoming:
    envelopes = kubescape_envelopes(data, properties)
    if envelopes is None:
        return Incoming([(subject, data)], subject)
    return Incoming([(subject, encode_envelope(env)) for env in envelopes], subject)


def _foreign_identity(properties: Mapping[str, str]) -> tuple[str, str]:
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


def _derived_subject(env: Envelope, properties: Mapping[str, str], *, up: bool) -> str:
    """The subject a message without a ``subject`` property is delivered on: what its
    properties say (so that a durable can tell without decoding, see ``may_match``), else what
    its content says."""
    routed = routed_subject(properties, up=up)
    if routed is not None:
        return routed
    if up:
        return up_subject(env.account, env.cluster, partition_of(env.message))
    return down_subject(env.account, env.cluster)


def _may_match_foreign(subject_filter: str, properties: Mapping[str, str], *, up: bool) -> bool:
    routed = routed_subject(properties, up=up)
    if routed is not None:
        return subject_matches(subject_filter, routed)
    return (FAMILY_IN if up else FAMILY_DOWN) in filter_families(subject_filter)


# ---------------------------------------------------------------- split layout


@dataclass(frozen=True, slots=True)
class SplitLayout:
    prefix: str = DEFAULT_TOPIC_PREFIX

    @property
    def name(self) -> str:
        return LAYOUT_SPLIT

    def topics(self) -> list[str]:
        return [family_topic(self.prefix, family) for family in FAMILIES]

    def topics_for(self, subject_filter: str) -> list[str]:
        return topics_for_filter(self.prefix, subject_filter)

    def outgoing(self, subject: str, data: bytes) -> list[Outgoing]:
        topic = topic_for_subject(self.prefix, subject)
        form = kubescape_form(data)
        if form is None:
            props = {SUBJECT_PROPERTY: subject, ENCODING_PROPERTY: ENCODING_RAW}
            return [Outgoing(topic, bytes(data), props, subject)]
        _, message = form
        props = dict(message.properties)
        props[SUBJECT_PROPERTY] = subject
        props[ENCODING_PROPERTY] = ENCODING_KUBESCAPE
        return [Outgoing(topic, message.payload, props, subject)]

    def subject_of(self, properties: Mapping[str, str]) -> str | None:
        return properties.get(SUBJECT_PROPERTY)

    def may_match(
        self, subject_filter: str, properties: Mapping[str, str], key: str, topic: str
    ) -> bool:
        subject = properties.get(SUBJECT_PROPERTY)
        if subject is not None:
            return subject_matches(subject_filter, subject)
        # A kubescape producer's: the topic tells the direction.
        return _may_match_foreign(subject_filter, properties, up=_up_topic(topic))

    def incoming(
        self, data: bytes, properties: Mapping[str, str], key: str, topic: str
    ) -> Incoming:
        subject = properties.get(SUBJECT_PROPERTY)
        if subject is not None:
            return _deliver_raw_or_decoded(data, properties, subject)
        # A kubescape producer's: the topic tells the direction.
        return _foreign(data, properties, up=_up_topic(topic))


def _up_topic(topic: str) -> bool:
    return not topic.endswith(f"-{FAMILY_DOWN}")


def _foreign(data: bytes, properties: Mapping[str, str], *, up: bool) -> Incoming:
    """A message without a ``subject`` property: each envelope gets its subject from its own
    identity (a ReconciliationRequestBatch spans clusters)."""
    account, cluster = _foreign_identity(properties)
    # Undecodable, it goes where its properties say (as may_match predicted), so exactly one
    # durable of a partitioned set still gets it for the dead-letter path.
    fallback = routed_subject(properties, up=up) or (
        up_subject(account, cluster) if up else down_subject(account, cluster)
    )
    envelopes = kubescape_envelopes(data, properties)
    if envelopes is None:
        return Incoming([(fallback, data)], fallback)
    items = [(_derived_subject(env, properties, up=up), encode_envelope(env)) for env in envelopes]
    return Incoming(items, items[0][0] if items else fallback)


# ---------------------------------------------------------------- kubescape layout


def _host_name() -> str:
    return socket.gethostname()


@dataclass(frozen=True, slots=True)
class KubescapeLayout:
    topic: str = DEFAULT_TOPIC
    server_name: str = ""  # ConnectedClients' serverName; the host name when empty

    @property
    def name(self) -> str:
        return LAYOUT_KUBESCAPE

    def topics(self) -> list[str]:
        return [self.topic]

    def topics_for(self, subject_filter: str) -> list[str]:
        return [self.topic]

    def outgoing(self, subject: str, data: bytes) -> list[Outgoing]:
        family = subject_family(subject)
        up = is_up(subject)
        form = kubescape_form(data) if up or family == FAMILY_DOWN else None
        if form is None:
            # Raw: named by its subject, no event or identity, so a Go server passes it by.
            props = {SUBJECT_PROPERTY: subject, ENCODING_PROPERTY: ENCODING_RAW}
            return [
                Outgoing(self.topic, bytes(data), props, SERVER_PRODUCER_KEY if up else subject)
            ]
        env, message = form
        props = dict(message.properties)
        if _derived_subject(env, message.properties, up=up) != subject:
            props[SUBJECT_PROPERTY] = subject  # the receiver could not work it out
        key = SERVER_PRODUCER_KEY if up else message_key(env.account, env.cluster)
        out = [Outgoing(self.topic, message.payload, props, key)]
        if up and env.control == CONTROL_CONNECTED:
            out.append(self._connected_clients(env))
        return out

    def _connected_clients(self, env: Envelope) -> Outgoing:
        """The ConnectedClients report a Go server sends with its ServerConnected, from what the
        agent said of itself at connect (the envelope's ``client``)."""
        now = datetime.now(UTC)
        stamp = format_timestamp(now)
        info = dict(env.client)
        client = ConnectedClient(
            account=env.account,
            cluster=env.cluster,
            synchronizer_version=info.get("synchronizerVersion", ""),
            helm_version=info.get("helmVersion", ""),
            connection_id=info.get("connectionId") or str(uuid.uuid4()),
            connection_time=info.get("connectionTime") or stamp,
            git_version=info.get("gitVersion", ""),
            cloud_provider=info.get("cloudProvider", ""),
        )
        report = ConnectedClients(
            server_name=self.server_name or _host_name(),
            clients=(client,),
            keepalive=stamp,
            msg_id=str(uuid.uuid4()),
        )
        message = encode_connected_clients(
            report, account=env.account, cluster=env.cluster, now=now
        )
        return Outgoing(self.topic, message.payload, dict(message.properties), SERVER_PRODUCER_KEY)

    def subject_of(self, properties: Mapping[str, str]) -> str | None:
        return properties.get(SUBJECT_PROPERTY)

    def may_match(
        self, subject_filter: str, properties: Mapping[str, str], key: str, topic: str
    ) -> bool:
        subject = properties.get(SUBJECT_PROPERTY)
        if subject is not None:
            return subject_matches(subject_filter, subject)
        return _may_match_foreign(subject_filter, properties, up=key == SERVER_PRODUCER_KEY)

    def incoming(
        self, data: bytes, properties: Mapping[str, str], key: str, topic: str
    ) -> Incoming:
        subject = properties.get(SUBJECT_PROPERTY)
        if subject is not None:
            return _deliver_raw_or_decoded(data, properties, subject)
        # The key tells the direction: the Go server's key on everything it bridges up.
        return _foreign(data, properties, up=key == SERVER_PRODUCER_KEY)


def is_report(properties: Mapping[str, str]) -> bool:
    """A message that informs and asks nothing (ConnectedClients)."""
    return properties.get(PROP_EVENT) == EVENT_CONNECTED_CLIENTS


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class PulsarSettings:
    """What a bus URL selects: the broker URL the client connects to, and the layout."""

    service_url: str
    layout: Layout


def parse_pulsar_url(url: str) -> PulsarSettings:
    """``pulsar://host:6650`` (kubescape layout on :data:`DEFAULT_TOPIC`), with options in the
    query: ``layout=kubescape&topic=persistent://tenant/ns/name`` or
    ``layout=split&prefix=persistent://tenant/ns/prefix``. Raises BusError for unknown options."""
    parts = urllib.parse.urlsplit(url)
    try:
        options = urllib.parse.parse_qs(
            parts.query, keep_blank_values=True, strict_parsing=bool(parts.query)
        )
    except ValueError as exc:
        raise BusError(f"cannot read the options of Pulsar URL {url!r}: {exc}") from None
    single: dict[str, str] = {}
    for name, values in options.items():
        if len(values) != 1:
            raise BusError(f"Pulsar URL option {name!r} is given {len(values)} times")
        single[name] = values[0]
    layout_name = single.pop("layout", LAYOUT_KUBESCAPE)
    layout: Layout
    if layout_name == LAYOUT_KUBESCAPE:
        layout = KubescapeLayout(topic=_topic(single.pop("topic", DEFAULT_TOPIC), url))
    elif layout_name == LAYOUT_SPLIT:
        layout = SplitLayout(prefix=_topic(single.pop("prefix", DEFAULT_TOPIC_PREFIX), url))
    else:
        raise BusError(f"unknown Pulsar layout {layout_name!r} in {url!r} (use kubescape or split)")
    if single:
        raise BusError(f"unknown Pulsar URL options {sorted(single)} in {url!r}")
    service = urllib.parse.urlunsplit((parts.scheme, parts.netloc, "", "", ""))
    return PulsarSettings(service, layout)


def _topic(name: str, url: str) -> str:
    if not name.startswith("persistent://") or name.count("/") != 4 or name.endswith("/"):
        raise BusError(
            f"topic {name!r} in {url!r} must read persistent://<tenant>/<namespace>/<name>"
        )
    return name
