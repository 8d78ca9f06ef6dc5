"""``clustersync demo`` end to end: every flow on the embedded parts, in one process."""

from __future__ import annotations

import io

from clustersync.runtime.demo import run_demo


async def test_demo_converges() -> None:
    out = io.StringIO()
    assert await run_demo(timeout=60, out=out) is True, out.getvalue()
    text = out.getvalue()
    assert "backend matches cluster" in text
    assert "MISMATCH" not in text
    assert " NO\n" not in text  # every kind row of the final table matches
