"""Rate-limited logging: a flood of bad input must not become a flood of log lines.

A hostile or broken peer can trigger the same warning thousands of times a second; written out,
that filled a disk faster than the process could serve agents. :class:`LogThrottle` lets a few
records per message template through in each interval, drops the rest, counts every dropped
record in ``clustersync_log_suppressed_total``, and says how many were dropped on the next line
it lets through for that template.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Counter

LOG_SUPPRESSED = Counter(
    "clustersync_log_suppressed_total",
    "Log lines dropped by the rate limit on repeated messages, by logger",
    ["logger"],
)

KEY_CHARS = 48


@dataclass(slots=True)
class _Window:
    started: float
    passed: int = 0
    suppressed: int = 0


class LogThrottle(logging.Filter):
    """At most ``burst`` records per (logger, level, template start) every ``interval`` seconds.

    Records below ``min_level`` (routine information, debug output) are never throttled.
    """

    def __init__(
        self,
        interval: float = 10.0,
        burst: int = 5,
        min_level: int = logging.WARNING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.interval = interval
        self.burst = burst
        self.min_level = min_level
        self._clock = clock
        self._windows: dict[tuple[str, int, str], _Window] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.min_level:
            return True
        # The template's start: some libraries (asyncio) log preformatted text whose tail varies.
        key = (record.name, record.levelno, str(record.msg)[:KEY_CHARS])
        now = self._clock()
        window = self._windows.get(key)
        if window is None or now - window.started >= self.interval:
            suppressed = window.suppressed if window is not None else 0
            if len(self._windows) > 10_000:  # templates are few; this bounds odd formatting
                self._windows.clear()
            self._windows[key] = _Window(now, passed=1)
            if suppressed:
                record.msg = f"{record.msg} ({suppressed} similar lines suppressed)"
            return True
        if window.passed < self.burst:
            window.passed += 1
            return True
        window.suppressed += 1
        LOG_SUPPRESSED.labels(record.name).inc()
        return False


def install(handler_filter: LogThrottle | None = None) -> LogThrottle:
    """Throttle every handler of the root logger (call after logging is configured)."""
    throttle = handler_filter or LogThrottle()
    for handler in logging.getLogger().handlers:
        handler.addFilter(throttle)
    return throttle
