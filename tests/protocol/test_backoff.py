"""Jittered exponential backoff (policy only; nothing sleeps)."""

from __future__ import annotations

import random

import pytest

from clustersync.protocol.backoff import Backoff


def test_defaults_are_kubescapes() -> None:
    b = Backoff()
    assert (b.initial, b.multiplier, b.ceiling, b.jitter) == (0.5, 1.5, 60.0, 0.5)


def test_growth_without_jitter() -> None:
    b = Backoff(initial=0.5, multiplier=1.5, ceiling=60, jitter=0)
    delays = [b.next_delay() for _ in range(5)]
    assert delays == pytest.approx([0.5, 0.75, 1.125, 1.6875, 2.53125])


def test_ceiling_without_jitter() -> None:
    b = Backoff(initial=1, multiplier=2, ceiling=10, jitter=0)
    delays = [b.next_delay() for _ in range(8)]
    assert delays == [1, 2, 4, 8, 10, 10, 10, 10]


def test_default_policy_reaches_the_ceiling() -> None:
    b = Backoff(jitter=0)
    delays = [b.next_delay() for _ in range(30)]
    assert delays == sorted(delays)
    assert delays[-1] == 60.0
    assert max(delays) == 60.0


def test_jitter_bounds_with_seeded_rng() -> None:
    b = Backoff(rng=random.Random(1234))
    nominal = 0.5
    seen = []
    for step in range(40):
        if step:
            nominal = min(60.0, nominal * 1.5)
        delay = b.next_delay()
        assert nominal * 0.5 <= delay <= nominal * 1.5
        seen.append(delay / nominal)
    # The jitter actually spreads: not all on one side, not constant.
    assert min(seen) < 0.9
    assert max(seen) > 1.1
    assert len({round(x, 6) for x in seen}) > 30


def test_seeded_rng_is_deterministic() -> None:
    a = Backoff(rng=random.Random(7))
    b = Backoff(rng=random.Random(7))
    assert [a.next_delay() for _ in range(20)] == [b.next_delay() for _ in range(20)]


def test_full_jitter_never_negative() -> None:
    b = Backoff(initial=1, multiplier=2, ceiling=8, jitter=1.5, rng=random.Random(3))
    assert all(b.next_delay() >= 0 for _ in range(200))


def test_reset() -> None:
    b = Backoff(initial=1, multiplier=3, ceiling=100, jitter=0)
    assert [b.next_delay() for _ in range(3)] == [1, 3, 9]
    b.reset()
    assert b.next_delay() == 1
    assert b.next_delay() == 3


def test_instances_do_not_share_state() -> None:
    a = Backoff(jitter=0)
    b = Backoff(jitter=0)
    a.next_delay()
    a.next_delay()
    assert b.next_delay() == 0.5
    assert a.rng is not b.rng
