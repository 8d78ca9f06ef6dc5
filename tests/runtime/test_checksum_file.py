"""The agent's checksum file on disk: atomic saves, and bad files met at start."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

import pytest

from clustersync.model import Kind, ObjectRef
from clustersync.protocol.checksum_cache import Entry, fingerprint
from clustersync.runtime.checksum_file import ChecksumFile

try:  # `python -m pytest` from the repo root
    from tests.runtime.harness import sample
except ImportError:  # plain `pytest`: the test directory itself is on sys.path
    from harness import sample  # type: ignore[no-redef]

PODS = Kind("", "v1", "pods")
PRINT = fingerprint({PODS: "patch"})
METRIC = "clustersync_agent_checksum_cache_total"


def entries(n: int) -> list[Entry]:
    return [Entry(ObjectRef(PODS, "ns", f"p{i}"), f"u{i}/{i}", f"{i:064x}") for i in range(n)]


def count(outcome: str) -> float:
    return sample(METRIC, outcome=outcome)


async def test_save_then_load_round_trips(tmp_path: Path) -> None:
    store = ChecksumFile(tmp_path / "data", PRINT)  # the directory is created on save
    assert await store.load() == []
    assert await store.save(entries(50))
    assert await ChecksumFile(tmp_path / "data", PRINT).load() == entries(50)
    assert not store.temporary.exists()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda data: data[: len(data) - 7], "digest"),  # torn
        (lambda data: data[:10], "truncated"),
        (lambda data: b"\x89PNG\r\n\x1a\n" + data[8:], "malformed"),
        (lambda data: b"", "truncated"),
    ],
)
async def test_a_damaged_file_is_ignored_logged_counted_and_removed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: object, reason: str
) -> None:
    store = ChecksumFile(tmp_path, PRINT)
    await store.save(entries(20))
    assert callable(damage)
    store.path.write_bytes(damage(store.path.read_bytes()))
    before = count(f"discarded_{reason}")
    with caplog.at_level(logging.WARNING, logger="clustersync.agent"):
        assert await store.load() == []
    assert count(f"discarded_{reason}") == before + 1
    assert f"ignoring the checksum file {store.path} ({reason})" in caplog.text
    assert not store.path.exists()  # the next save writes a good one


async def test_a_file_from_other_rules_is_ignored(tmp_path: Path) -> None:
    await ChecksumFile(tmp_path, fingerprint({PODS: "copy"})).save(entries(3))
    before = count("discarded_fingerprint")
    assert await ChecksumFile(tmp_path, PRINT).load() == []
    assert count("discarded_fingerprint") == before + 1


async def test_an_unreadable_file_is_ignored(tmp_path: Path) -> None:
    store = ChecksumFile(tmp_path, PRINT)
    store.path.mkdir()  # reading a directory fails, as a file without permission would
    before = count("discarded_unreadable")
    assert await store.load() == []
    assert count("discarded_unreadable") == before + 1


async def test_a_save_into_an_unusable_directory_is_counted_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    before = count("save_failed")
    assert not await ChecksumFile(blocker / "data", PRINT).save(entries(3))
    assert count("save_failed") == before + 1


WRITER = """
import os, sys, time
with open(sys.argv[1], "wb") as out:
    out.write(open(sys.argv[2], "rb").read()[:1000])
    out.flush()
    os.fsync(out.fileno())
    print("written", flush=True)
    time.sleep(60)
"""


async def test_a_save_killed_midway_leaves_the_previous_file_usable(tmp_path: Path) -> None:
    """SIGKILL during a save: a partial temporary file is left beside the last good file."""
    store = ChecksumFile(tmp_path, PRINT)
    await store.save(entries(100))
    newer = tmp_path / "newer"
    newer.write_bytes(store.path.read_bytes() * 2)
    writer = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WRITER, str(store.temporary), str(newer),
        stdout=asyncio.subprocess.PIPE,
    )
    assert writer.stdout is not None
    async with asyncio.timeout(30):
        assert await writer.stdout.readline() == b"written\n"
    writer.send_signal(signal.SIGKILL)
    await writer.wait()
    assert store.temporary.stat().st_size == 1000  # the partial file is there
    assert await ChecksumFile(tmp_path, PRINT).load() == entries(100)
    assert not store.temporary.exists()
