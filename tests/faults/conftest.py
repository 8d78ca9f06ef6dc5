"""Fixtures of the fault matrix: fleets on the embedded backend or on NATS + PostgreSQL.

Each test gets its own backend processes, its own NATS server (so that restarting it touches no
other test) and its own database, and every fixture stops what it started even on failure.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from tests.faults.report import ROWS, record, table
from tests.faults.topology import (
    Fleet,
    embedded_backend,
    make_fleet,
    scaled_out_backend,
    write_tokens,
)
from tests.servers import RunningNats, start_nats

CLUSTERS = ["c1", "c2", "v1.10", "v1\u2e10", *(f"storm-{i:02d}" for i in range(50))]


@pytest.fixture
def tokens(tmp_path: Path) -> Path:
    return write_tokens(tmp_path / "tokens.yaml", CLUSTERS)


@pytest.fixture
async def embedded(tmp_path: Path, tokens: Path,
                   request: pytest.FixtureRequest) -> AsyncIterator[Fleet]:
    """``clustersync backend`` (embedded bus, SQLite) as one process; no clusters yet."""
    fleet = await make_fleet(tmp_path, await embedded_backend(tmp_path, tokens))
    try:
        yield fleet
    finally:
        record(request.node.name, fleet.checker)
        fleet.print_logs()
        await fleet.stop()


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[RunningNats]:
    server = start_nats(tmp_path / "nats")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server_replicas() -> int:
    """How many server processes ``scaled`` runs; override by parametrizing."""
    return 1


@pytest.fixture
async def scaled(  # noqa: PLR0917 - fixtures are injected by name
        tmp_path: Path, tokens: Path, own_nats: RunningNats, pg_database_url: str,
        server_replicas: int, request: pytest.FixtureRequest) -> AsyncIterator[Fleet]:
    """Server, ingester and API processes on their own NATS server and PostgreSQL database."""
    backend = await scaled_out_backend(tmp_path, tokens, own_nats.url, pg_database_url,
                                       servers=server_replicas)
    fleet = await make_fleet(tmp_path, backend)
    try:
        yield fleet
    finally:
        record(request.node.name, fleet.checker)
        fleet.print_logs()
        await fleet.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if ROWS:
        terminalreporter.section("fault matrix")
        for line in table():
            terminalreporter.write_line(line)
