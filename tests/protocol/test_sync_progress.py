"""The SyncProgress extension frame and the agent's initial-sync bookkeeping, in memory."""

from __future__ import annotations

import orjson
import pytest

from clustersync.model import Kind, ObjectRef
from clustersync.protocol.codec import DecodeError, decode, encode
from clustersync.protocol.messages import KindProgress, NewChecksum, SyncProgress
from clustersync.protocol.progress import InitialSync, Listing

PODS = Kind("", "v1", "pods")
DEPLOYMENTS = Kind("apps", "v1", "deployments")


def test_round_trip_in_kubescape_field_naming() -> None:
    report = SyncProgress(
        kinds=(KindProgress(PODS, 10, 4, 0, False), KindProgress(DEPLOYMENTS, 2, 2, 2, True))
    )
    wire = orjson.loads(encode(report))
    assert wire["Event"] == 103
    assert wire["Kinds"][1] == {
        "Group": "apps", "Version": "v1", "Resource": "deployments", "AdditionalProperties": None,
        "Listed": 2, "Sent": 2, "Acknowledged": 2, "Done": True,
    }
    assert decode(encode(report)) == report


@pytest.mark.parametrize(
    "item",
    [
        {"Group": "", "Version": "v1", "Resource": "pods", "Listed": -1},
        {"Group": "", "Version": "v1", "Resource": "pods", "Sent": "3"},
        {"Group": "", "Version": "v1", "Resource": "pods", "Done": "yes"},
        {"Group": "", "Version": "V1", "Resource": "pods"},
    ],
)
def test_bad_reports_are_refused(item: dict[str, object]) -> None:
    with pytest.raises(DecodeError):
        decode(orjson.dumps({"Event": 103, "Kinds": [item]}))


def test_with_a_clustersync_server_a_kind_is_done_when_its_inventory_is_answered() -> None:
    sync = InitialSync((PODS, DEPLOYMENTS), started=100.0, answers=True)
    listings = {PODS: Listing(3, True), DEPLOYMENTS: Listing(1, False)}
    assert not sync.done(listings, queued=0)
    sync.on_sent(NewChecksum(ref=ObjectRef(PODS, "ns", "a"), checksum="x", depth=0))
    sync.on_answer(PODS, 3)
    assert [line for line in sync.lines(listings)] == [
        "initial sync: apps/v1/deployments listed 1 (listing) sent 0 acknowledged 0"
    ]
    listings[DEPLOYMENTS] = Listing(1, True)
    assert not sync.done(listings, queued=0)
    sync.on_answer(DEPLOYMENTS, 1)
    assert not sync.done(listings, queued=2)  # still sending
    assert sync.done(listings, queued=0)
    assert sync.report(listings).kinds == (
        KindProgress(PODS, 3, 1, 3, True),
        KindProgress(DEPLOYMENTS, 1, 0, 1, True),
    )
    assert sync.summary(listings, 102.5) == "initial sync done: 4 objects in 2.5 s"


def test_with_a_kubescape_server_a_kind_is_done_once_every_object_is_announced() -> None:
    sync = InitialSync((PODS,), started=0.0, answers=False)
    listings = {PODS: Listing(2, True)}
    sync.on_sent(NewChecksum(ref=ObjectRef(PODS, "ns", "a"), checksum="x", depth=0))
    assert not sync.done(listings, queued=0)
    sync.on_sent(NewChecksum(ref=ObjectRef(PODS, "ns", "b"), checksum="y", depth=0))
    assert sync.done(listings, queued=0)
