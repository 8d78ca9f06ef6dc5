"""The fault matrix's figures: one row per scenario, printed at the end of the pytest run.

A row is the last convergence verdict a scenario's checker reached: objects diverged, backend
writes lost, and seconds from the end of the fault to convergence (or to the timeout). These are
the figures docs/reliability.md quotes.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.faults.checker import Checker


@dataclass(frozen=True)
class Row:
    scenario: str
    diverged: int
    lost: int
    seconds: float
    converged: bool


ROWS: list[Row] = []


def record(scenario: str, checker: Checker) -> None:
    if checker.verdicts:
        v = checker.verdicts[-1]
        ROWS.append(Row(scenario, len(v.diverged), v.lost_writes, v.seconds, bool(v)))


def table() -> list[str]:
    lines = [f"{'scenario':<58} {'diverged':>8} {'lost':>5} {'converge s':>10}"]
    for row in ROWS:
        seconds = f"{row.seconds:.1f}" if row.converged else f">{row.seconds:.0f}"
        lines.append(f"{row.scenario:<58} {row.diverged:>8} {row.lost:>5} {seconds:>10}")
    return lines
