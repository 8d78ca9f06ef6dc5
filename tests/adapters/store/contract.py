"""Behaviour every Store must have; a backend's test class inherits it and provides ``store``.

    class TestPostgresStore(StoreContract):
        @pytest.fixture
        async def store(self) -> AsyncIterator[Store]: ...  # an empty store, closed afterwards

The class name has no ``Test`` prefix so pytest only collects it through its subclasses. Both
``tests/adapters/store`` and ``tests/adapters/bus`` hold a ``contract.py`` and neither is a
package, so import it by path (see ``load_contract`` in test_sqlite.py), not ``import contract``.
"""

from __future__ import annotations

import time

import orjson
import pytest

from clustersync.adapters.store.base import (
    BadObjectError,
    ClusterInfo,
    Delete,
    ObjectKey,
    Store,
    StoredObject,
    UnparsedObject,
    WriteRecord,
)
from clustersync.model import Kind, ObjectRef
from clustersync.protocol.messages import SyncedKind, WriteStatus

PODS = Kind("", "v1", "pods")
DEPLOYMENTS = Kind("apps", "v1", "deployments")


def key(
    account: str = "acct",
    cluster: str = "c1",
    kind: Kind = PODS,
    ns: str = "default",
    name: str = "web",
) -> ObjectKey:
    return ObjectKey(account, cluster, ObjectRef(kind, ns, name))


def obj(k: ObjectKey, seq: int, body: bytes | None = None) -> StoredObject:
    if body is None:
        body = b'{"metadata":{"name":"%s"},"seq":%d}' % (k.ref.name.encode(), seq)
    return StoredObject(k, f"uid-{k.ref.name}", f"rv{seq}", f"sum{seq}", body, seq)


def same(got: StoredObject | None, want: StoredObject) -> bool:
    """Equal apart from updated_at, which the store sets."""

    def fields(o: StoredObject) -> tuple[object, ...]:
        # Parsed: a store may normalise JSON text (PostgreSQL's jsonb reorders and respaces).
        return (o.key, o.uid, o.resource_version, o.checksum, orjson.loads(o.object), o.seq)

    return got is not None and fields(got) == fields(want)


class StoreContract:
    async def test_put_get_round_trip(self, store: Store) -> None:
        before = time.time()
        want = obj(key(), 1, '{"name":"café","n":[1,2]}'.encode())
        assert await store.apply([want]) == 1
        got = await store.get(key())
        assert same(got, want)
        assert got is not None
        assert isinstance(got.object, bytes)
        assert before - 5 <= got.updated_at <= time.time() + 5
        assert await store.get(key(name="other")) is None

    async def test_an_unparsed_object_is_stored_with_the_identity_in_its_metadata(
        self, store: Store
    ) -> None:
        body = b'{"kind":"Pod","metadata":{"name":"web","uid":"u-1","resourceVersion":"42"}}'
        odd = b'{"metadata":{"name":"odd","uid":7,"resourceVersion":null},"spec":{"uid":"x"}}'
        bare = b'{"spec":{"metadata":{"uid":"nested"}}}'
        writes = [
            UnparsedObject(key(name="web"), "sum1", body, 1),
            UnparsedObject(key(name="odd"), "sum2", odd, 2),
            UnparsedObject(key(name="bare"), "sum3", bare, 3),
        ]
        assert await store.apply(writes) == 3
        assert same(await store.get(key(name="web")),
                    StoredObject(key(name="web"), "u-1", "42", "sum1", body, 1))  # fmt: skip
        # Only strings in the object's own metadata count: anything else is stored as "".
        assert same(await store.get(key(name="odd")),
                    StoredObject(key(name="odd"), "", "", "sum2", odd, 2))  # fmt: skip
        assert same(await store.get(key(name="bare")),
                    StoredObject(key(name="bare"), "", "", "sum3", bare, 3))  # fmt: skip

    @pytest.mark.parametrize(
        "bad",
        [b'{"metadata": {"name": ', b"[1, 2]", b'"text"', b'{"a": 1} trailing', b'{"a": "\xff"}'],
    )
    async def test_an_unparsed_object_that_is_not_a_json_object_fails_its_whole_batch(
        self, store: Store, bad: bytes
    ) -> None:
        good = UnparsedObject(key(name="good"), "sum1", b'{"metadata":{"uid":"u"}}', 1)
        with pytest.raises(BadObjectError):
            await store.apply([good, UnparsedObject(key(name="bad"), "sum2", bad, 2)])
        assert await store.get_many([key(name="good"), key(name="bad")]) == {}
        assert await store.apply([good]) == 1  # the store goes on

    async def test_an_unparsed_object_is_guarded_by_seq_like_any_write(self, store: Store) -> None:
        newer = obj(key(), 5)
        assert await store.apply([newer]) == 1
        stale = UnparsedObject(key(), "old", b'{"metadata":{"uid":"u","resourceVersion":"1"}}', 4)
        assert await store.apply([stale]) == 0
        assert same(await store.get(key()), newer)
        later = UnparsedObject(key(), "new", b'{"metadata":{"uid":"u","resourceVersion":"9"}}', 6)
        assert await store.apply([later, stale]) == 1
        assert same(await store.get(key()), StoredObject(key(), "u", "9", "new", later.object, 6))

    async def test_get_many_reads_live_rows_of_the_given_keys(self, store: Store) -> None:
        live = [key(name="a"), key(kind=DEPLOYMENTS, ns="", name="a"), key(cluster="c2")]
        tombstoned, never = key(name="gone"), key(name="never-seen")
        other_account = key(account="other", name="a")  # same ref elsewhere: not asked for
        await store.apply([obj(k, 3) for k in live] + [obj(tombstoned, 1), obj(other_account, 1)])
        await store.apply([Delete(tombstoned, 2)])

        got = await store.get_many([*live, tombstoned, never, live[0]])  # one key twice
        assert set(got) == set(live)
        for k in live:
            assert same(got[k], obj(k, 3))
            assert isinstance(got[k].object, bytes)
        assert await store.get_many([]) == {}
        assert await store.get_many([never, tombstoned]) == {}

    async def test_get_many_reads_a_large_batch(self, store: Store) -> None:
        keys = [key(ns=f"ns{i % 7}", name=f"pod-{i}") for i in range(1500)]
        await store.apply([obj(k, 1) for k in keys[::2]])  # every other one exists
        got = await store.get_many(keys)
        assert sorted(got) == sorted(keys[::2])
        assert all(same(got[k], obj(k, 1)) for k in keys[::2])

    async def test_list_is_ordered_and_narrowed(self, store: Store) -> None:
        keys = [
            key(account, cluster, kind, ns, name)
            for account in ("b", "a")
            for cluster in ("c2", "c1")
            for kind in (PODS, DEPLOYMENTS)
            for ns in ("", "kube-system")
            for name in ("y", "x")
        ]
        assert await store.apply([obj(k, 1) for k in keys]) == len(keys)
        assert [o.key for o in await store.list()] == sorted(keys)
        in_a = await store.list(account="a")
        assert [o.key for o in in_a] == sorted(k for k in keys if k.account == "a")
        a_c1 = await store.list(account="a", cluster="c1")
        want = sorted(k for k in keys if (k.account, k.cluster) == ("a", "c1"))
        assert [o.key for o in a_c1] == want
        pods = await store.list(kind=PODS)
        assert [o.key for o in pods] == sorted(k for k in keys if k.ref.kind == PODS)
        narrow = await store.list(account="b", cluster="c2", kind=DEPLOYMENTS)
        assert len(narrow) == 4
        assert all(o.key.ref.kind == DEPLOYMENTS and o.key.cluster == "c2" for o in narrow)
        assert await store.list(account="nobody") == []

    async def test_seq_guard_skips_stale_and_duplicate_writes(self, store: Store) -> None:
        k = key()
        assert await store.apply([obj(k, 5)]) == 1
        assert await store.apply([obj(k, 5, b'{"dup":true}')]) == 0  # redelivery of seq 5
        assert await store.apply([obj(k, 3)]) == 0  # stale
        assert same(await store.get(k), obj(k, 5))
        # One batch with several versions of one object, as a drained bus backlog would give.
        assert await store.apply([obj(k, 7), obj(k, 6), obj(k, 8), obj(key(name="b"), 1)]) == 3
        assert same(await store.get(k), obj(k, 8))

    async def test_delete_leaves_a_tombstone(self, store: Store) -> None:
        k = key()
        assert await store.apply([obj(k, 5)]) == 1
        assert await store.apply([Delete(k, 4)]) == 0  # stale delete: the row stays
        assert same(await store.get(k), obj(k, 5))
        assert await store.apply([Delete(k, 6)]) == 1
        assert await store.get(k) is None
        assert await store.list() == []
        assert await store.apply([obj(k, 5)]) == 0  # late put: no resurrection
        assert await store.apply([obj(k, 6)]) == 0  # same seq as the delete
        assert await store.get(k) is None
        assert await store.apply([obj(k, 7)]) == 1  # newer put revives it
        assert same(await store.get(k), obj(k, 7))
        assert [o.key for o in await store.list()] == [k]

    async def test_highest_version_counts_tombstones(self, store: Store) -> None:
        assert await store.highest_version() == 0
        big = (1 << 62) + 5  # versions use up to 63 bits
        await store.apply([obj(key(name="a"), 7), obj(key(name="b"), big)])
        assert await store.highest_version() == big
        assert await store.apply([Delete(key(name="a"), big + 1)]) == 1
        assert await store.highest_version() == big + 1

    async def test_delete_of_unknown_row_still_guards(self, store: Store) -> None:
        k = key(name="never-seen")
        assert await store.apply([Delete(k, 10)]) == 1
        assert await store.get(k) is None
        assert await store.apply([obj(k, 9)]) == 0
        assert await store.get(k) is None
        assert await store.list() == []

    async def test_mixed_batch_in_order(self, store: Store) -> None:
        k = key()
        landed = await store.apply([obj(k, 1), Delete(k, 2), obj(k, 3), Delete(key(name="z"), 1)])
        assert landed == 4
        assert same(await store.get(k), obj(k, 3))
        assert await store.apply([]) == 0

    async def test_purge_tombstones(self, store: Store) -> None:
        gone1, gone2, live = key(name="a"), key(name="b"), key(name="c")
        await store.apply([obj(gone1, 1), obj(gone2, 1), obj(live, 1)])
        assert await store.apply([Delete(gone1, 2), Delete(gone2, 2)]) == 2
        assert await store.purge_tombstones(time.time() - 3600) == 0
        assert await store.purge_tombstones(time.time() + 3600) == 2
        assert await store.purge_tombstones(time.time() + 3600) == 0
        assert [o.key for o in await store.list()] == [live]
        # With the tombstone gone the seq guard has nothing to compare against: any put lands.
        assert await store.apply([obj(gone1, 1)]) == 1

    async def test_dead_letters(self, store: Store) -> None:
        payload = b"\x00\xffnot json"
        ids = [
            await store.park("cs.up.acct.c1", payload, "undecodable"),
            await store.park("cs.up.acct.c2", b"{}", "no kind"),
            await store.park("cs.up.acct.c3", b"[]", "bad shape"),
        ]
        assert ids == sorted(ids) and len(set(ids)) == 3
        listed = await store.dead_letters()
        assert [d.id for d in listed] == ids  # id ascending: the order they were parked
        assert [d.id for d in await store.dead_letters(limit=2)] == ids[:2]
        first = await store.dead_letter(ids[0])
        assert first is not None
        assert (first.subject, first.data) == ("cs.up.acct.c1", payload)
        assert first.reason == "undecodable"
        assert first.parked_at > 0
        assert await store.drop_dead_letter(ids[0]) is True
        assert await store.drop_dead_letter(ids[0]) is False
        assert await store.dead_letter(ids[0]) is None
        assert [d.id for d in await store.dead_letters()] == ids[1:]
        assert await store.dead_letter(max(ids) + 1000) is None

    async def test_large_batch(self, store: Store) -> None:
        body = b'{"data":"' + b"x" * 1000 + b'"}'
        writes = [obj(key(ns=f"ns{i % 10}", name=f"pod-{i:05d}"), i + 1, body) for i in range(5000)]
        assert await store.apply(writes) == 5000
        rows = await store.list(account="acct", cluster="c1", kind=PODS)
        assert len(rows) == 5000
        assert [o.key for o in rows] == sorted(w.key for w in writes)
        assert await store.apply(writes) == 0  # the whole batch redelivered: nothing lands

    # ------------------------------------------------------------ backend writes

    @staticmethod
    def write(ident: str, name: str = "cm", verb: str = "put") -> WriteRecord:
        ref = ObjectRef(Kind("", "v1", "configmaps"), "shop", name)
        return WriteRecord(
            ident, "acct", "c1", ref, verb, subject="cs.write.acct.c1", data=b'{"m":"' + b"x" * 64
        )

    async def test_write_round_trip(self, store: Store) -> None:
        before = time.time()
        assert await store.add_write(self.write("w-1", "café")) is True
        # Recorded twice (by the API, then by the ingester): the first record stays.
        assert await store.settle_write("w-1", WriteStatus.SENT)
        assert await store.add_write(self.write("w-1", "other")) is False
        assert await store.settle_write("w-1", WriteStatus.PENDING) is False
        got = await store.get_write("w-1")
        assert got is not None
        assert (got.id, got.account, got.cluster, got.verb) == ("w-1", "acct", "c1", "put")
        assert got.ref == ObjectRef(Kind("", "v1", "configmaps"), "shop", "café")
        assert (got.status, got.reason) == (WriteStatus.SENT, "")
        assert (got.subject, got.data) == ("cs.write.acct.c1", b'{"m":"' + b"x" * 64)
        assert before - 5 <= got.created_at <= got.updated_at <= time.time() + 5
        assert await store.get_write("w-2") is None

    async def test_write_outcomes_only_move_forward(self, store: Store) -> None:
        await store.add_write(self.write("w-1"))
        assert await store.settle_write("w-1", WriteStatus.PENDING) is False
        assert await store.settle_write("w-1", WriteStatus.SENT) is True
        assert await store.settle_write("w-1", WriteStatus.SENT) is False
        sent = await store.get_write("w-1")
        assert sent is not None and sent.status is WriteStatus.SENT
        assert sent.data  # not final yet: the message is still kept
        reason = 'namespaces "nowhere" not found'
        assert await store.settle_write("w-1", WriteStatus.REFUSED, reason) is True
        # A redelivered write applied the second time never turns a refusal into a success.
        assert await store.settle_write("w-1", WriteStatus.APPLIED) is False
        got = await store.get_write("w-1")
        assert got is not None
        assert (got.status, got.reason, got.data) == (WriteStatus.REFUSED, reason, b"")
        assert await store.settle_write("no-such-write", WriteStatus.APPLIED) is False

    async def test_pending_writes_in_arrival_order(self, store: Store) -> None:
        for ident in ("w-c", "w-a", "w-d", "w-b"):  # ids are random: arrival order matters
            await store.add_write(self.write(ident, verb="delete"))
        assert await store.settle_write("w-a", WriteStatus.APPLIED)
        assert await store.settle_write("w-d", WriteStatus.SENT)
        pending = await store.pending_writes()
        assert [w.id for w in pending] == ["w-c", "w-b"]
        assert all(w.verb == "delete" and w.data for w in pending)
        assert [w.id for w in await store.pending_writes(limit=1)] == ["w-c"]

    async def test_an_older_write_is_not_forwarded_after_a_newer_one(self, store: Store) -> None:
        # Accepted in this order: w-old, w-new to "cm"; w-other to another object.
        for ident, name in (("w-old", "cm"), ("w-new", "cm"), ("w-other", "other")):
            await store.add_write(self.write(ident, name))
        assert await store.claim_forward("w-new") is None  # goes out first (w-old retried)
        assert await store.claim_forward("w-old") == "w-new"  # late: it would undo w-new
        assert await store.claim_forward("w-other") is None  # another object is unaffected
        assert await store.claim_forward("w-new") is None  # its own redelivery still goes
        # The refused one stays unforwarded: asked again, the same answer.
        assert await store.claim_forward("w-old") == "w-new"

    async def test_writes_forwarded_in_order_all_go_out(self, store: Store) -> None:
        for ident in ("w-1", "w-2", "w-3"):
            await store.add_write(self.write(ident))
        assert [await store.claim_forward(i) for i in ("w-1", "w-2", "w-3")] == [None] * 3
        # A redelivery of an earlier one after the later ones went out is refused.
        assert await store.claim_forward("w-1") == "w-3"
        assert await store.claim_forward("w-2") == "w-3"

    async def test_purge_writes_keeps_pending_ones(self, store: Store) -> None:
        for ident in ("w-1", "w-2", "w-3"):
            await store.add_write(self.write(ident))
        await store.settle_write("w-1", WriteStatus.APPLIED)
        await store.settle_write("w-2", WriteStatus.SENT)
        assert await store.purge_writes(time.time() - 3600) == 0
        assert await store.purge_writes(time.time() + 3600) == 2
        assert await store.get_write("w-1") is None
        assert await store.get_write("w-2") is None
        assert [w.id for w in await store.pending_writes()] == ["w-3"]

    async def test_recent_writes_newest_first_by_cluster_and_object(self, store: Store) -> None:
        other = WriteRecord("w-x", "acct", "c2", self.write("w").ref, "put")
        for record in (self.write("w-1", "a"), self.write("w-2", "b"), other,
                       self.write("w-3", "a", verb="delete")):
            await store.add_write(record)
        assert await store.settle_write("w-1", WriteStatus.APPLIED)
        assert [w.id for w in await store.recent_writes()] == ["w-3", "w-x", "w-2", "w-1"]
        assert [w.id for w in await store.recent_writes(limit=2)] == ["w-3", "w-x"]
        assert [w.id for w in await store.recent_writes("acct", "c2")] == ["w-x"]
        history = await store.recent_writes("acct", "c1", self.write("w", "a").ref)
        assert [(w.id, w.verb, w.status) for w in history] == [
            ("w-3", "delete", WriteStatus.PENDING), ("w-1", "put", WriteStatus.APPLIED)]
        assert await store.recent_writes("other") == []

    async def test_cluster_info(self, store: Store) -> None:
        kinds = (
            SyncedKind(Kind("", "v1", "configmaps"), True),
            SyncedKind(Kind("", "v1", "namespaces"), False),
            SyncedKind(Kind("example.com", "v1", "widgets"), None),  # CRD not installed yet
        )
        assert await store.cluster_info("acct", "c1") is None
        await store.save_cluster_info(ClusterInfo("acct", "c1", "clustersync.v1", kinds))
        got = await store.cluster_info("acct", "c1")
        assert got is not None
        assert (got.account, got.cluster, got.protocol) == ("acct", "c1", "clustersync.v1")
        assert got.kinds == kinds
        assert got.updated_at > 0
        await store.save_cluster_info(ClusterInfo("acct", "c1", "kubescape"))
        again = await store.cluster_info("acct", "c1")
        assert again is not None and (again.protocol, again.kinds) == ("kubescape", ())
        assert await store.cluster_info("acct", "c2") is None

    async def test_list_pages_by_key_with_filters(self, store: Store) -> None:
        keys = [
            key("a", "c1", kind, ns, name)
            for kind in (PODS, DEPLOYMENTS)
            for ns in ("", "shop", "tools")
            for name in ("x", "y", "zz")
        ]
        assert await store.apply([obj(k, 1) for k in keys]) == len(keys)
        await store.apply([Delete(key("a", "c1", PODS, "shop", "y"), 2)])
        live = sorted(k for k in keys if k != key("a", "c1", PODS, "shop", "y"))
        pages: list[list[ObjectKey]] = []
        after: ObjectKey | None = None
        while True:
            page = [o.key for o in await store.list("a", "c1", after=after, limit=4)]
            if not page:
                break
            pages.append(page)
            after = page[-1]
        assert [len(p) for p in pages] == [4, 4, 4, 4, 1]  # 17 live rows, tombstone skipped
        assert [k for p in pages for k in p] == live
        shop = await store.list("a", "c1", namespace="shop")
        assert [o.key for o in shop] == [k for k in live if k.ref.namespace == "shop"]
        named = await store.list("a", "c1", PODS, name="zz")
        assert [(o.key.ref.namespace, o.key.ref.name) for o in named] == [
            ("", "zz"), ("shop", "zz"), ("tools", "zz")
        ]
        cluster_scoped = await store.list("a", "c1", DEPLOYMENTS, namespace="", limit=2)
        assert [o.key.ref.name for o in cluster_scoped] == ["x", "y"]

    async def test_count_kinds_and_dead_letters(self, store: Store) -> None:
        writes = [obj(key("a", "c1", PODS, "ns", f"p{i}"), 1) for i in range(3)]
        writes += [obj(key("a", "c1", DEPLOYMENTS, "ns", "d"), 1)]
        writes += [obj(key("a", "c2", PODS, "ns", "p"), 1), obj(key("b", "c1", PODS, "ns", "q"), 1)]
        await store.apply(writes)
        await store.apply([Delete(key("a", "c1", PODS, "ns", "p0"), 2)])
        counts = [(c.account, c.cluster, c.kind, c.count) for c in await store.count_kinds()]
        assert counts == [
            ("a", "c1", PODS, 2),  # the core group ("") sorts before "apps"
            ("a", "c1", DEPLOYMENTS, 1),
            ("a", "c2", PODS, 1),
            ("b", "c1", PODS, 1),
        ]
        assert [c.count for c in await store.count_kinds("a", "c1")] == [2, 1]
        assert await store.count_kinds("nobody") == []
        assert await store.count_dead_letters() == {}
        for subject in ("cs.up.a.c1.3", "cs.up.a.c1.3", "cs.down.b.c1"):
            await store.park(subject, b"x", "why")
        assert await store.count_dead_letters() == {"cs.up.a.c1.3": 2, "cs.down.b.c1": 1}

    async def test_count_kinds_stay_exact_through_every_write_path(self, store: Store) -> None:
        async def counts() -> dict[tuple[str, str, Kind], int]:
            return {(c.account, c.cluster, c.kind): c.count for c in await store.count_kinds()}

        pods = [key("a", "c1", PODS, "ns", f"p{i}") for i in range(5)]
        deploy = key("a", "c1", DEPLOYMENTS, "ns", "d")
        await store.apply([obj(k, 1) for k in pods] + [obj(deploy, 1), obj(key("a", "c2"), 1)])
        assert await counts() == {("a", "c1", PODS): 5, ("a", "c1", DEPLOYMENTS): 1,
                                  ("a", "c2", PODS): 1}
        # Updates of live rows and a stale put (lower seq, refused) leave the counts alone.
        assert await store.apply([obj(pods[0], 2), obj(pods[1], 0)]) == 1
        assert (await counts())[("a", "c1", PODS)] == 5
        # Deletes leave tombstones, which are not counted; a kind with no live row disappears;
        # a delete of a never-seen key (a tombstone alone) counts nothing either.
        await store.apply([Delete(pods[2], 3), Delete(deploy, 3), Delete(key("a", "c3"), 1)])
        assert await counts() == {("a", "c1", PODS): 4, ("a", "c2", PODS): 1}
        # A stale put behind a tombstone is refused; a newer one revives the object.
        assert await store.apply([obj(pods[2], 2), obj(deploy, 2)]) == 0
        assert (await counts()).get(("a", "c1", DEPLOYMENTS)) is None
        assert await store.apply([obj(deploy, 4)]) == 1
        assert (await counts())[("a", "c1", DEPLOYMENTS)] == 1
        # Delete and re-put of one key inside one batch: the last write wins.
        await store.apply(
            [Delete(pods[3], 5), obj(pods[3], 6), obj(pods[4], 6), Delete(pods[4], 7)]
        )
        assert (await counts())[("a", "c1", PODS)] == 3
        # Purging tombstones removes rows that were not counted: nothing changes.
        assert await store.purge_tombstones(time.time() + 3600) == 3
        assert await counts() == {("a", "c1", PODS): 3, ("a", "c1", DEPLOYMENTS): 1,
                                  ("a", "c2", PODS): 1}
        live = [o.key for o in await store.list()]
        assert len(live) == 5  # the recount from the rows themselves agrees

    async def test_cluster_state_link_and_progress(self, store: Store) -> None:
        assert await store.cluster_states() == []
        await store.save_progress("a", "c1", b'{"/v1/pods": {"listed": 3}}')
        assert await store.save_link("a", "c1", "conn-1", b'{"connected": true}', current=False)
        # News of another connection than the one recorded changes nothing.
        assert not await store.save_link("a", "c1", "conn-0", b'{"connected": false}', current=True)
        assert not await store.save_link("a", "c2", "conn-9", b'{"connected": true}', current=True)
        (state,) = await store.cluster_states()
        assert (state.account, state.cluster, state.connection_id) == ("a", "c1", "conn-1")
        assert orjson.loads(state.link) == {"connected": True}
        assert orjson.loads(state.progress) == {"/v1/pods": {"listed": 3}}
        assert state.updated_at > 0
        assert await store.save_link("a", "c1", "conn-1", b'{"connected": false}', current=True)
        await store.save_link("a", "c0", "conn-2", b'{"connected": true}', current=False)
        states = await store.cluster_states()
        assert [(s.cluster, orjson.loads(s.link)) for s in states] == [
            ("c0", {"connected": True}),
            ("c1", {"connected": False}),
        ]
        assert orjson.loads(states[0].progress) == {}
        # A newer connection replaces the row whatever it held; progress stays.
        assert await store.save_link("a", "c1", "conn-3", b'{"connected": true}', current=False)
        state = (await store.cluster_states())[1]
        assert state.connection_id == "conn-3"
        assert orjson.loads(state.progress) == {"/v1/pods": {"listed": 3}}

    async def test_count_writes_by_cluster_and_status(self, store: Store) -> None:
        assert await store.count_writes() == []
        other = WriteRecord("w-x", "acct", "c0", self.write("w").ref, "put")
        for record in (self.write("w-1"), self.write("w-2"), self.write("w-3"), other):
            await store.add_write(record)
        await store.settle_write("w-1", WriteStatus.APPLIED)
        await store.settle_write("w-2", WriteStatus.REFUSED, "policy")
        assert await store.count_writes() == [
            ("acct", "c0", "pending", 1),
            ("acct", "c1", "applied", 1),
            ("acct", "c1", "pending", 1),
            ("acct", "c1", "refused", 1),
        ]
