"""The agent's link state machine, driven by hand: no sockets, no event loop, clock passed in."""

import pytest

from clustersync.model import Kind, ObjectRef
from clustersync.protocol.link_session import LinkSession
from clustersync.protocol.messages import Ack, Batch, Frame, NewChecksum, ObjectDeleted, PutObject
from clustersync.protocol.upbatch import halves

PODS = Kind("", "v1", "pods")
NODES = Kind("", "v1", "nodes")


def checksum(name: str) -> NewChecksum:
    return NewChecksum(ref=ObjectRef(PODS, "ns", name), checksum="c")


def carried(frame: Frame | None) -> list[Frame]:
    """The messages a frame stands for: a batch's objects, else the frame itself."""
    if isinstance(frame, Batch):
        return list(frame.unrolled())
    return [] if frame is None else [frame]


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
    assert carried(link.next_frame()) == [checksum("a")]
    link.delivery_finished(3, idle=False)
    link.disconnected()
    link.connected(negotiated=True, now=1.0)
    assert not link.delivery_finished(None, idle=True)  # id 3 belonged to the old connection
    assert carried(link.next_frame()) == [checksum("a")]  # the outbox survives the reconnect


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


def test_a_kubescape_server_gets_every_message_alone() -> None:
    link = LinkSession([PODS])
    link.connected(negotiated=False, now=0.0)
    link.queue([put("a"), put("b")])
    assert link.next_frame() == put("a")
    link.frame_done()
    assert link.next_frame() == put("b")


def test_a_negotiated_server_gets_waiting_object_messages_in_one_batch() -> None:
    link = LinkSession([PODS, NODES])
    link.connected(negotiated=True, now=0.0)
    link.queue([put("a"), checksum("b"), put("c"), put("n", NODES), put("d")])
    frame = link.next_frame()
    assert isinstance(frame, Batch)
    assert frame.kind == PODS
    assert sorted(m.ref.name for m in frame.unrolled()) == ["a", "b", "c"]  # up to the kind change
    link.frame_done()
    assert carried(link.next_frame()) == [put("n", NODES)]
    link.frame_done()
    assert carried(link.next_frame()) == [put("d")]
    link.frame_done()
    assert link.next_frame() is None


def test_two_messages_of_one_object_never_share_a_batch() -> None:
    # A batch is handled by message type, not arrival order: put-then-delete must stay in order.
    link = LinkSession([PODS])
    link.connected(negotiated=True, now=0.0)
    deleted = ObjectDeleted(ref=ObjectRef(PODS, "ns", "a"))
    link.queue([put("a"), put("b"), deleted])
    assert carried(link.next_frame()) == [put("a"), put("b")]
    link.frame_done()
    assert carried(link.next_frame()) == [deleted]


def test_an_ack_queued_while_a_batch_is_sent_is_not_lost() -> None:
    link = LinkSession([PODS], ack_every=1)
    link.connected(negotiated=True, now=0.0)
    link.queue([put("a"), put("b")])
    assert len(carried(link.next_frame())) == 2
    assert link.delivery_finished(5, idle=False)  # handled while the batch was on its way
    link.frame_done()
    assert link.next_frame() == Ack(ids=(5,))
    link.frame_done()
    assert link.next_frame() is None


def test_batches_are_bounded_by_items_and_bytes() -> None:
    from clustersync.protocol.upbatch import next_run

    waiting: list[Frame] = [put(f"p{i}", size=100) for i in range(10)]
    by_items = next_run(waiting, max_items=4)
    assert by_items is not None and by_items.count == 4
    by_bytes = next_run(waiting, max_bytes=3 * 300 + 50)  # 100 B payload + 200 B overhead each
    assert by_bytes is not None and by_bytes.count == 3
    huge = next_run([put("big", size=5000), put("next")], max_bytes=1000)
    assert huge is not None and huge.count == 1  # one over the budget still travels, alone


def test_a_batch_halves_into_two_that_carry_its_items_in_order() -> None:
    puts = tuple(
        PutObject(ref=ObjectRef(PODS, "ns", f"p{i}"), checksum="c", object=b"{}") for i in range(3)
    )
    removed = ObjectDeleted(ref=ObjectRef(PODS, "ns", "gone"))
    batch = Batch(kind=PODS, object_deleted=(removed,), put_object=puts, depth=1, msg_id="b")
    first, second = halves(batch)
    assert carried(first) == [removed, puts[0]]
    assert carried(second) == [puts[1], puts[2]]
    for half in (first, second):
        assert (half.kind, half.depth, half.msg_id) == (PODS, 1, "b")
    with pytest.raises(ValueError, match="no halves"):
        halves(Batch(kind=PODS, put_object=puts[:1]))
