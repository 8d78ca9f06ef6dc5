"""Shared fixtures: one throwaway PostgreSQL and one NATS server per test session.

The servers start lazily (only when a test asks for them) and are stopped at session end. Tests
get isolation cheaply on top of them: a fresh database per test, a fresh stream per test.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

try:  # `python -m pytest` from the repo root puts the root on sys.path ...
    from tests.servers import RunningNats, RunningPostgres, start_nats, start_postgres
except ImportError:  # ... plain `pytest` puts tests/ itself there (rootdir conftest, no package)
    from servers import (  # type: ignore[no-redef]
        RunningNats,
        RunningPostgres,
        start_nats,
        start_postgres,
    )


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[RunningPostgres]:
    # No tmp_path_factory here: pytest's temp root is 0700 root-owned when running as root and
    # the unprivileged PostgreSQL user could not reach it; start_postgres makes its own dir.
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: RunningPostgres) -> str:
    """``postgresql://postgres@127.0.0.1:PORT/clustersync`` shared by the whole session."""
    return postgres_server.url


@pytest.fixture
async def pg_database_url(postgres_server: RunningPostgres,
                          request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A brand-new empty database for one test, dropped afterwards."""
    import asyncpg

    slug = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:30]
    name = f"t_{slug}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(postgres_server.url_for("postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield postgres_server.url_for(name)
    finally:
        admin = await asyncpg.connect(postgres_server.url_for("postgres"))
        try:
            # FORCE: a test that failed may have left connections open.
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNats]:
    server = start_nats(tmp_path_factory.mktemp("nats"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def nats_url(nats_server: RunningNats) -> str:
    """``nats://127.0.0.1:PORT`` of a JetStream-enabled server shared by the whole session."""
    return nats_server.url


@pytest.fixture
async def nats_stream(nats_url: str) -> AsyncIterator[str]:
    """A stream name unique to one test, deleted afterwards.

    Streams on one server may not share subjects, and every bus test uses ``cs.>``, so the
    stream is deleted at teardown rather than merely renamed; tests therefore run one at a
    time against a server (as they do without xdist)."""
    import nats
    from nats.js.errors import NotFoundError

    name = f"T{uuid.uuid4().hex[:12].upper()}"
    yield name
    nc = await nats.connect(nats_url)
    try:
        with contextlib.suppress(NotFoundError):
            await nc.jetstream().delete_stream(name)
    finally:
        await nc.close()
