"""Per-object coalescing: leading edge, then a quiet period bounded by max_wait (no real time)."""

from __future__ import annotations

import pytest

from clustersync.protocol.coalesce import Coalescer


def sent_at(c: Coalescer[str, str], key: str, now: float) -> None:
    """Send ``key`` once at ``now``, so its next change falls in the coalescing window."""
    c.offer(key, "warm-up", now)
    assert c.pop_due(now) == ["warm-up"]


def test_empty() -> None:
    c: Coalescer[str, str] = Coalescer(quiet=5, max_wait=30)
    assert len(c) == 0
    assert c.next_due() is None
    assert c.pop_due(1e9) == []
    assert c.drain() == []


@pytest.mark.parametrize(("quiet", "max_wait"), [(-1, 10), (5, 4)])
def test_invalid_settings(quiet: float, max_wait: float) -> None:
    with pytest.raises(ValueError):
        Coalescer(quiet=quiet, max_wait=max_wait)


def test_zero_quiet_is_immediate() -> None:
    c: Coalescer[str, str] = Coalescer(quiet=0, max_wait=0)
    assert c.offer("a", "v", now=7) is True
    assert c.next_due() == 7
    assert c.pop_due(7) == ["v"]
    assert c.offer("a", "w", now=7) is True  # even right after a send
    assert c.pop_due(7) == ["w"]


def test_first_change_after_a_quiet_period_is_due_at_once() -> None:
    c: Coalescer[str, str] = Coalescer(quiet=5, max_wait=30)
    assert c.offer("pod", "v1", now=100) is True
    assert c.next_due() == 100
    assert c.pop_due(100) == ["v1"]
    # Quiet for exactly `quiet` seconds since the send: leading edge again.
    assert c.offer("pod", "v2", now=105) is True
    assert c.pop_due(105) == ["v2"]


def test_a_change_soon_after_a_send_waits_for_quiet() -> None:
    c: Coalescer[str, str] = Coalescer(quiet=5, max_wait=30)
    sent_at(c, "pod", 0)
    assert c.offer("pod", "v2", now=4.9) is False
    assert c.next_due() == 9.9
    assert c.pop_due(9.8) == []
    assert c.pop_due(9.9) == ["v2"]


def test_a_leading_change_not_yet_sent_takes_later_values_and_stays_due() -> None:
    c: Coalescer[str, str] = Coalescer(quiet=5, max_wait=30)
    assert c.offer("pod", "ADDED", now=0) is True
    assert c.offer("pod", "MODIFIED", now=3) is True
    assert c.next_due() == 0
    assert c.pop_due(3) == ["MODIFIED"]


def test_last_event_wins() -> None:
    c: Coalescer[str, str] = Coalescer(quiet=5, max_wait=30)
    sent_at(c, "pod", 0)
    c.offer("pod", "ADDED", now=0)
    c.offer("pod", "MODIFIED", now=1)
    c.offer("pod", "MODIFIED-2", now=2)
    assert len(c) == 1
    assert c.pop_due(100) == ["MODIFIED-2"]
    sent_at(c, "pod", 200)
    c.offer("pod", "DELETED", now=200)
    c.offer("pod", "ADDED", now=201)
    assert c.pop_due(300) == ["ADDED"]
    assert len(c) == 0


def test_quiet_debounce() -> None:
    c: Coalescer[str, str] = Coalescer(quiet=5, max_wait=30)
    sent_at(c, "k", 0)
    c.offer("k", "1", now=1)
    assert c.pop_due(5.9) == []
    c.offer("k", "2", now=4)  # a change restarts the quiet period
    assert c.next_due() == 9
    assert c.pop_due(8.9) == []
    assert c.pop_due(9) == ["2"]
    assert c.pop_due(100) == []


def test_keys_are_independent() -> None:
    c: Coalescer[str, str] = Coalescer(quiet=5, max_wait=30)
    sent_at(c, "a", 0)
    sent_at(c, "b", 0)
    c.offer("a", "a1", now=0)
    c.offer("b", "b1", now=3)
    assert c.offer("fresh", "f1", now=3) is True  # never sent: due at once
    assert c.pop_due(3) == ["f1"]
    assert c.next_due() == 5
    assert c.pop_due(5) == ["a1"]
    assert c.next_due() == 8
    assert c.pop_due(8) == ["b1"]


def test_max_wait_prevents_starvation() -> None:
    c: Coalescer[str, int] = Coalescer(quiet=5, max_wait=30)
    emitted: list[tuple[float, int]] = []
    now = 0.0
    version = 0
    # The object changes every second, forever: it is never quiet for 5 s.
    while now < 100:
        version += 1
        c.offer("busy", version, now)
        for value in c.pop_due(now):
            emitted.append((now, value))
        now += 1
    # The first change goes out at once; then, without the bound, nothing would ever be sent;
    # with it, at least every 30 s after the first change held back (at 1, 32, 63).
    assert [t for t, _ in emitted] == [0, 31, 62, 93]
    assert [v for _, v in emitted] == [1, 32, 63, 94]  # each time the latest version


def test_max_wait_counts_from_first_pending_change() -> None:
    c: Coalescer[str, int] = Coalescer(quiet=5, max_wait=10)
    c.offer("k", 0, now=0)
    assert c.pop_due(0) == [0]
    c.offer("k", 1, now=0)
    c.offer("k", 2, now=4)
    c.offer("k", 3, now=8)
    assert c.next_due() == 10  # min(8 + 5, 0 + 10)
    assert c.pop_due(9.99) == []
    assert c.pop_due(10) == [3]
    # A change right after that send starts a new window.
    assert c.offer("k", 4, now=11) is False
    assert c.next_due() == 16


def test_next_due_is_the_earliest() -> None:
    c: Coalescer[str, str] = Coalescer(quiet=5, max_wait=12)
    sent_at(c, "late", 0)
    sent_at(c, "early", 0)
    c.offer("early", "y", now=1)
    c.offer("late", "x", now=4)
    assert c.next_due() == 6
    c.offer("early", "y2", now=5)
    assert c.next_due() == 9  # now the other key
    c.offer("late", "x2", now=8)
    assert c.next_due() == 10
    c.offer("early", "y3", now=9)
    assert c.next_due() == 13  # max_wait bound: 1 + 12, and late's quiet end: 8 + 5
    assert c.pop_due(12.9) == []
    assert c.pop_due(13) == ["y3", "x2"]
    assert c.next_due() is None


def test_pop_due_orders_by_first_pending_change() -> None:
    c: Coalescer[str, str] = Coalescer(quiet=5, max_wait=30)
    for key in ("a", "b", "c"):
        sent_at(c, key, 0)
    c.offer("b", "b1", now=1)
    c.offer("a", "a1", now=2)
    c.offer("c", "c1", now=0)
    c.offer("c", "c2", now=3)  # still the oldest pending change
    assert c.pop_due(10) == ["c2", "b1", "a1"]


def test_drain_returns_everything_oldest_first() -> None:
    c: Coalescer[str, str] = Coalescer(quiet=5, max_wait=30)
    c.offer("b", "b1", now=2)
    c.offer("a", "a1", now=1)
    c.offer("b", "b2", now=3)
    assert c.drain() == ["a1", "b2"]
    assert len(c) == 0
    assert c.next_due() is None


def test_discarded_entries_never_come_due() -> None:
    c: Coalescer[str, str] = Coalescer(quiet=5, max_wait=30)
    c.offer("a", "drop-me", now=0)
    c.offer("b", "keep", now=1)
    assert c.discard_where(lambda v: v == "drop-me") == 1
    assert c.next_due() == 1
    assert c.pop_due(100) == ["keep"]


def test_only_a_leading_offer_makes_the_earliest_due_time_earlier() -> None:
    # The agent relies on this to wake its flusher only for a leading offer or an empty coalescer.
    c: Coalescer[str, int] = Coalescer(quiet=1.0, max_wait=3.0)
    c.offer("a", 0, now=0.0)
    c.pop_due(0.0)
    c.offer("a", 1, now=0.0)
    for step in range(1, 40):
        now = step * 0.25
        before = c.next_due()
        leading = c.offer("a" if step % 2 else f"k{step % 6}", step, now)
        after = c.next_due()
        assert after is not None
        if not leading and before is not None:
            assert after >= before
        c.pop_due(now)


def test_many_waiting_objects_come_due_in_time_order() -> None:
    c: Coalescer[int, int] = Coalescer(quiet=1, max_wait=2)
    for key in range(1000):
        c.offer(key, key, now=0)
    assert c.pop_due(0) == list(range(1000))
    for key in range(1000):
        c.offer(key, -key, now=key / 1000)  # each waits for quiet after its own change
    assert c.pop_due(1.4995) == [-k for k in range(500)]
    assert c.pop_due(2.0) == [-k for k in range(500, 1000)]
    assert len(c) == 0
