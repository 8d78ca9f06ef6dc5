"""PulsarBus in the split layout (clustersync-only deployments): the shared Bus contract on a real
broker (when CLUSTERSYNC_TEST_PULSAR_URL is set) and on an in-memory stand-in for the slice of
pulsar.asyncio the bus uses, plus the pure parts (subject to topic mapping, seqs) and connection
failures, which need no broker. The kubescape layout has test_pulsar_kubescape.py."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pulsar
import pytest

from clustersync.adapters.bus.base import BusError, Delivery
from clustersync.adapters.bus.pulsar import PulsarBus, open_pulsar
from clustersync.adapters.bus.pulsar_layout import (
    SplitLayout,
    topic_for_subject,
    topics_for_filter,
)
from clustersync.adapters.bus.pulsar_wire import (
    ENCODING_PROPERTY,
    ENTRY_BITS,
    SUBJECT_PROPERTY,
    filter_families,
    message_seq,
    subject_family,
)
from clustersync.model import Kind, ObjectRef
from clustersync.protocol.backend import reconciliation_batches
from clustersync.protocol.envelope import (
    CONTROL_CONNECTED,
    CONTROL_RECONCILE,
    Envelope,
    decode_envelope,
    down_subject,
    encode_envelope,
    partition_of,
    up_subject,
    write_subject,
)
from clustersync.protocol.messages import (
    BATCH_RECONCILIATION,
    Batch,
    GetObject,
    Message,
    NewChecksum,
    ObjectDeleted,
    PatchObject,
    Ping,
    PutObject,
)

try:
    from tests.contracts import load_contract
except ImportError:  # plain `pytest`: tests/ itself is on sys.path
    from contracts import load_contract  # type: ignore[no-redef]

_contract = load_contract("bus_contract", Path(__file__).with_name("contract.py"))
BusContract = _contract.BusContract
Recorder, wait_for, unique = _contract.Recorder, _contract.wait_for, _contract.unique

PULSAR_URL = os.environ.get("CLUSTERSYNC_TEST_PULSAR_URL", "")
NO_BROKER = "CLUSTERSYNC_TEST_PULSAR_URL is not set: no Pulsar broker on this machine"
PREFIX = "persistent://public/default/cs"


# ---------------------------------------------------------------- the stand-in broker

_standin = load_contract("pulsar_standin", Path(__file__).with_name("pulsar_standin.py"))
FakeBroker, FakeClient, Entry = _standin.FakeBroker, _standin.FakeClient, _standin.Entry
@pytest.fixture
def broker() -> FakeBroker:
    return FakeBroker()


@pytest.fixture
async def fake_bus(broker: FakeBroker) -> AsyncIterator[PulsarBus]:
    bus = PulsarBus(FakeClient(broker), layout=SplitLayout(PREFIX), redelivery_delay=0)
    await bus.start()
    yield bus
    await bus.close()


class TestPulsarBusOnStandIn(BusContract):  # type: ignore[misc,valid-type]  # loaded by path
    """The contract against the stand-in broker: checks the bus's own logic (filtering, per
    subject order, retries, stop) on every run, broker or not."""

    @pytest.fixture
    async def bus(self, fake_bus: PulsarBus, broker: FakeBroker) -> PulsarBus:
        self.broker = broker
        return fake_bus

    async def restarted(self, bus: PulsarBus) -> PulsarBus:
        fresh: PulsarBus = await _standin.restarted_bus(self.broker, bus)
        return fresh


@pytest.mark.skipif(not PULSAR_URL, reason=NO_BROKER)
class TestPulsarBus(BusContract):  # type: ignore[misc,valid-type]  # loaded by path
    """The contract on a real broker, topics unique to each test."""

    @pytest.fixture
    async def bus(self) -> AsyncIterator[PulsarBus]:
        prefix = f"persistent://public/default/cs-test-{uuid.uuid4().hex[:12]}"
        self.url = f"{PULSAR_URL}?layout=split&prefix={prefix}"
        bus = await open_pulsar(self.url, redelivery_delay=0)
        yield bus
        await bus.close()

    async def restarted(self, bus: PulsarBus) -> PulsarBus:
        # A process restart; deleting the topics needs the admin API, which the bus has not.
        await bus.close()
        return await open_pulsar(self.url, redelivery_delay=0)


# ---------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    ("subject", "family"),
    [
        ("cs.up.a.c", "in"),
        ("cs.write.a.c", "in"),
        ("cs.down.a.c", "down"),
        ("cs.up", "in"),
        ("cs", "other"),
        ("cs.other.a", "other"),
        ("up.a.c", "other"),
        ("x.down", "other"),
    ],
)
def test_subject_family(subject: str, family: str) -> None:
    assert subject_family(subject) == family
    assert topic_for_subject(PREFIX, subject) == f"{PREFIX}-{family}"


@pytest.mark.parametrize(
    ("subject_filter", "families"),
    [
        ("cs.up.>", ["in"]),
        ("cs.write.>", ["in"]),
        ("cs.down.a.c", ["down"]),
        ("cs.up.*.c1", ["in"]),
        ("cs.up.*.*.3", ["in"]),  # an ingester partition
        ("cs.>", ["in", "down", "other"]),
        ("cs.*.a.c", ["in", "down", "other"]),
        (">", ["in", "down", "other"]),
        ("*.up.>", ["in", "other"]),
        ("*.down.a", ["down", "other"]),
        ("*", ["other"]),
        ("cs", ["other"]),
        ("cs.misc.>", ["other"]),
        ("other.>", ["other"]),
    ],
)
def test_filter_families(subject_filter: str, families: list[str]) -> None:
    assert filter_families(subject_filter) == families
    assert topics_for_filter(PREFIX, subject_filter) == [f"{PREFIX}-{f}" for f in families]


SUBJECTS = [
    "cs.up.a.c.3", "cs.up.a.c", "cs.write.a.c", "cs.down.a.c", "cs", "cs.x", "cs.up", "q.up.a", "z",
]
FILTERS = [
    "cs.up.*.*.3", "cs.up.>", "cs.>", "cs.*", "*", ">", "*.up.>", "cs.down.*.c", "cs.*.a.c", "q.>",
    "cs",
]


@pytest.mark.parametrize("subject_filter", FILTERS)
def test_a_filter_subscribes_to_every_topic_of_its_subjects(subject_filter: str) -> None:
    from clustersync.adapters.bus.base import subject_matches

    topics = topics_for_filter(PREFIX, subject_filter)
    for subject in SUBJECTS:
        if subject_matches(subject_filter, subject):
            assert topic_for_subject(PREFIX, subject) in topics, subject


def test_message_seq() -> None:
    assert message_seq(0, 0) == 1
    assert message_seq(0, 1) == 2
    assert message_seq(1, 0) == (1 << ENTRY_BITS) + 1
    # Monotonic along a topic: entries within a ledger, then the next (larger) ledger.
    ids = [(5, 0), (5, 1), (5, 49_999), (9, 0), (9, 1), (12, 0)]
    seqs = [message_seq(ledger, entry) for ledger, entry in ids]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # Fits a signed 64-bit column for any realistic ledger id.
    assert message_seq(2**38, 2**ENTRY_BITS - 1) < 2**63
    with pytest.raises(BusError):
        message_seq(-1, -1)  # MessageId.earliest and friends are not messages


# ---------------------------------------------------------------- connection failures


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_broker_fails_fast() -> None:
    start = time.monotonic()
    with pytest.raises(BusError, match="cannot open a producer"):
        await open_pulsar(f"pulsar://127.0.0.1:{closed_port()}", operation_timeout=2)
    assert time.monotonic() - start < 6


async def test_bad_url() -> None:
    with pytest.raises(BusError, match="Pulsar URL"):
        await open_pulsar("localhost:6650", operation_timeout=1)


async def test_start_failure_is_a_bus_error(broker: FakeBroker) -> None:
    broker.unreachable = True
    with pytest.raises(BusError, match="Timeout"):
        await PulsarBus(FakeClient(broker), layout=SplitLayout(PREFIX)).start()


# ---------------------------------------------------------------- Pulsar-specific behaviour


async def test_producers_and_consumers_are_configured(
    fake_bus: PulsarBus, broker: FakeBroker
) -> None:
    assert sorted(broker.producer_options) == [f"{PREFIX}-down", f"{PREFIX}-in", f"{PREFIX}-other"]
    for options in broker.producer_options.values():
        assert options["batching_enabled"] is False  # one message per entry, for message_seq
        assert options["block_if_queue_full"] is False
        assert options["compression_type"] == pulsar.CompressionType.ZSTD
        # Key_Shared durables cannot take chunked messages (Pulsar supports them on Exclusive
        # and Failover subscriptions only).
        assert options["chunking_enabled"] is False
    await fake_bus.subscribe("cs.up.>", "ingester", Recorder())
    await fake_bus.subscribe("cs.>", "audit", Recorder())
    (topic, name, options), (topics, _, _) = broker.subscribe_calls
    assert (topic, name) == (f"{PREFIX}-in", "ingester")
    assert topics == [f"{PREFIX}-in", f"{PREFIX}-down", f"{PREFIX}-other"]
    assert options["consumer_type"] == pulsar.ConsumerType.KeyShared
    assert options["initial_position"] == pulsar.InitialPosition.Earliest


async def test_subject_travels_as_property_and_key(fake_bus: PulsarBus, broker: FakeBroker) -> None:
    seq = await fake_bus.publish("cs.write.a.c1", b"payload")
    (entry,) = broker.entries(f"{PREFIX}-in")
    assert entry.properties == {SUBJECT_PROPERTY: "cs.write.a.c1", "clustersyncEncoding": "raw"}
    assert entry.key == "cs.write.a.c1"
    assert entry.data == b"payload"
    assert seq == message_seq(broker.topic(f"{PREFIX}-in").ledger, 0)


async def test_up_and_write_share_one_seq_order(fake_bus: PulsarBus) -> None:
    # The ingester compares seqs of both families on one object: they must share an order.
    seqs = [
        await fake_bus.publish("cs.up.a.c", b"1"),
        await fake_bus.publish("cs.write.a.c", b"2"),
        await fake_bus.publish("cs.up.a.c", b"3"),
    ]
    assert seqs == sorted(seqs)


async def test_filtered_out_messages_are_acked_on_the_own_cursor_only(
    fake_bus: PulsarBus, broker: FakeBroker
) -> None:
    a, b = Recorder(), Recorder()
    await fake_bus.subscribe("cs.down.a.c1", "down-a-c1", a)
    await fake_bus.publish("cs.down.a.c2", b"for c2")
    await fake_bus.publish("cs.down.a.c1", b"for c1")
    await wait_for(lambda: len(a.acked()) == 1)
    cursor = broker.cursors[(f"{PREFIX}-down", "down-a-c1")]
    await wait_for(lambda: cursor.acked == {0, 1})  # c2's message acked on down-a-c1 only
    # c2's agent connects later: its durable still finds its message.
    await fake_bus.subscribe("cs.down.a.c2", "down-a-c2", b)
    await wait_for(lambda: len(b.acked()) == 1)
    assert (a.data(), b.data()) == ([b"for c1"], [b"for c2"])


async def test_durable_filter_cannot_change(fake_bus: PulsarBus) -> None:
    await fake_bus.subscribe("cs.up.>", "ingest", Recorder())
    with pytest.raises(BusError):
        await fake_bus.subscribe("cs.down.>", "ingest", Recorder())
    await fake_bus.subscribe("cs.up.>", "ingest", Recorder())  # same filter: a second subscriber


@pytest.mark.parametrize("subject_filter", ["", "cs..x", "cs.>.x", "cs.a*"])
async def test_invalid_filter(fake_bus: PulsarBus, subject_filter: str) -> None:
    with pytest.raises(BusError):
        await fake_bus.subscribe(subject_filter, "d", Recorder())


@pytest.mark.parametrize("durable", ["", "a.b", "a b", "a*"])
async def test_invalid_durable(fake_bus: PulsarBus, durable: str) -> None:
    with pytest.raises(BusError):
        await fake_bus.subscribe("cs.>", durable, Recorder())


async def test_attempt_counts_on_from_the_broker_redelivery_count(fake_bus: PulsarBus) -> None:
    never = asyncio.Event()
    stuck: list[Delivery] = []

    async def hang(delivery: Delivery) -> None:
        stuck.append(delivery)
        await never.wait()

    sub = await fake_bus.subscribe("cs.down.a.c1", "down-a-c1", hang)
    await fake_bus.publish("cs.down.a.c1", b"p")
    await wait_for(lambda: len(stuck) == 1)
    await sub.stop()
    rec = Recorder(fail_attempts=2)
    await fake_bus.subscribe("cs.down.a.c1", "down-a-c1", rec)
    await wait_for(lambda: len(rec.acked()) == 1)
    assert [d.attempt for d in stuck + rec.seen] == [1, 2, 3]


async def test_prefetched_messages_wait_for_a_failing_one(fake_bus: PulsarBus) -> None:
    # Everything is in the consumer's queue before the first handler fails twice.
    for i in range(5):
        await fake_bus.publish("cs.up.a.c1", b"%d" % i)
    rec = Recorder(fail_attempts=2)
    await fake_bus.subscribe("cs.up.>", "ingest", rec)
    await wait_for(lambda: len(rec.acked()) == 5)
    assert [(d.data, d.attempt) for d in rec.seen[:3]] == [(b"0", 1), (b"0", 2), (b"0", 3)]
    assert rec.data() == [b"%d" % i for i in range(5)]


async def test_subject_blocks_but_other_subjects_proceed(fake_bus: PulsarBus) -> None:
    gate = asyncio.Event()
    seen: list[bytes] = []

    async def handler(delivery: Delivery) -> None:
        seen.append(delivery.data)
        if delivery.data == b"s1":
            await gate.wait()

    await fake_bus.subscribe("cs.up.>", "ingest", handler)
    await fake_bus.publish("cs.up.a.s", b"s1")
    await fake_bus.publish("cs.up.a.s", b"s2")
    await fake_bus.publish("cs.up.a.t", b"t1")
    await wait_for(lambda: b"t1" in seen and b"s1" in seen)
    assert b"s2" not in seen
    gate.set()
    await wait_for(lambda: b"s2" in seen)


async def test_handler_leaking_cancelled_error_is_a_failure(fake_bus: PulsarBus) -> None:
    seen: list[Delivery] = []

    async def handler(delivery: Delivery) -> None:
        seen.append(delivery)
        if delivery.attempt == 1:
            raise asyncio.CancelledError

    await fake_bus.subscribe("cs.up.>", "ingest", handler)
    await fake_bus.publish("cs.up.a.c1", b"x")
    await wait_for(lambda: len(seen) == 2)
    assert [d.attempt for d in seen] == [1, 2]


async def test_handler_may_stop_its_own_subscription(fake_bus: PulsarBus) -> None:
    subs: list[Any] = []
    seen: list[Delivery] = []

    async def quitter(delivery: Delivery) -> None:
        seen.append(delivery)
        await subs[0].stop()
        await asyncio.sleep(0)  # cancelled here: the message is not acked

    subs.append(await fake_bus.subscribe("cs.down.a.c1", "down-a-c1", quitter))
    await fake_bus.publish("cs.down.a.c1", b"x")
    await wait_for(lambda: len(seen) == 1)
    rec = Recorder()
    await fake_bus.subscribe("cs.down.a.c1", "down-a-c1", rec)
    await wait_for(lambda: len(rec.acked()) == 1)
    assert rec.acked()[0].attempt == 2


async def test_close_stops_everything(broker: FakeBroker) -> None:
    bus = PulsarBus(FakeClient(broker), layout=SplitLayout(PREFIX), redelivery_delay=0)
    await bus.start()
    never = asyncio.Event()

    async def hang(delivery: Delivery) -> None:
        await never.wait()

    sub = await bus.subscribe("cs.>", "d", hang)
    await bus.publish("cs.x", b"")
    await bus.close()
    await bus.close()
    await sub.stop()  # after close: harmless
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert broker.client_closed and broker.client_shut_down
    with pytest.raises(BusError):
        await bus.publish("cs.x", b"")
    with pytest.raises(BusError):
        await bus.subscribe("cs.>", "d", hang)


async def test_publish_failure_is_a_bus_error(fake_bus: PulsarBus, broker: FakeBroker) -> None:
    for producer in fake_bus._producers.values():
        await producer.close()
    with pytest.raises(BusError, match=r"publish to cs\.up\.a\.c failed"):
        await fake_bus.publish("cs.up.a.c", b"x")


# ---------------------------------------------------------------- kubescape's wire format

ACCOUNT, CLUSTER = "acct-1", "prod-eu"
PODS = Kind.parse("/v1/pods")
DEPLOYMENTS = Kind.parse("apps/v1/deployments")
POD = ObjectRef(PODS, "default", "web-1")
DEPLOY = ObjectRef(DEPLOYMENTS, "prod", "api")
OBJ = b'{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web-1","namespace":"default"}}'
MSG_ID = "7d9f4c1e-1111-4222-8333-944455556666"
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
IDENTITY = {"account": ACCOUNT, "cluster": CLUSTER}
CLUSTER_PROPS = {"timestamp", "event", "account", "cluster", SUBJECT_PROPERTY, ENCODING_PROPERTY}
OBJECT_PROPS = CLUSTER_PROPS | {
    "group", "version", "resource", "name", "namespace", "resourceVersion"
}


def envelope(message: Message | None = None, control: str = "") -> Envelope:
    return Envelope(ACCOUNT, CLUSTER, message, control)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def only_entry(broker: FakeBroker, family: str) -> Entry:
    (entry,) = broker.entries(f"{PREFIX}-{family}")
    return entry


def inject(broker: FakeBroker, family: str, data: bytes, properties: dict[str, str]) -> None:
    """A message written by someone else, e.g. a kubescape server: no subject property."""
    broker.append(f"{PREFIX}-{family}", "", data, properties)


def first_seq(broker: FakeBroker, family: str) -> int:
    return message_seq(broker.topic(f"{PREFIX}-{family}").ledger, 0)


def all_acked(broker: FakeBroker, subscription: str) -> bool:
    """The subscription has acknowledged every message of its topics: nothing more comes."""
    cursors = [c for (_, name), c in broker.cursors.items() if name == subscription]
    return bool(cursors) and all(
        not c.holders and len(c.acked) == len(broker.entries(c.topic)) for c in cursors
    )


async def deliveries(
    bus: PulsarBus, broker: FakeBroker, subject_filter: str, count: int
) -> list[Delivery]:
    rec = Recorder()
    durable = f"d-{unique()}"
    await bus.subscribe(subject_filter, durable, rec)
    await wait_for(lambda: all_acked(broker, durable))
    got: list[Delivery] = rec.acked()
    assert len(got) == count
    return got


(RECONCILIATION,) = reconciliation_batches(
    [(POD, "sum-1"), (ObjectRef(PODS, "kube-system", "dns"), "sum-2")]
)
(EMPTY_RECONCILIATION,) = reconciliation_batches([], [DEPLOYMENTS])

# What our system sends, with the subject it goes on and kubescape's event name for it.
OURS: list[tuple[str, Envelope, str]] = [
    ("cs.up.acct-1.prod-eu.3", envelope(PutObject(ref=POD, checksum="c", object=OBJ, depth=1,
                                                  msg_id=MSG_ID)), "PutObject"),
    ("cs.up.acct-1.prod-eu.3", envelope(NewChecksum(ref=POD, checksum="c", resource_version=7,
                                                    msg_id=MSG_ID)), "VerifyObject"),
    ("cs.up.acct-1.prod-eu.3", envelope(ObjectDeleted(ref=POD, resource_version=8, depth=2,
                                                      msg_id=MSG_ID)), "DeleteObject"),
    ("cs.down.acct-1.prod-eu", envelope(GetObject(ref=DEPLOY, depth=1, msg_id=MSG_ID)),
     "GetObject"),
    ("cs.down.acct-1.prod-eu", envelope(GetObject(ref=DEPLOY, base_object=OBJ, msg_id=MSG_ID)),
     "GetObject"),
    ("cs.write.acct-1.prod-eu", envelope(PatchObject(ref=DEPLOY, checksum="c2",
                                                     patch=b'{"spec":{"replicas":3}}')),
     "PatchObject"),
    ("cs.up.acct-1.prod-eu.0", envelope(control=CONTROL_CONNECTED), "ServerConnected"),
    ("cs.up.acct-1.prod-eu.0", envelope(control=CONTROL_RECONCILE), "ReconciliationRequest"),
    ("cs.down.acct-1.prod-eu", envelope(RECONCILIATION), "ReconciliationRequest"),
    ("cs.down.acct-1.prod-eu", envelope(EMPTY_RECONCILIATION), "ReconciliationRequest"),
]


@pytest.mark.parametrize(
    ("subject", "env", "event"), OURS, ids=[f"{e}-{i}" for i, (_, _, e) in enumerate(OURS)]
)
async def test_our_envelopes_travel_in_kubescape_format_and_come_back(
    fake_bus: PulsarBus, broker: FakeBroker, subject: str, env: Envelope, event: str
) -> None:
    published = encode_envelope(env)
    seq = await fake_bus.publish(subject, published)
    entry = only_entry(broker, subject_family(subject))
    props = entry.properties
    assert props[ENCODING_PROPERTY] == "kubescape"
    assert props[SUBJECT_PROPERTY] == subject and entry.key == subject
    assert props["event"] == event
    assert TIMESTAMP.fullmatch(props["timestamp"])
    assert (props["account"], props["cluster"]) == (ACCOUNT, CLUSTER)
    assert set(props) == (OBJECT_PROPS if env.message is not None and not isinstance(
        env.message, Batch) else CLUSTER_PROPS)
    doc = orjson.loads(entry.data)
    assert doc["account"] == ACCOUNT and doc["cluster"] == CLUSTER and "msgId" in doc
    assert all(key[0].islower() and "_" not in key for key in doc)

    (delivery,) = await deliveries(fake_bus, broker, subject, 1)
    assert (delivery.subject, delivery.seq) == (subject, seq)
    assert decode_envelope(delivery.data) == decode_envelope(published) == env
    assert delivery.data == published  # our canonical form, byte for byte


async def test_put_object_on_the_wire(fake_bus: PulsarBus, broker: FakeBroker) -> None:
    put = PutObject(ref=POD, checksum="c1", object=OBJ, depth=2, msg_id=MSG_ID)
    subject = up_subject(ACCOUNT, CLUSTER, partition_of(put))
    await fake_bus.publish(subject, encode_envelope(envelope(put)))
    entry = only_entry(broker, "in")
    props = dict(entry.properties)
    assert TIMESTAMP.fullmatch(props.pop("timestamp"))
    assert props == {
        "event": "PutObject",
        "account": ACCOUNT,
        "cluster": CLUSTER,
        "group": "",
        "version": "v1",
        "resource": "pods",
        "name": "web-1",
        "namespace": "default",
        "resourceVersion": "0",
        SUBJECT_PROPERTY: subject,
        ENCODING_PROPERTY: "kubescape",
    }
    assert orjson.loads(entry.data) == {
        "checksum": "c1",
        "cluster": CLUSTER,
        "account": ACCOUNT,
        "depth": 2,
        "kind": "/v1/pods",
        "msgId": MSG_ID,
        "name": "web-1",
        "namespace": "default",
        "patch": b64(OBJ),  # kubescape's PutObject keeps the object under "patch"
        "resourceVersion": 0,
    }


async def test_reconciliation_batch_on_the_wire(fake_bus: PulsarBus, broker: FakeBroker) -> None:
    await fake_bus.publish(down_subject(ACCOUNT, CLUSTER), encode_envelope(envelope(
        RECONCILIATION)))
    doc = orjson.loads(only_entry(broker, "down").data)
    assert doc == {
        "cluster": CLUSTER,
        "account": ACCOUNT,
        "depth": RECONCILIATION.depth,
        "msgId": RECONCILIATION.msg_id,
        "serverInitiated": False,
        "kindToObject": {
            "/v1/pods": [
                {"checksum": "sum-1", "resourceVersion": 0, "name": "web-1",
                 "namespace": "default"},
                {"checksum": "sum-2", "resourceVersion": 0, "name": "dns",
                 "namespace": "kube-system"},
            ]
        },
    }
    assert only_entry(broker, "down").properties["event"] == "ReconciliationRequest"


PLAIN_BATCH = Batch(
    kind=PODS,
    new_checksum=(NewChecksum(ref=POD, checksum="a"),),
    object_deleted=(ObjectDeleted(ref=ObjectRef(PODS, "default", "gone")),),
    put_object=(PutObject(ref=ObjectRef(PODS, "default", "new"), checksum="b", object=b"{}"),),
)
MIXED_RECONCILIATION = Batch(
    kind=PODS,
    batch_type=BATCH_RECONCILIATION,
    new_checksum=(NewChecksum(ref=POD, checksum="a"),),
    object_deleted=(ObjectDeleted(ref=POD),),
)
OWN_META_RECONCILIATION = Batch(
    kind=PODS,
    batch_type=BATCH_RECONCILIATION,
    new_checksum=(NewChecksum(ref=POD, checksum="a", depth=1, msg_id="item"),),
    depth=1,
    msg_id="batch",
)
RAW: list[bytes] = [
    b"x",
    b"",
    b"\x00\xff not utf-8",
    b'{"not": "an envelope"}',
    b"42",
    b'{"account": "a", "cluster": "c", "control": ["x"]}',  # decode_envelope: TypeError
    encode_envelope(envelope(PLAIN_BATCH)),  # would be 3 kubescape messages: one bus message
    encode_envelope(envelope(Ping(msg_id="p"))),
    encode_envelope(envelope(MIXED_RECONCILIATION)),  # kubescape cannot say "deleted" here
    encode_envelope(envelope(OWN_META_RECONCILIATION)),  # nor give items their own msgId
]


@pytest.mark.parametrize("data", RAW)
async def test_everything_else_travels_raw_byte_exactly(
    fake_bus: PulsarBus, broker: FakeBroker, data: bytes
) -> None:
    subject = write_subject(ACCOUNT, CLUSTER)
    seq = await fake_bus.publish(subject, data)
    entry = only_entry(broker, "in")  # one bus message, one seq, whatever it holds
    assert entry.properties == {SUBJECT_PROPERTY: subject, ENCODING_PROPERTY: "raw"}
    assert entry.data == data
    (delivery,) = await deliveries(fake_bus, broker, subject, 1)
    assert (delivery.data, delivery.seq) == (data, seq)


def test_wire_message_keeps_meaning_not_bytes_of_a_non_canonical_envelope() -> None:
    env = envelope(NewChecksum(ref=POD, checksum="a", msg_id=MSG_ID))
    spaced = orjson.dumps(orjson.loads(encode_envelope(env)), option=orjson.OPT_INDENT_2)
    (out,) = SplitLayout(PREFIX).outgoing("cs.up.a.c", spaced)
    assert out.properties[ENCODING_PROPERTY] == "kubescape"
    assert orjson.loads(out.payload)["msgId"] == MSG_ID


def kubescape_put(**change: Any) -> bytes:
    """A PutObject payload as kubescape's Go server marshals it."""
    doc: dict[str, Any] = {
        "cluster": CLUSTER,
        "account": ACCOUNT,
        "depth": 1,
        "kind": "apps/v1/deployments",
        "msgId": MSG_ID,
        "name": "api",
        "namespace": "prod",
        "patch": b64(OBJ),
        "resourceVersion": 0,
    }
    doc.update(change)
    return orjson.dumps(doc)


def kubescape_props(event: str, **extra: str) -> dict[str, str]:
    return {
        "timestamp": "2024-05-01T12:30:45.1234Z",
        "event": event,
        "account": ACCOUNT,
        "cluster": CLUSTER,
        **extra,
    }


PUT_PROPS = kubescape_props(
    "PutObject", group="apps", version="v1", resource="deployments", name="api",
    namespace="prod", resourceVersion="0",
)


async def test_a_kubescape_producers_message_is_delivered_as_an_envelope(
    fake_bus: PulsarBus, broker: FakeBroker
) -> None:
    inject(broker, "in", kubescape_put(), PUT_PROPS)
    (delivery,) = await deliveries(fake_bus, broker, "cs.up.>", 1)
    put = PutObject(ref=DEPLOY, checksum="", object=OBJ, depth=1, msg_id=MSG_ID)
    # The subject our own server would have used for it.
    assert delivery.subject == up_subject(ACCOUNT, CLUSTER, partition_of(put))
    assert delivery.seq == first_seq(broker, "in")
    assert decode_envelope(delivery.data) == envelope(put)


async def test_a_kubescape_message_on_the_down_topic_gets_a_down_subject(
    fake_bus: PulsarBus, broker: FakeBroker
) -> None:
    doc = {"cluster": CLUSTER, "account": ACCOUNT, "depth": 0, "msgId": "m"}
    inject(broker, "down", orjson.dumps(doc), kubescape_props("ServerConnected"))
    (delivery,) = await deliveries(fake_bus, broker, down_subject(ACCOUNT, CLUSTER), 1)
    assert decode_envelope(delivery.data) == envelope(control=CONTROL_CONNECTED)


MULTI_KIND = orjson.dumps(
    {
        "cluster": CLUSTER,
        "account": ACCOUNT,
        "depth": 1,
        "msgId": "r",
        "serverInitiated": False,
        "kindToObject": {
            "/v1/pods": [{"checksum": "s1", "resourceVersion": 3, "name": "web-1",
                          "namespace": "default"}],
            "apps/v1/deployments": None,  # Go's nil slice
        },
    }
)
MULTI_KIND_ENVELOPES = [
    envelope(Batch(
        kind=PODS, batch_type=BATCH_RECONCILIATION, depth=1, msg_id="r",
        new_checksum=(NewChecksum(ref=POD, checksum="s1", resource_version=3, depth=1,
                                  msg_id="r"),),
    )),
    envelope(Batch(kind=DEPLOYMENTS, batch_type=BATCH_RECONCILIATION, depth=1, msg_id="r")),
]


async def test_a_multi_kind_reconciliation_request_is_delivered_batch_by_batch(
    fake_bus: PulsarBus, broker: FakeBroker
) -> None:
    inject(broker, "down", MULTI_KIND, kubescape_props("ReconciliationRequest"))
    got = await deliveries(fake_bus, broker, "cs.down.>", 2)
    assert [decode_envelope(d.data) for d in got] == MULTI_KIND_ENVELOPES
    assert {d.subject for d in got} == {down_subject(ACCOUNT, CLUSTER)}
    assert {d.seq for d in got} == {first_seq(broker, "down")}


async def test_a_failure_within_a_multi_kind_request_retries_from_the_failed_batch(
    fake_bus: PulsarBus, broker: FakeBroker
) -> None:
    seen: list[Delivery] = []

    async def handler(delivery: Delivery) -> None:
        seen.append(delivery)
        if len(seen) in (2, 3):  # the second batch fails twice
            raise RuntimeError("not now")

    await fake_bus.subscribe("cs.down.>", "server", handler)
    inject(broker, "down", MULTI_KIND, kubescape_props("ReconciliationRequest"))
    cursor = broker.cursors[(f"{PREFIX}-down", "server")]
    await wait_for(lambda: cursor.acked == {0})
    first, second = (encode_envelope(e) for e in MULTI_KIND_ENVELOPES)
    assert [(d.data, d.attempt) for d in seen] == [
        (first, 1), (second, 1), (second, 2), (second, 3)
    ]


async def test_an_empty_reconciliation_request_is_acked(
    fake_bus: PulsarBus, broker: FakeBroker
) -> None:
    doc = {"cluster": CLUSTER, "account": ACCOUNT, "serverInitiated": False, "kindToObject": {}}
    inject(broker, "down", orjson.dumps(doc), kubescape_props("ReconciliationRequest"))
    rec = Recorder()
    await fake_bus.subscribe("cs.down.>", "server", rec)
    cursor = broker.cursors[(f"{PREFIX}-down", "server")]
    await wait_for(lambda: cursor.acked == {0})
    assert rec.seen == []


CORRUPT: list[tuple[bytes, dict[str, str]]] = [
    (b"{not json", PUT_PROPS),
    (kubescape_put(patch="%%% not base64"), PUT_PROPS),
    (kubescape_put(kind="not-a-kind"), PUT_PROPS),
    (kubescape_put(account="someone-else"), PUT_PROPS),
    (kubescape_put(), kubescape_props("FrobnicateObject")),
]


@pytest.mark.parametrize(("data", "properties"), CORRUPT)
async def test_a_corrupt_kubescape_message_is_delivered_raw(
    fake_bus: PulsarBus, broker: FakeBroker, data: bytes, properties: dict[str, str]
) -> None:
    inject(broker, "in", data, properties)
    (delivery,) = await deliveries(fake_bus, broker, "cs.up.>", 1)
    # Unchanged, under the subject its properties name: the ingester parks it with a reason.
    assert delivery.data == data
    named = PutObject(ref=DEPLOY, checksum="", object=b"{}")  # the object PUT_PROPS name
    partition = partition_of(named) if properties["event"] == "PutObject" else 0
    assert delivery.subject == up_subject(ACCOUNT, CLUSTER, partition)


async def test_a_corrupt_message_marked_kubescape_keeps_its_subject(
    fake_bus: PulsarBus, broker: FakeBroker
) -> None:
    props = PUT_PROPS | {SUBJECT_PROPERTY: "cs.write.a.c", ENCODING_PROPERTY: "kubescape"}
    inject(broker, "in", b"garbage", props)
    (delivery,) = await deliveries(fake_bus, broker, "cs.write.>", 1)
    assert (delivery.subject, delivery.data) == ("cs.write.a.c", b"garbage")


async def test_marker_wins_over_an_event_property(
    fake_bus: PulsarBus, broker: FakeBroker
) -> None:
    props = PUT_PROPS | {SUBJECT_PROPERTY: "cs.write.a.c", ENCODING_PROPERTY: "raw"}
    inject(broker, "in", kubescape_put(), props)
    (delivery,) = await deliveries(fake_bus, broker, "cs.write.>", 1)
    assert delivery.data == kubescape_put()


async def test_a_foreign_message_without_identity_is_still_delivered(
    fake_bus: PulsarBus, broker: FakeBroker
) -> None:
    inject(broker, "in", b"who knows", {})
    (delivery,) = await deliveries(fake_bus, broker, "cs.up.>", 1)
    assert (delivery.subject, delivery.data) == ("cs.up._._.0", b"who knows")
