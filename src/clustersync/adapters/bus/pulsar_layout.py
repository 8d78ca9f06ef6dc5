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

Versions: ``Delivery.seq`` is built from the message id (``pulsar_wire.message_seq``). Ledger
ids come from one cluster-wide counter, so within a topic the seq grows with every message,
including across the deletion and re-creation of the topic (its new ledger has a larger id than
any before).
The kubescape layout puts every compared subject on one topic; the split layout puts up and write
on one topic, while ``cs.down`` seqs (never compared with them) live on another.

What goes on the wire for each message is :mod:`clustersync.adapters.bus.pulsar_wire`.
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
from clustersync.adapters.bus.pulsar_wire import (
    ENCODING_KUBESCAPE,
    ENCODING_PROPERTY,
    ENCODING_RAW,
    FAMILIES,
    FAMILY_DOWN,
    SUBJECT_PROPERTY,
    Incoming,
    Outgoing,
    deliver_raw_or_decoded,
    derived_subject,
    filter_families,
    foreign,
    is_up,
    kubescape_form,
    may_match_foreign,
    subject_family,
    up_topic,
)
from clustersync.protocol.codec import DecodeError
from clustersync.protocol.envelope import (
    CONTROL_CONNECTED,
    Envelope,
    decode_envelope,
    encode_envelope,
)
from clustersync.protocol.messages import BATCH_RECONCILIATION, Batch
from clustersync.protocol.pulsar_codec import (
    SERVER_PRODUCER_KEY,
    ConnectedClient,
    ConnectedClients,
    encode_connected_clients,
    format_timestamp,
    message_key,
)

log = logging.getLogger(__name__)

LAYOUT_KUBESCAPE = "kubescape"
LAYOUT_SPLIT = "split"
DEFAULT_TOPIC = "persistent://public/default/synchronizer"
DEFAULT_TOPIC_PREFIX = "persistent://public/default/clustersync"

# ---------------------------------------------------------------- subjects and families


def family_topic(prefix: str, family: str) -> str:
    return f"{prefix}-{family}"


def topic_for_subject(prefix: str, subject: str) -> str:
    return family_topic(prefix, subject_family(subject))


def topics_for_filter(prefix: str, subject_filter: str) -> list[str]:
    return [family_topic(prefix, family) for family in filter_families(subject_filter)]


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
        return may_match_foreign(subject_filter, properties, up=up_topic(topic))

    def incoming(
        self, data: bytes, properties: Mapping[str, str], key: str, topic: str
    ) -> Incoming:
        subject = properties.get(SUBJECT_PROPERTY)
        if subject is not None:
            return deliver_raw_or_decoded(data, properties, subject)
        # A kubescape producer's: the topic tells the direction.
        return foreign(data, properties, up=up_topic(topic))


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
        if form is None and up:
            unrolled = self._unrolled(subject, data)
            if unrolled:
                return unrolled
        if form is None:
            # Raw: named by its subject, no event or identity, so a Go server passes it by.
            props = {SUBJECT_PROPERTY: subject, ENCODING_PROPERTY: ENCODING_RAW}
            return [
                Outgoing(self.topic, bytes(data), props, SERVER_PRODUCER_KEY if up else subject)
            ]
        env, message = form
        props = dict(message.properties)
        if derived_subject(env, message.properties, up=up) != subject:
            props[SUBJECT_PROPERTY] = subject  # the receiver could not work it out
        key = SERVER_PRODUCER_KEY if up else message_key(env.account, env.cluster)
        out = [Outgoing(self.topic, message.payload, props, key)]
        if up and env.control == CONTROL_CONNECTED:
            out.append(self._connected_clients(env))
        return out

    def _unrolled(self, subject: str, data: bytes) -> list[Outgoing]:
        """A batch of object messages (how our agents send runs of changes to our servers) as
        one Go message per object, the way a Go server publishes what its agents batch: a Go
        backend reads only single messages. Empty if ``data`` is no such batch or an item has
        no kubescape form."""
        try:
            env = decode_envelope(data)
        except DecodeError:
            return []
        batch = env.message
        if not isinstance(batch, Batch) or batch.batch_type == BATCH_RECONCILIATION:
            return []
        out: list[Outgoing] = []
        for item in batch.unrolled():
            single = encode_envelope(replace(env, message=item))
            if kubescape_form(single) is None:
                return []
            out.extend(self.outgoing(subject, single))
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
        return Outgoing(
            self.topic, message.payload, dict(message.properties), SERVER_PRODUCER_KEY, report=True
        )

    def subject_of(self, properties: Mapping[str, str]) -> str | None:
        return properties.get(SUBJECT_PROPERTY)

    def may_match(
        self, subject_filter: str, properties: Mapping[str, str], key: str, topic: str
    ) -> bool:
        subject = properties.get(SUBJECT_PROPERTY)
        if subject is not None:
            return subject_matches(subject_filter, subject)
        return may_match_foreign(subject_filter, properties, up=key == SERVER_PRODUCER_KEY)

    def incoming(
        self, data: bytes, properties: Mapping[str, str], key: str, topic: str
    ) -> Incoming:
        subject = properties.get(SUBJECT_PROPERTY)
        if subject is not None:
            return deliver_raw_or_decoded(data, properties, subject)
        # The key tells the direction: the Go server's key on everything it bridges up.
        return foreign(data, properties, up=key == SERVER_PRODUCER_KEY)


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
