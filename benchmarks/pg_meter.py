"""Where PostgreSQL's CPU goes while a benchmark writes: per process role, per transaction, WAL.

CPU comes from /proc for every process under the postmaster, by role (the process title:
client backends, walwriter, checkpointer, background writer, autovacuum), plus the postmaster's
reaped children (a backend or autovacuum worker that ended in the interval is counted there,
not missed). WAL bytes are exact (the insert position), and so are writing transactions (the
transaction ids handed out); full-page images come from a statistics view, which backends update
when idle, at most once a second: taken 1.5 s after the work, it may miss the last second of a
busy backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from benchmarks.prod_parts import process_tree

# Process titles ("postgres: walwriter", "postgres: autovacuum worker db", ...) and the role
# each is counted under; anything else under the postmaster is a client backend.
_ROLES = (
    ("walwriter", "walwriter"),
    ("checkpointer", "checkpointer"),
    ("background writer", "bgwriter"),
    ("autovacuum", "autovacuum"),
    ("logical replication", "other"),
    ("stats collector", "other"),
)
ROLE_ORDER = ("backends", "walwriter", "checkpointer", "bgwriter", "autovacuum", "ended", "other")
DRIVER = "driver"  # the backend of the benchmark's own polling connection, counted apart


def _ticks(pid: int, *, children: bool = False) -> int:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
        # utime, stime; cutime, cstime (children waited for) start two fields later
        at = 13 if children else 11
        return int(fields[at]) + int(fields[at + 1])
    return 0


def _role(pid: int, postmaster: int) -> str:
    if pid == postmaster:
        return "other"
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return "other"
    for needle, role in _ROLES:
        if needle in title:
            return role
    return "backends"


def cpu_by_role(postmaster: int, driver: frozenset[int] = frozenset()) -> dict[str, float]:
    """CPU seconds so far of every PostgreSQL process, summed by role; the backends in
    ``driver`` (serving the benchmark's own queries) under DRIVER."""
    tick = os.sysconf("SC_CLK_TCK")
    used = dict.fromkeys((*ROLE_ORDER, DRIVER), 0.0)
    for pid in process_tree(postmaster):
        role = DRIVER if pid in driver else _role(pid, postmaster)
        used[role] += _ticks(pid) / tick
    used["ended"] += _ticks(postmaster, children=True) / tick
    return used


@dataclass
class _Snapshot:
    cpu: dict[str, float]
    commits: int
    wal_lsn: int
    wal_fpi: int


@dataclass
class PgMeter:
    """``await start()``, the work, ``await report(n)``: PostgreSQL's cost of n objects."""

    postmaster: int
    url: str
    driver: frozenset[int] = frozenset()  # backend pids serving the benchmark's polling
    before: _Snapshot | None = field(default=None, repr=False)

    async def _snapshot(self, conn: asyncpg.Connection) -> _Snapshot:
        # Transaction ids go to writing transactions only (the polling's reads take none), and
        # the next one to hand out is read without taking it.
        commits = await conn.fetchval(
            "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
        )
        wal = await conn.fetchrow(
            "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint AS lsn, wal_fpi"
            " FROM pg_stat_wal"
        )
        return _Snapshot(cpu_by_role(self.postmaster, self.driver), int(commits), int(wal["lsn"]),
                         int(wal["wal_fpi"]))

    async def start(self) -> None:
        conn = await asyncpg.connect(self.url)
        try:
            self.before = await self._snapshot(conn)
        finally:
            await conn.close()

    async def report(self, count: int, what: str = "object") -> float:
        """Print the breakdown; returns PostgreSQL's CPU seconds per ``what``."""
        assert self.before is not None, "start() first"
        # Backends publish their counters when idle, at most once a second (the WAL position is
        # exact): this waits for them to, not for any work.
        await asyncio.sleep(1.5)
        conn = await asyncpg.connect(self.url)
        try:
            after = await self._snapshot(conn)
        finally:
            await conn.close()
        used = {k: after.cpu[k] - self.before.cpu[k] for k in ROLE_ORDER}
        total = sum(used.values())
        parts = " · ".join(f"{k} {v / count * 1e3:.3f}" for k, v in used.items() if v > 0)
        commits = after.commits - self.before.commits
        polling = (after.cpu[DRIVER] - self.before.cpu[DRIVER]) / count * 1e3
        print(f"    PostgreSQL CPU ms per {what}: {total / count * 1e3:.3f} ({parts}); besides, "
              f"the benchmark's polling {polling:.3f}", flush=True)
        wal = after.wal_lsn - self.before.wal_lsn
        print(f"    PostgreSQL per {what}: {wal / count:,.0f} B of WAL, "
              f"{(after.wal_fpi - self.before.wal_fpi) / count:.2f} full-page images "
              "(as last reported); "
              f"{commits:,} writing transactions ({count / max(commits, 1):,.0f} {what}s each)",
              flush=True)
        return total / count
