"""The agent's link state machine, driven by hand: no sockets, no event loop, clock passed in."""

from clustersync.model import Kind, ObjectRef
from clustersync.protocol.link_session import LinkSession
from clustersync.protocol.messages import Ack, NewChecksum, ObjectDeleted, PutObject

PODS = Kind("", "v1", "pods")
NODES = Kind("", "v1", "nodes")


def checksum(name: str) -> NewChecksum:
    return NewChecksum(ref=ObjectRef(PODS, "ns", name), checksum="c")


def test_the_outbox_is_bounded_for_producers_and_drains_in_order() -> None:
    link = LinkSession([PODS], outbox_limit=2)
    assert link.has_room()
    link.queue([checksum("a"), checksum("b")])
    assert not link.has_room()
    assert link.next_frame() == checksum("a")
    link.frame_done()
    assert link.has_room()
    assert link.next_frame() == checksum("b")
    link.frame_done()
    assert link.next_frame() is None


def test_acks_go_before_queued_messages_and_are_per_connection() -> None:
    link = LinkSession([PODS], ack_every=2)
    link.connected(negotiated=True, now=0.0)
    link.queue([checksum("a")])
    assert not link.delivery_finished(1, idle=False)  # one of two: not yet
    assert link.delivery_finished(2, idle=False)
    assert link.next_frame() == Ack(ids=(1, 2))
    link.frame_done()
    assert link.next_frame() == checksum("a")
    link.delivery_finished(3, idle=False)
    link.disconnected()
    link.connected(negotiated=True, now=1.0)
    assert not link.delivery_finished(None, idle=True)  # id 3 belonged to the old connection
    assert link.next_frame() == checksum("a")  # the outbox survives the reconnect


def test_a_rejected_frame_is_acked_when_the_inbox_is_idle() -> None:
    link = LinkSession([PODS])
    link.connected(negotiated=True, now=0.0)
    assert link.delivery_finished(9, idle=True)
    assert link.next_frame() == Ack(ids=(9,))


def test_additions_wait_for_the_inventory_only_with_a_negotiating_server() -> None:
    link = LinkSession([PODS, NODES])
    link.connected(negotiated=True, now=0.0)
    assert not link.announces_addition(PODS)
    link.inventory_requested(PODS)
    assert link.announces_addition(PODS)
    assert not link.announces_addition(NODES)
    link.disconnected()
    link.connected(negotiated=False, now=5.0)  # a kubescape server: announce everything
    assert link.announces_addition(NODES)


def test_resync_timing_follows_the_clock_passed_in() -> None:
    link = LinkSession([PODS], resync_interval=600.0)
    assert link.resync_delay(0.0) is None  # not connected
    link.connected(negotiated=True, now=100.0)
    assert link.resync_delay(100.0) == 600.0
    assert link.resync_delay(650.0) == 50.0
    assert link.resync_delay(800.0) == 0.0
    link.resynced(800.0)
    assert link.resync_delay(800.0) == 600.0
    link.disconnected()
    assert link.resync_delay(900.0) is None
    link.connected(negotiated=False, now=1000.0)  # kubescape servers push their own
    assert link.resync_delay(1000.0) is None


def test_a_dropped_frame_is_done_too() -> None:
    link = LinkSession([PODS])
    deleted = ObjectDeleted(ref=ObjectRef(PODS, "ns", "x"))
    link.queue([deleted, checksum("y")])
    link.frame_done()  # e.g. too large to send: dropped, reported by the driver
    assert link.next_frame() == checksum("y")


def put(name: str, kind: Kind = PODS, size: int = 10) -> PutObject:
    return PutObject(ref=ObjectRef(kind, "ns", name), checksum="c", object=b"x" * size)


def test_an_ack_queued_while_a_message_is_sent_is_not_lost() -> None:
    link = LinkSession([PODS], ack_every=1)
    link.connected(negotiated=True, now=0.0)
    link.queue([put("a"), put("b")])
    assert link.next_frame() == put("a")
    assert link.delivery_finished(5, idle=False)  # handled while put("a") was on its way
    link.frame_done()
    assert link.next_frame() == Ack(ids=(5,))
    link.frame_done()
    assert link.next_frame() == put("b")
    link.frame_done()
    assert link.next_frame() is None
