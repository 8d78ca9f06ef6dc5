"""What every sub-command shares."""

from __future__ import annotations

import asyncio
import gc


class CommandError(RuntimeError):
    """A failure to report in one line; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def tune_gc() -> None:
    # Long-running processes hold large caches: the default thresholds made JSON decoding of big
    # lists several times slower here (see docs/benchmarks.md).
    gc.set_threshold(50_000, 20, 100)


async def serve_forever() -> None:
    await asyncio.Event().wait()
