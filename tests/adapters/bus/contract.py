"""Behaviour every Bus must have; a backend's test class inherits it and provides ``bus``.

    class TestNatsBus(BusContract):
        @pytest.fixture
        async def bus(self) -> AsyncIterator[Bus]: ...  # closed afterwards; fast redelivery

Subjects live under ``cs.up.<unique>`` / ``cs.down.<unique>`` and durable names carry the same
unique token, so backends whose streams outlive one test (NATS, Pulsar) stay isolated. Tests never
sleep to synchronise: they wait for a condition with :func:`wait_for`. The class has no ``Test``
prefix so pytest only collects it through its subclasses; import this file by path (see
``load_contract`` in test_memory.py), since the store tests have a ``contract.py`` too.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Callable

import pytest

from clustersync.adapters.bus.base import Bus, BusError, Delivery


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` until it holds; fail the test if it does not within ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.005)


def unique() -> str:
    return uuid.uuid4().hex[:10]


class Recorder:
    """A handler that records deliveries, optionally failing some first attempts."""

    def __init__(self, fail_attempts: int = 0) -> None:
        self.seen: list[Delivery] = []
        self.fail_attempts = fail_attempts

    async def __call__(self, delivery: Delivery) -> None:
        self.seen.append(delivery)
        await asyncio.sleep(0)  # let other subjects interleave
        if delivery.attempt <= self.fail_attempts:
            raise RuntimeError(f"failing attempt {delivery.attempt}")

    def acked(self) -> list[Delivery]:
        """Deliveries that returned (those past the failing attempts)."""
        return [d for d in self.seen if d.attempt > self.fail_attempts]

    def data(self, subject: str | None = None) -> list[bytes]:
        return [d.data for d in self.acked() if subject is None or d.subject == subject]


class BusContract:
    async def restarted(self, bus: Bus) -> Bus:
        """The bus a process gets after ``bus`` restarted from scratch: the embedded bus's
        process restarting, a JetStream stream deleted and created again, ... . May close
        ``bus``; the test closes what it returns. Every bus must provide it; until one does, the
        restart case is reported as skipped with this reason (never passed)."""
        pytest.skip(f"{type(self).__name__} does not say yet how its bus restarts")

    async def test_versions_keep_rising_across_a_restart(self, bus: Bus) -> None:
        u = unique()
        subject = f"cs.up.{u}.c1"
        before = [await bus.publish(subject, b"%d" % i) for i in range(3)]
        fresh = await self.restarted(bus)
        try:
            after = [await fresh.publish(subject, b"after-%d" % i) for i in range(3)]
            # Stores keep a write only if its version is higher: everything published after
            # the restart must outrank everything before it, or it would be dropped as stale.
            assert min(after) > max(before)
            assert all(a < b for a, b in itertools.pairwise(after))
            rec = Recorder()
            await fresh.subscribe(subject, f"after-{u}", rec)
            await wait_for(lambda: len(rec.data()) >= 3)
            got = {d.data: d.seq for d in rec.acked()}
            assert [got[b"after-%d" % i] for i in range(3)] == after
        finally:
            if fresh is not bus:
                await fresh.close()

    async def test_publish_returns_monotonic_seq(self, bus: Bus) -> None:
        u = unique()
        seqs = [await bus.publish(f"cs.up.{u}.c{i % 3}", b"%d" % i) for i in range(20)]
        assert all(a < b for a, b in itertools.pairwise(seqs))
        assert seqs[0] >= 1

    async def test_order_per_subject_and_seq_matches_publish(self, bus: Bus) -> None:
        u = unique()
        rec = Recorder()
        await bus.subscribe(f"cs.up.{u}.>", f"ingest-{u}", rec)
        published: dict[int, tuple[str, bytes]] = {}
        for i in range(60):
            subject = f"cs.up.{u}.c{i % 4}"
            published[await bus.publish(subject, b"%d" % i)] = (subject, b"%d" % i)
        await wait_for(lambda: len(rec.acked()) >= 60)
        assert {d.seq: (d.subject, d.data) for d in rec.acked()} == published
        for c in range(4):
            subject = f"cs.up.{u}.c{c}"
            assert rec.data(subject) == [b"%d" % i for i in range(c, 60, 4)]

    async def test_wildcards(self, bus: Bus) -> None:
        u = unique()
        one, rest = Recorder(), Recorder()
        await bus.subscribe(f"cs.up.{u}.*", f"one-{u}", one)
        await bus.subscribe(f"cs.up.{u}.>", f"rest-{u}", rest)
        await bus.publish(f"cs.up.{u}.a", b"1")
        await bus.publish(f"cs.up.{u}.a.deep", b"2")
        await bus.publish(f"cs.up.{u}.b", b"3")
        await bus.publish(f"cs.up.{u}x.a", b"other")  # a different token: matches neither
        await wait_for(lambda: len(rest.acked()) >= 3 and len(one.acked()) >= 2)
        assert sorted(one.data()) == [b"1", b"3"]
        assert sorted(rest.data()) == [b"1", b"2", b"3"]

    async def test_fan_out_across_durables(self, bus: Bus) -> None:
        u = unique()
        wide, narrow = Recorder(), Recorder()
        await bus.subscribe(f"cs.up.{u}.>", f"wide-{u}", wide)
        await bus.subscribe(f"cs.up.{u}.acct.c1", f"narrow-{u}", narrow)
        seq = await bus.publish(f"cs.up.{u}.acct.c1", b"x")
        await wait_for(lambda: len(wide.acked()) == 1 and len(narrow.acked()) == 1)
        assert wide.acked()[0].seq == narrow.acked()[0].seq == seq

    async def test_work_queue_delivers_each_message_once(self, bus: Bus) -> None:
        u = unique()
        first, second = Recorder(), Recorder()
        await bus.subscribe(f"cs.up.{u}.>", f"ingest-{u}", first)
        await bus.subscribe(f"cs.up.{u}.>", f"ingest-{u}", second)
        seqs = [await bus.publish(f"cs.up.{u}.c{i % 10}", b"%d" % i) for i in range(100)]
        await wait_for(lambda: len(first.acked()) + len(second.acked()) >= 100)
        got = sorted(d.seq for d in first.acked() + second.acked())
        assert got == seqs
        # Per-subject order holds across the two subscribers too.
        merged = sorted(first.acked() + second.acked(), key=lambda d: d.seq)
        for c in range(10):
            subject = f"cs.up.{u}.c{c}"
            assert [d.data for d in merged if d.subject == subject] == [
                b"%d" % i for i in range(c, 100, 10)
            ]

    async def test_redelivery_after_handler_error(self, bus: Bus) -> None:
        u = unique()
        rec = Recorder(fail_attempts=2)
        await bus.subscribe(f"cs.up.{u}.>", f"ingest-{u}", rec)
        first = await bus.publish(f"cs.up.{u}.c1", b"first")
        await bus.publish(f"cs.up.{u}.c1", b"second")
        await wait_for(lambda: len(rec.acked()) >= 2)
        attempts = [d.attempt for d in rec.seen if d.seq == first]
        assert attempts == [1, 2, 3]
        # The failing message held its subject: "second" was not handled before "first" was acked.
        assert rec.data() == [b"first", b"second"]
        assert [d.data for d in rec.seen].index(b"second") > len(attempts) - 1

    async def test_retained_until_a_subscriber_appears(self, bus: Bus) -> None:
        u = unique()
        subject = f"cs.down.{u}.c1"
        seqs = [await bus.publish(subject, b"%d" % i) for i in range(5)]
        rec = Recorder()
        await bus.subscribe(subject, f"down-{u}-c1", rec)
        await wait_for(lambda: len(rec.acked()) >= 5)
        assert [d.seq for d in rec.acked()] == seqs
        assert rec.data() == [b"%d" % i for i in range(5)]

    async def test_stop_hands_unacked_message_to_another_subscriber(self, bus: Bus) -> None:
        u = unique()
        never = asyncio.Event()
        stuck: list[Delivery] = []

        async def hang(delivery: Delivery) -> None:
            stuck.append(delivery)
            await never.wait()

        first = await bus.subscribe(f"cs.down.{u}.c1", f"down-{u}-c1", hang)
        seq = await bus.publish(f"cs.down.{u}.c1", b"payload")
        await wait_for(lambda: len(stuck) == 1)
        rec = Recorder()
        await bus.subscribe(f"cs.down.{u}.c1", f"down-{u}-c1", rec)
        await first.stop()
        await wait_for(lambda: len(rec.acked()) == 1)
        assert (rec.acked()[0].seq, rec.acked()[0].data) == (seq, b"payload")

    @pytest.mark.parametrize(
        "subject", ["", "cs", "cs..up", ".cs", "cs.", "cs.*.x", "cs.up.>", "cs.u p", "cs.\tx"]
    )
    async def test_invalid_subject(self, bus: Bus, subject: str) -> None:
        if subject == "cs":
            await bus.publish("cs", b"")  # a single token is a valid subject
            return
        with pytest.raises(BusError):
            await bus.publish(subject, b"x")
