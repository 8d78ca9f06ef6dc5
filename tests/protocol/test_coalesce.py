"""Per-object coalescing with a quiet period and a bound on waiting (no real time involved)."""

from __future__ import annotations

import pytest

from clustersync.protocol.coalesce import Coalescer


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
    c.offer("a", "v", now=7)
    assert c.next_due() == 7
    assert c.pop_due(7) == ["v"]


def test_last_event_wins() -> None:
    c: Coalescer[str, str] = Coalescer(quiet=5, max_wait=30)
    c.offer("pod", "ADDED", now=0)
    c.offer("pod", "MODIFIED", now=1)
    c.offer("pod", "MODIFIED-2", now=2)
    assert len(c) == 1
    assert c.pop_due(100) == ["MODIFIED-2"]
    c.offer("pod", "DELETED", now=200)
    c.offer("pod", "ADDED", now=201)
    assert c.pop_due(300) == ["ADDED"]
    assert len(c) == 0


def test_quiet_debounce() -> None:
    c: Coalescer[str, int] = Coalescer(quiet=5, max_wait=30)
    c.offer("k", 1, now=0)
    assert c.pop_due(4.9) == []
    c.offer("k", 2, now=4)  # a change restarts the quiet period
    assert c.next_due() == 9
    assert c.pop_due(8.9) == []
    assert c.pop_due(9) == [2]
    assert c.pop_due(100) == []


def test_keys_are_independent() -> None:
    c: Coalescer[str, str] = Coalescer(quiet=5, max_wait=30)
    c.offer("a", "a1", now=0)
    c.offer("b", "b1", now=3)
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
    # Without the bound nothing would ever be sent; with it, at least every 30 s.
    assert [t for t, _ in emitted] == [30, 61, 92]
    assert [v for _, v in emitted] == [31, 62, 93]  # each time the latest version


def test_max_wait_counts_from_first_pending_change() -> None:
    c: Coalescer[str, int] = Coalescer(quiet=5, max_wait=10)
    c.offer("k", 1, now=0)
    c.offer("k", 2, now=4)
    c.offer("k", 3, now=8)
    assert c.next_due() == 10  # min(8 + 5, 0 + 10)
    assert c.pop_due(9.99) == []
    assert c.pop_due(10) == [3]
    # A new change after popping starts a new window.
    c.offer("k", 4, now=11)
    assert c.next_due() == 16


def test_next_due_is_the_earliest() -> None:
    c: Coalescer[str, str] = Coalescer(quiet=5, max_wait=12)
    c.offer("late", "x", now=10)
    c.offer("early", "y", now=2)
    assert c.next_due() == 7
    c.offer("early", "y2", now=6)
    assert c.next_due() == 11
    c.offer("early", "y3", now=10)
    assert c.next_due() == 14  # max_wait bound: 2 + 12
    c.offer("late", "x2", now=11)
    assert c.next_due() == 14
    assert c.pop_due(14) == ["y3"]
    assert c.next_due() == 16


def test_pop_due_orders_by_first_pending_change() -> None:
    c: Coalescer[str, str] = Coalescer(quiet=5, max_wait=30)
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


def test_an_offer_never_makes_the_earliest_due_time_earlier() -> None:
    # The agent relies on this to wake its flusher only when the coalescer was empty.
    c: Coalescer[str, int] = Coalescer(quiet=1.0, max_wait=3.0)
    c.offer("a", 1, now=0.0)
    for step in range(1, 40):
        now = step * 0.25
        before = c.next_due()
        c.offer("a" if step % 2 else f"k{step}", step, now)
        after = c.next_due()
        assert before is not None and after is not None and after >= before
        c.pop_due(now)
