"""``clustersync dlq list|show|replay|drop`` and ``clustersync db migrate``, as real processes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.servers import start_nats

from clustersync.adapters.bus import Delivery
from clustersync.adapters.bus.nats import open_nats
from clustersync.adapters.store.postgres import open_postgres
from clustersync.adapters.store.sqlite import open_sqlite

from .clitools import run_cli


async def test_dead_letters_can_be_listed_shown_replayed_and_dropped(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/dlq.db"
    store = await open_sqlite(db)
    first = await store.park("cs.up.acme.east.3", b'{"broken": true}', "undecodable: no account")
    second = await store.park("cs.write.acme.east", b"garbage", "failed 5 times: boom")
    await store.close()

    listed = await run_cli("dlq", "list", "--db", db)
    assert listed.code == 0, listed
    lines = listed.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{first}  cs.up.acme.east.3  16 B  undecodable")
    assert lines[1].startswith(f"{second}  cs.write.acme.east")

    shown = await run_cli("dlq", "show", str(first), "--db", db)
    assert shown.code == 0, shown
    assert "reason: undecodable: no account" in shown.stdout
    assert '{"broken": true}' in shown.stdout

    dropped = await run_cli("dlq", "drop", str(second), "--db", db)
    assert dropped.code == 0, dropped
    missing = await run_cli("dlq", "show", str(second), "--db", db)
    assert missing.code == 1
    assert f"no dead letter with id {second}" in missing.error_line()

    nats = start_nats(tmp_path / "nats")
    try:
        bus = await open_nats(nats.url)
        received: asyncio.Queue[Delivery] = asyncio.Queue()

        async def collect(delivery: Delivery) -> None:
            await received.put(delivery)

        subscription = await bus.subscribe("cs.up.>", "dlq-test", collect)
        try:
            replayed = await run_cli("dlq", "replay", str(first), "--db", db, "--bus", nats.url)
            assert replayed.code == 0, replayed
            async with asyncio.timeout(10):
                delivery = await received.get()
            assert (delivery.subject, delivery.data) == ("cs.up.acme.east.3", b'{"broken": true}')
        finally:
            await subscription.stop()
            await bus.close()
    finally:
        nats.stop()
    after = await run_cli("dlq", "list", "--db", db)
    assert after.stdout.strip() == ""


async def test_dlq_needs_an_id_and_replay_needs_a_bus(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/dlq.db"
    no_id = await run_cli("dlq", "show", "--db", db)
    assert no_id.code == 2 and "needs the id" in no_id.stderr
    no_bus = await run_cli("dlq", "replay", "1", "--db", db)
    assert no_bus.code == 2 and "needs --bus" in no_bus.stderr


async def test_db_migrate_creates_the_schema_once(pg_database_url: str) -> None:
    first = await run_cli("db", "migrate", "--db", pg_database_url)
    assert first.code == 0, first
    assert first.stdout.startswith("applied migrations: 0001, 0002")
    again = await run_cli("db", "migrate", "--db", pg_database_url)
    assert again.code == 0 and again.stdout.strip() == "schema is current"
    store = await open_postgres(pg_database_url, migrate=False)
    try:
        assert await store.list() == []
    finally:
        await store.close()


async def test_db_migrate_refuses_an_unknown_database(tmp_path: Path) -> None:
    result = await run_cli("db", "migrate", "--db", "mysql://localhost/x")
    assert result.code == 2
    assert "unsupported database URL" in result.error_line()
