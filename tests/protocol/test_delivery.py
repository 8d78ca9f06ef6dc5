"""The pure parts of acknowledgement by delivery id: the server's ledger, the agent's collector,
and the attempt limit, with no sockets."""

from clustersync.protocol.delivery import (
    AckCollector,
    DeliveryLedger,
    DeliveryPolicy,
    read_delivery_id,
)


def test_ledger_numbers_deliveries_and_settles_them_by_id_in_any_order() -> None:
    ledger: DeliveryLedger[str] = DeliveryLedger()
    ids = [ledger.issue(name) for name in ("a", "b", "c")]
    assert ids == [1, 2, 3]
    assert ledger.settle([3, 1]) == ["c", "a"]
    assert len(ledger) == 1
    assert ledger.settle([3, 99]) == []  # repeated and unknown ids change nothing
    assert ledger.drain() == ["b"]
    assert len(ledger) == 0


def test_a_forgotten_delivery_ignores_its_late_ack() -> None:
    ledger: DeliveryLedger[str] = DeliveryLedger()
    late = ledger.issue("late")
    ledger.forget(late)
    assert ledger.settle([late]) == []
    assert ledger.issue("next") == late + 1  # ids are never reused within a connection


def test_only_timed_out_deliveries_count_towards_parking() -> None:
    policy = DeliveryPolicy(ack_timeout=1.0, max_attempts=3)
    assert not policy.exhausted("s", 7)
    assert [policy.timed_out("s", 7) for _ in range(2)] == [1, 2]
    assert not policy.exhausted("s", 7)
    assert not policy.exhausted("s", 8) and not policy.exhausted("t", 7)  # per message
    policy.timed_out("s", 7)
    assert policy.exhausted("s", 7)
    policy.settled("s", 7)  # parked or finally acknowledged: forgotten
    assert not policy.exhausted("s", 7)


def test_the_timeout_counts_are_bounded() -> None:
    policy = DeliveryPolicy(max_attempts=1, remembered=2)
    for seq in (1, 2, 3):
        policy.timed_out("s", seq)
    assert not policy.exhausted("s", 1)  # the oldest was forgotten
    assert policy.exhausted("s", 2) and policy.exhausted("s", 3)


def test_collector_acks_when_idle_or_after_a_burst() -> None:
    collector = AckCollector(every=3)
    collector.handled(1)
    assert not collector.due(idle=False)
    assert collector.due(idle=True)
    collector.handled(None)  # a frame without an id (a kubescape server) adds nothing
    collector.handled(5)
    collector.handled(2)
    assert collector.due(idle=False)
    assert collector.take() == (1, 5, 2)
    assert not collector.due(idle=True)
    collector.handled(7)
    collector.reset()
    assert collector.take() == ()


def test_delivery_id_is_read_leniently() -> None:
    assert read_delivery_id({"DeliveryId": 4}) == 4
    assert read_delivery_id({"deliveryid": 4.0}) == 4
    assert read_delivery_id({"DELIVERYID": 4, "Event": "junk"}) == 4
    for doc in ({"DeliveryId": -1}, {"DeliveryId": "4"}, {"DeliveryId": None}, [4], 4, None, {}):
        assert read_delivery_id(doc) is None, doc
