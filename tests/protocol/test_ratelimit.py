"""The token bucket behind the per-connection message-rate limit."""

from __future__ import annotations

from clustersync.protocol.ratelimit import TokenBucket


def test_a_full_bucket_allows_the_burst_then_refuses() -> None:
    bucket = TokenBucket(rate=10, burst=3)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]


def test_tokens_come_back_at_the_rate_and_never_beyond_the_burst() -> None:
    bucket = TokenBucket(rate=10, burst=3)
    for _ in range(3):
        assert bucket.take(0.0)
    assert not bucket.take(0.05)  # half a token back
    assert bucket.take(0.1)  # one whole token after 0.1 s
    assert not bucket.take(0.1)
    # a long pause refills to the burst, not beyond
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]


def test_rate_zero_is_unlimited() -> None:
    bucket = TokenBucket(rate=0, burst=0)
    assert all(bucket.take(0.0) for _ in range(10_000))
