"""PulsarBus in kubescape's layout: one topic, the message key telling the direction, Go's
payloads, properties and producer options; the bus contract on the stand-in broker and (when
CLUSTERSYNC_TEST_PULSAR_URL is set) on a real one; versions across topic re-creation."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pulsar
import pytest

from clustersync.adapters.bus.base import BusError
from clustersync.adapters.bus.pulsar import PulsarBus, open_pulsar
from clustersync.adapters.bus.pulsar_layout import (
    DEFAULT_TOPIC,
    DEFAULT_TOPIC_PREFIX,
    KubescapeLayout,
    SplitLayout,
    parse_pulsar_url,
)
from clustersync.adapters.bus.pulsar_wire import ENCODING_PROPERTY, SUBJECT_PROPERTY, message_seq
from clustersync.model import Kind, ObjectRef
from clustersync.protocol.codec import DecodeError
from clustersync.protocol.envelope import (
    CONTROL_CONNECTED,
    CONTROL_RECONCILE,
    DEAD_SUBJECT,
    UP_PARTITIONS,
    Envelope,
    decode_envelope,
    down_subject,
    encode_envelope,
    partition_of,
    up_partition_filter,
    up_subject,
    write_subject,
)
from clustersync.protocol.messages import (
    Batch,
    GetObject,
    NewChecksum,
    PatchObject,
    PutObject,
)

try:
    from tests.contracts import load_contract
except ImportError:  # plain `pytest`: tests/ itself is on sys.path
    from contracts import load_contract  # type: ignore[no-redef]

_contract = load_contract("bus_contract", Path(__file__).with_name("contract.py"))
BusContract = _contract.BusContract
Recorder, wait_for = _contract.Recorder, _contract.wait_for
_standin = load_contract("pulsar_standin", Path(__file__).with_name("pulsar_standin.py"))
FakeBroker, FakeClient, Entry = _standin.FakeBroker, _standin.FakeClient, _standin.Entry

PULSAR_URL = os.environ.get("CLUSTERSYNC_TEST_PULSAR_URL", "")
NO_BROKER = "CLUSTERSYNC_TEST_PULSAR_URL is not set: no Pulsar broker on this machine"
TOPIC = "persistent://armo/kubescape/synchronizer"
SERVER_KEY = "SynchronizerServerProducer"  # kubescape's constant, from the reference
ACCOUNT, CLUSTER = "acct-1", "prod-eu"
PODS = Kind.parse("/v1/pods")
POD = ObjectRef(PODS, "default", "web-1")
OBJ = b'{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web-1","namespace":"default"}}'
GO_OBJECT_PROPS = {
    "timestamp", "event", "account", "cluster", "group", "version", "resource", "name",
    "namespace", "resourceVersion",
}


@pytest.fixture
def broker() -> FakeBroker:
    return FakeBroker()


@pytest.fixture
async def ks_bus(broker: FakeBroker) -> AsyncIterator[PulsarBus]:
    bus = PulsarBus(FakeClient(broker), layout=KubescapeLayout(TOPIC), redelivery_delay=0)
    await bus.start()
    yield bus
    await bus.close()


class TestKubescapeLayoutOnStandIn(BusContract):  # type: ignore[misc,valid-type]  # by path
    @pytest.fixture
    async def bus(self, ks_bus: PulsarBus, broker: FakeBroker) -> PulsarBus:
        self.broker = broker
        return ks_bus

    async def restarted(self, bus: PulsarBus) -> PulsarBus:
        fresh: PulsarBus = await _standin.restarted_bus(self.broker, bus)
        return fresh


@pytest.mark.skipif(not PULSAR_URL, reason=NO_BROKER)
class TestKubescapeLayout(BusContract):  # type: ignore[misc,valid-type]  # loaded by path
    """The contract on a real broker, a topic unique to each test."""

    @pytest.fixture
    async def bus(self) -> AsyncIterator[PulsarBus]:
        topic = f"persistent://public/default/cs-ks-{uuid.uuid4().hex[:12]}"
        self.url = f"{PULSAR_URL}?topic={topic}"
        bus = await open_pulsar(self.url, redelivery_delay=0)
        yield bus
        await bus.close()

    async def restarted(self, bus: PulsarBus) -> PulsarBus:
        # A process restart; deleting the topic needs the admin API, which the bus has not.
        await bus.close()
        return await open_pulsar(self.url, redelivery_delay=0)


def entries(broker: FakeBroker) -> list[Entry]:
    result: list[Entry] = broker.entries(TOPIC)
    return result


def envelope(message: Any = None, control: str = "") -> Envelope:
    return Envelope(ACCOUNT, CLUSTER, message, control)


def go_server_delivers(entry: Entry, connected: set[tuple[str, str]]) -> bool:
    """What a Go server's reader does with a message on the topic (reference §4.3): skip the
    server key, skip clusters it holds no connection for, then dispatch on ``event``."""
    if entry.key == SERVER_KEY:
        return False
    identity = (entry.properties.get("account", ""), entry.properties.get("cluster", ""))
    return identity in connected and "event" in entry.properties


# ---------------------------------------------------------------- configuration


async def test_one_topic_with_chunking_zstd_and_failover(
    ks_bus: PulsarBus, broker: FakeBroker
) -> None:
    assert list(broker.producer_options) == [TOPIC]
    options = broker.producer_options[TOPIC]
    assert options["batching_enabled"] is False
    assert options["chunking_enabled"] is True
    assert options["compression_type"] == pulsar.CompressionType.ZSTD
    await ks_bus.subscribe("cs.up.*.*.3", "ingester-up-3", Recorder())
    await ks_bus.subscribe("cs.down.a.c", "down-a-c", Recorder())
    for topic, _, sub_options in broker.subscribe_calls:
        assert topic == TOPIC
        assert sub_options["consumer_type"] == pulsar.ConsumerType.Failover
        assert sub_options["initial_position"] == pulsar.InitialPosition.Earliest


def test_url_options() -> None:
    plain = parse_pulsar_url("pulsar://broker:6650")
    assert plain.service_url == "pulsar://broker:6650"
    assert plain.layout == KubescapeLayout(DEFAULT_TOPIC)
    chosen = parse_pulsar_url(f"pulsar+ssl://broker:6651/?layout=kubescape&topic={TOPIC}")
    assert chosen.service_url == "pulsar+ssl://broker:6651"
    assert chosen.layout == KubescapeLayout(TOPIC)
    split = parse_pulsar_url("pulsar://b:6650?layout=split")
    assert split.layout == SplitLayout(DEFAULT_TOPIC_PREFIX)
    prefixed = parse_pulsar_url("pulsar://b:6650?layout=split&prefix=persistent://t/n/cs")
    assert prefixed.layout == SplitLayout("persistent://t/n/cs")


@pytest.mark.parametrize(
    "url",
    [
        "pulsar://b:6650?layout=sideways",
        "pulsar://b:6650?topic=synchronizer",  # not a full topic name
        "pulsar://b:6650?topic=persistent://t/n/",
        "pulsar://b:6650?colour=blue",
        "pulsar://b:6650?layout=split&topic=persistent://t/n/x",  # topic is not a split option
        "pulsar://b:6650?layout=split&layout=kubescape",
        "pulsar://b:6650?layout",
    ],
)
def test_bad_url_options_are_refused(url: str) -> None:
    with pytest.raises(BusError):
        parse_pulsar_url(url)


async def test_open_pulsar_refuses_bad_options_before_connecting() -> None:
    with pytest.raises(BusError, match="layout"):
        await open_pulsar("pulsar://127.0.0.1:1?layout=sideways", operation_timeout=1)


# ---------------------------------------------------------------- the key tells the direction


async def test_up_messages_are_what_a_go_server_produces(
    ks_bus: PulsarBus, broker: FakeBroker
) -> None:
    checksum = NewChecksum(ref=POD, checksum="c1", resource_version=41, depth=2, msg_id="m-1")
    subject = up_subject(ACCOUNT, CLUSTER, partition_of(checksum))
    seq = await ks_bus.publish(subject, encode_envelope(envelope(checksum)))
    (entry,) = entries(broker)
    assert entry.key == SERVER_KEY
    assert set(entry.properties) == GO_OBJECT_PROPS  # nothing of ours added
    assert entry.properties["event"] == "VerifyObject"
    assert entry.properties["resourceVersion"] == "41"
    assert orjson.loads(entry.data) == {
        "checksum": "c1", "cluster": CLUSTER, "account": ACCOUNT, "depth": 2,
        "kind": "/v1/pods", "msgId": "m-1", "name": "web-1", "namespace": "default",
        "resourceVersion": 0,
    }
    assert seq == message_seq(broker.topic(TOPIC).ledger, 0)
    # Our ingester finds it on the subject our server published it on.
    rec = Recorder()
    await ks_bus.subscribe(up_partition_filter(partition_of(checksum)), "ingester", rec)
    await wait_for(lambda: len(rec.acked()) == 1)
    (delivery,) = rec.acked()
    assert (delivery.subject, delivery.seq) == (subject, seq)
    assert decode_envelope(delivery.data) == envelope(checksum)


async def test_a_batch_of_object_messages_goes_out_one_go_message_per_object(
    ks_bus: PulsarBus, broker: FakeBroker
) -> None:
    """Our agents send runs of changes to our servers as one batch; a Go backend reads only
    single messages, so on its layout the batch is published the way a Go server would."""
    other = ObjectRef(PODS, "default", "web-2")
    patch = PatchObject(ref=POD, checksum="c2", patch=b'{"x":1}', depth=2, msg_id="m-2")
    put = PutObject(ref=other, checksum="c3", object=OBJ.replace(b"web-1", b"web-2"),
                    depth=2, msg_id="m-3")
    batch = Batch(kind=PODS, patch_object=(patch,), put_object=(put,), depth=2)
    subject = up_subject(ACCOUNT, CLUSTER, partition_of(batch))
    seq = await ks_bus.publish(subject, encode_envelope(envelope(batch)))
    sent = entries(broker)
    assert [e.properties["event"] for e in sent] == ["PatchObject", "PutObject"]
    assert all(e.key == SERVER_KEY and ENCODING_PROPERTY not in e.properties for e in sent)
    assert seq == message_seq(broker.topic(TOPIC).ledger, 0)
    rec = Recorder()
    await ks_bus.subscribe("cs.up.>", "ingester", rec)
    await wait_for(lambda: len(rec.acked()) == 2)
    assert [decode_envelope(d.data).message for d in rec.acked()] == [patch, put]


async def test_a_subject_the_content_does_not_tell_travels_as_a_property(
    ks_bus: PulsarBus, broker: FakeBroker
) -> None:
    checksum = NewChecksum(ref=POD, checksum="c1", msg_id="m-2")
    assert partition_of(checksum) != 0
    subject = up_subject(ACCOUNT, CLUSTER, 0)  # not the partition the receiver would work out
    await ks_bus.publish(subject, encode_envelope(envelope(checksum)))
    (entry,) = entries(broker)
    assert entry.properties[SUBJECT_PROPERTY] == subject
    rec = Recorder()
    await ks_bus.subscribe("cs.up.>", "ingester", rec)
    await wait_for(lambda: len(rec.acked()) == 1)
    assert rec.acked()[0].subject == subject


async def test_down_messages_are_what_a_go_server_delivers(
    ks_bus: PulsarBus, broker: FakeBroker
) -> None:
    get = GetObject(ref=POD, base_object=OBJ, depth=3, msg_id="g-1")
    await ks_bus.publish(down_subject(ACCOUNT, CLUSTER), encode_envelope(envelope(get)))
    (entry,) = entries(broker)
    assert entry.key == f"{ACCOUNT}/{CLUSTER}"  # not the server key: a Go server reads it
    assert set(entry.properties) == GO_OBJECT_PROPS
    assert go_server_delivers(entry, {(ACCOUNT, CLUSTER)})
    rec = Recorder()
    await ks_bus.subscribe(down_subject(ACCOUNT, CLUSTER), "down-acct-1-prod-eu", rec)
    await wait_for(lambda: len(rec.acked()) == 1)
    assert decode_envelope(rec.acked()[0].data) == envelope(get)


async def test_our_internal_traffic_is_invisible_to_a_go_server(
    ks_bus: PulsarBus, broker: FakeBroker
) -> None:
    put = PutObject(ref=POD, checksum="c", object=OBJ, msg_id="w")
    published = [
        (write_subject(ACCOUNT, CLUSTER), encode_envelope(envelope(put))),
        (DEAD_SUBJECT, b"parked"),
        (up_subject(ACCOUNT, CLUSTER), encode_envelope(envelope(put))),
    ]
    for subject, data in published:
        await ks_bus.publish(subject, data)
    write, dead, up = entries(broker)
    for entry in (write, dead):
        # Raw and named by its subject: no event and no identity for a Go reader to act on.
        assert set(entry.properties) == {SUBJECT_PROPERTY, ENCODING_PROPERTY}
        assert entry.key != SERVER_KEY
    assert (write.data, dead.data) == (published[0][1], b"parked")
    for entry in (write, dead, up):
        assert not go_server_delivers(entry, {(ACCOUNT, CLUSTER)})


async def test_a_go_servers_message_reaches_the_ingester(
    ks_bus: PulsarBus, broker: FakeBroker
) -> None:
    payload = orjson.dumps({
        "checksum": "c3", "cluster": CLUSTER, "account": ACCOUNT, "depth": 2,
        "kind": "/v1/pods", "msgId": "p-1", "name": "web-1", "namespace": "default",
        "patch": "eyJzcGVjIjp7fX0=", "resourceVersion": 0,
    })
    props = {"timestamp": "2026-03-03T20:39:29.123456Z", "event": "PatchObject",
             "account": ACCOUNT, "cluster": CLUSTER, "group": "", "version": "v1",
             "resource": "pods", "name": "web-1", "namespace": "default",
             "resourceVersion": "0"}
    broker.append(TOPIC, SERVER_KEY, payload, props)
    patch = PatchObject(ref=POD, checksum="c3", patch=b'{"spec":{}}', depth=2, msg_id="p-1")
    rec, other = Recorder(), Recorder()
    await ks_bus.subscribe(up_partition_filter(partition_of(patch)), "ingester", rec)
    await ks_bus.subscribe(down_subject(ACCOUNT, CLUSTER), "down-acct-1-prod-eu", other)
    await wait_for(lambda: len(rec.acked()) == 1)
    (delivery,) = rec.acked()
    assert delivery.subject == up_subject(ACCOUNT, CLUSTER, partition_of(patch))
    assert decode_envelope(delivery.data) == envelope(patch)
    assert other.seen == []  # the key said "up": not for the agent's down durable


async def test_each_up_message_reaches_exactly_one_ingester_partition(
    ks_bus: PulsarBus, broker: FakeBroker
) -> None:
    """The ingester's 16 partition durables each read the whole topic and pick theirs from the
    properties; decodable or not, every message lands on exactly one, the right one."""
    recorders = [Recorder() for _ in range(UP_PARTITIONS)]
    for partition, rec in enumerate(recorders):
        await ks_bus.subscribe(up_partition_filter(partition), f"ingester-up-{partition}", rec)
    sent: dict[str, int] = {}  # payload marker -> the partition it belongs on
    for i in range(40):
        checksum = NewChecksum(ref=ObjectRef(PODS, "default", f"pod-{i}"), checksum=f"c{i}")
        await ks_bus.publish(up_subject(ACCOUNT, CLUSTER, partition_of(checksum)),
                             encode_envelope(envelope(checksum)))
        sent[f"c{i}"] = partition_of(checksum)
    # A Go server's PatchObject whose patch is not base64: undecodable, still delivered once.
    corrupt = orjson.dumps({"checksum": "bad", "kind": "/v1/pods", "name": "web-1",
                            "namespace": "default", "depth": 1, "msgId": "m", "patch": "*"})
    props = {"event": "PatchObject", "account": ACCOUNT, "cluster": CLUSTER, "group": "",
             "version": "v1", "resource": "pods", "name": "web-1", "namespace": "default",
             "resourceVersion": "0", "timestamp": "2026-03-03T20:39:29Z"}
    broker.append(TOPIC, SERVER_KEY, corrupt, props)
    sent["bad"] = partition_of(NewChecksum(ref=POD, checksum=""))
    await ks_bus.publish(up_subject(ACCOUNT, CLUSTER),
                         encode_envelope(envelope(control=CONTROL_RECONCILE)))
    await wait_for(lambda: sum(len(rec.acked()) for rec in recorders) == len(sent) + 1)
    where: dict[str, list[int]] = {}
    for partition, rec in enumerate(recorders):
        for delivery in rec.acked():
            try:
                env = decode_envelope(delivery.data)
            except DecodeError:
                marker = orjson.loads(delivery.data)["checksum"]  # the raw Go payload
            else:
                marker = env.control or getattr(env.message, "checksum", "")
            where.setdefault(marker, []).append(partition)
    assert where == {marker: [p] for marker, p in sent.items()} | {CONTROL_RECONCILE: [0]}


async def test_a_go_backends_message_reaches_the_clusters_durable(
    ks_bus: PulsarBus, broker: FakeBroker
) -> None:
    doc = {"cluster": CLUSTER, "account": ACCOUNT, "depth": 0, "msgId": "i-8",
           "serverInitiated": False, "kindToObject": {"batch/v1/cronjobs": []}}
    props = {"event": "ReconciliationRequest", "account": ACCOUNT, "cluster": CLUSTER,
             "timestamp": "2026-03-03T20:39:31Z"}
    broker.append(TOPIC, "whatever-the-ingester-uses", orjson.dumps(doc), props)
    mine, another = Recorder(), Recorder()
    await ks_bus.subscribe(down_subject(ACCOUNT, CLUSTER), "down-acct-1-prod-eu", mine)
    await ks_bus.subscribe(down_subject(ACCOUNT, "dev"), "down-acct-1-dev", another)
    await wait_for(lambda: len(mine.acked()) == 1)
    env = decode_envelope(mine.acked()[0].data)
    assert env.message is not None and str(env.message.kind) == "batch/v1/cronjobs"
    cursor = broker.cursors[(TOPIC, "down-acct-1-dev")]
    await wait_for(lambda: cursor.acked == {0})  # acked unseen by the other cluster's durable
    assert another.seen == []


async def test_connect_emits_server_connected_and_connected_clients(
    ks_bus: PulsarBus, broker: FakeBroker
) -> None:
    client = (("connectionId", "c-1"), ("synchronizerVersion", "v0.0.103"))
    connect = Envelope(ACCOUNT, CLUSTER, control=CONTROL_CONNECTED, client=client)
    seq = await ks_bus.publish(up_subject(ACCOUNT, CLUSTER), encode_envelope(connect))
    connected, clients = entries(broker)
    assert (connected.key, clients.key) == (SERVER_KEY, SERVER_KEY)
    assert connected.properties["event"] == "ServerConnected"
    assert seq == message_seq(connected.ledger, connected.entry)
    assert clients.properties["event"] == "ConnectedClients"
    assert (clients.properties["account"], clients.properties["cluster"]) == (ACCOUNT, CLUSTER)
    report = orjson.loads(clients.data)
    assert report["serverName"]
    (client,) = report["clients"]
    assert (client["account"], client["cluster"]) == (ACCOUNT, CLUSTER)
    assert (client["connectionId"], client["synchronizerVersion"]) == ("c-1", "v0.0.103")
    assert client["connectionTime"] == report["keepalive"]  # none given: the time it is sent
    # The ingester gets the connect once; the report is acked with nothing to deliver.
    rec = Recorder()
    await ks_bus.subscribe(up_partition_filter(0), "ingester-up-0", rec)
    cursor = broker.cursors[(TOPIC, "ingester-up-0")]
    await wait_for(lambda: cursor.acked == {0, 1})
    assert [decode_envelope(d.data) for d in rec.acked()] == [envelope(control=CONTROL_CONNECTED)]


def test_connect_details_survive_the_envelope_encoding() -> None:
    client = (("helmVersion", "1.2.3"), ("synchronizerVersion", "v0.0.103"))
    env = Envelope(ACCOUNT, CLUSTER, control=CONTROL_CONNECTED, client=client)
    assert decode_envelope(encode_envelope(env)) == env
    bad = orjson.dumps({"account": "a", "cluster": "c", "control": "connected",
                        "client": {"helmVersion": 3}})
    with pytest.raises(DecodeError):
        decode_envelope(bad)


async def test_a_reconciliation_request_batch_reaches_the_ingester_per_cluster(
    ks_bus: PulsarBus, broker: FakeBroker
) -> None:
    requests = [
        {"cluster": CLUSTER, "account": ACCOUNT, "depth": 0, "msgId": "",
         "serverInitiated": True, "kindToObject": None},
        {"cluster": "dev", "account": "acc-2", "depth": 0, "msgId": "",
         "serverInitiated": True, "kindToObject": None},
    ]
    payload = orjson.dumps({"depth": 0, "msgId": "rb-2", "requests": requests})
    props = {"event": "ReconciliationRequestBatch", "timestamp": "2026-03-03T20:39:29Z"}
    broker.append(TOPIC, SERVER_KEY, payload, props)
    rec = Recorder()
    await ks_bus.subscribe(up_partition_filter(0), "ingester-up-0", rec)
    await wait_for(lambda: len(rec.acked()) == 2)
    got = [(d.subject, decode_envelope(d.data)) for d in rec.acked()]
    assert got == [
        (up_subject(ACCOUNT, CLUSTER), Envelope(ACCOUNT, CLUSTER, control=CONTROL_RECONCILE)),
        (up_subject("acc-2", "dev"), Envelope("acc-2", "dev", control=CONTROL_RECONCILE)),
    ]


# ---------------------------------------------------------------- large messages


def big_put(size: int) -> bytes:
    body = orjson.dumps({"kind": "SBOMSyft", "metadata": {"name": "sbom"}, "spec": "x" * size})
    put = PutObject(ref=ObjectRef(Kind.parse("spdx.softwarecomposition.kubescape.io/v1beta1/"
                                             "sbomsyfts"), "default", "sbom"),
                    checksum="c", object=body, msg_id="big")
    return encode_envelope(envelope(put))


async def test_a_message_over_the_broker_limit_goes_through_in_chunks(
    ks_bus: PulsarBus, broker: FakeBroker
) -> None:
    data = big_put(6 * 1024 * 1024)
    subject = up_subject(ACCOUNT, CLUSTER, 5)
    await ks_bus.publish(subject, data)
    rec = Recorder()
    await ks_bus.subscribe("cs.up.>", "ingester", rec)
    await wait_for(lambda: len(rec.acked()) == 1)
    assert rec.acked()[0].data == data


async def test_the_split_layout_refuses_it_with_a_clear_error(broker: FakeBroker) -> None:
    bus = PulsarBus(FakeClient(broker), layout=SplitLayout("persistent://t/n/cs"))
    await bus.start()
    try:
        with pytest.raises(BusError, match=r"failed \(\d+ bytes\)"):
            await bus.publish(up_subject(ACCOUNT, CLUSTER, 5), big_put(6 * 1024 * 1024))
    finally:
        await bus.close()


# ---------------------------------------------------------------- versions


async def test_versions_keep_rising_across_topic_recreation(broker: FakeBroker) -> None:
    """Delivery.seq is the store's version: a topic deleted and created again (or a broker
    rolling the ledger over) must never give a later message a lower seq."""
    subject = up_subject(ACCOUNT, CLUSTER, 1)
    bus = PulsarBus(FakeClient(broker), layout=KubescapeLayout(TOPIC), redelivery_delay=0)
    await bus.start()
    before = [await bus.publish(subject, b"%d" % i) for i in range(3)]
    broker.roll_ledger(TOPIC)
    rolled = await bus.publish(subject, b"rolled")
    await bus.close()

    broker.delete_topic(TOPIC)
    restarted = PulsarBus(FakeClient(broker), layout=KubescapeLayout(TOPIC), redelivery_delay=0)
    await restarted.start()
    try:
        rec = Recorder()
        await restarted.subscribe("cs.up.>", "ingester", rec)
        after = await restarted.publish(subject, b"after")
        await wait_for(lambda: len(rec.acked()) == 1)
        assert before == sorted(before) and before[-1] < rolled < after
        assert rec.acked()[0].seq == after
        assert after < 2**63  # fits the stores' signed 64-bit column
    finally:
        await restarted.close()


async def test_a_running_durable_survives_topic_recreation(
    ks_bus: PulsarBus, broker: FakeBroker
) -> None:
    subject = up_subject(ACCOUNT, CLUSTER, 1)
    rec = Recorder()
    await ks_bus.subscribe("cs.up.>", "ingester", rec)
    first = await ks_bus.publish(subject, b"old")
    await wait_for(lambda: len(rec.acked()) == 1)
    broker.delete_topic(TOPIC)
    second = await ks_bus.publish(subject, b"new")
    await wait_for(lambda: len(rec.acked()) == 2)
    assert [(d.data, d.seq) for d in rec.acked()] == [(b"old", first), (b"new", second)]
    assert first < second

