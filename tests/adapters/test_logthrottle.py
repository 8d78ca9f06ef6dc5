"""Repeated log lines are rate-limited per template, and the dropped ones are counted."""

from __future__ import annotations

import logging

from prometheus_client import REGISTRY

from clustersync.adapters.logthrottle import LogThrottle


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def _record(msg: str, *args: object, name: str = "clustersync.test",
            level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def _suppressed(name: str) -> float:
    return REGISTRY.get_sample_value("clustersync_log_suppressed_total", {"logger": name}) or 0.0


def test_burst_per_template_then_silence_then_a_count_of_what_was_dropped() -> None:
    clock = Clock()
    throttle = LogThrottle(interval=10.0, burst=2, clock=clock)
    before = _suppressed("clustersync.throttle-a")
    passed = [
        throttle.filter(_record("refused %s", i, name="clustersync.throttle-a")) for i in range(50)
    ]
    assert passed == [True, True] + [False] * 48
    assert _suppressed("clustersync.throttle-a") - before == 48
    # another template of the same logger has its own allowance
    assert throttle.filter(_record("other %s", 1, name="clustersync.throttle-a"))
    clock.now = 10.0
    summary = _record("refused %s", 99, name="clustersync.throttle-a")
    assert throttle.filter(summary)
    assert summary.getMessage() == "refused 99 (48 similar lines suppressed)"


def test_debug_lines_are_never_throttled() -> None:
    throttle = LogThrottle(interval=10.0, burst=1, clock=Clock())
    assert all(throttle.filter(_record("x", level=logging.DEBUG)) for _ in range(10))
