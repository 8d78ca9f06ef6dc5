"""The embedded store: SQLite behind one dedicated worker thread.

``sqlite3`` blocks, so every call runs on a single-thread executor: the event loop never waits on
disk, and one thread means one writer (SQLite's own locking never has to arbitrate between us).
WAL with ``synchronous=NORMAL`` keeps commits cheap; a crash can lose the last transactions but
never corrupts the file, and the bus redelivers whatever was not acknowledged.
"""

from __future__ import annotations

import asyncio
import builtins
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson

from clustersync.adapters.store.base import (
    BadObjectError,
    ClusterInfo,
    ClusterState,
    DeadLetter,
    Delete,
    KindCount,
    ObjectKey,
    StoredObject,
    StoreError,
    UnparsedObject,
    Write,
    WriteRecord,
    decode_kinds,
    encode_kinds,
    is_final,
    replaceable_statuses,
    write_filter,
)
from clustersync.model import Kind, ObjectRef
from clustersync.protocol.backend import identity_of
from clustersync.protocol.messages import WriteStatus

T = TypeVar("T")

_KEY = "account, cluster, api_group, api_version, resource, namespace, name"

# Each entry is one schema version: its statements run in one transaction, then schema_version is
# bumped. Never edit a released step; append a new one so existing files migrate forward.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        f"""CREATE TABLE objects (
            account TEXT NOT NULL, cluster TEXT NOT NULL,
            api_group TEXT NOT NULL, api_version TEXT NOT NULL, resource TEXT NOT NULL,
            namespace TEXT NOT NULL, name TEXT NOT NULL,
            uid TEXT NOT NULL, resource_version TEXT NOT NULL, checksum TEXT NOT NULL,
            object BLOB NOT NULL, seq INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0,
            updated_at REAL NOT NULL,
            PRIMARY KEY ({_KEY}))""",
        # Partial index: purging tombstones must not scan the live rows.
        "CREATE INDEX objects_tombstones ON objects (updated_at) WHERE deleted = 1",
        """CREATE TABLE dead_letters (
            id INTEGER PRIMARY KEY AUTOINCREMENT, subject TEXT NOT NULL, data BLOB NOT NULL,
            reason TEXT NOT NULL, parked_at REAL NOT NULL)""",
    ),
    (
        # n orders pending writes by arrival (ids are random); data is the bus message, emptied
        # once the outcome is final.
        """CREATE TABLE writes (
            n INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
            account TEXT NOT NULL, cluster TEXT NOT NULL,
            api_group TEXT NOT NULL, api_version TEXT NOT NULL, resource TEXT NOT NULL,
            namespace TEXT NOT NULL, name TEXT NOT NULL, verb TEXT NOT NULL,
            status TEXT NOT NULL, reason TEXT NOT NULL, subject TEXT NOT NULL, data BLOB NOT NULL,
            created_at REAL NOT NULL, updated_at REAL NOT NULL)""",
        "CREATE INDEX writes_pending ON writes (n) WHERE status = 'pending'",
        """CREATE TABLE cluster_info (
            account TEXT NOT NULL, cluster TEXT NOT NULL, protocol TEXT NOT NULL,
            kinds TEXT NOT NULL, updated_at REAL NOT NULL, PRIMARY KEY (account, cluster))""",
    ),
    (
        """CREATE TABLE cluster_state (
            account TEXT NOT NULL, cluster TEXT NOT NULL, connection_id TEXT NOT NULL,
            link TEXT NOT NULL, progress TEXT NOT NULL, updated_at REAL NOT NULL,
            PRIMARY KEY (account, cluster))""",
    ),
    (
        # count_kinds reads only this narrow covering index of live rows, not the table whose
        # rows carry whole objects. The query's "deleted = 0" must match this predicate exactly
        # for SQLite to use it, and SQLite counts the index as covering only if it also holds
        # the predicate's column, hence the trailing "deleted".
        "CREATE INDEX objects_live_kinds ON objects"
        " (account, cluster, api_group, api_version, resource, deleted) WHERE deleted = 0",
    ),
    (
        # Which backend writes were forwarded to their cluster (see Store.claim_forward).
        "ALTER TABLE writes ADD COLUMN forwarded INTEGER NOT NULL DEFAULT 0",
        f"CREATE INDEX writes_forwarded ON writes ({_KEY}, n) WHERE forwarded = 1",
    ),
)

_UPSERT_TAIL = f"""ON CONFLICT ({_KEY}) DO UPDATE SET
    uid = excluded.uid, resource_version = excluded.resource_version,
    checksum = excluded.checksum, object = excluded.object, seq = excluded.seq,
    deleted = excluded.deleted, updated_at = excluded.updated_at
WHERE excluded.seq > objects.seq"""

# Puts and deletes share one statement; a delete is a put of an emptied row with deleted = 1,
# written even when no row exists so that a late put with a lower seq is still rejected.
_WRITE = f"""INSERT INTO objects ({_KEY}, uid, resource_version, checksum, object, seq, deleted,
    updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) {_UPSERT_TAIL}"""

_SELECT = f"""SELECT {_KEY}, uid, resource_version, checksum, object, seq, updated_at
FROM objects"""

_KEY_MATCH = " AND ".join(f"{column.strip()} = ?" for column in _KEY.split(","))

_BUSY_TIMEOUT_MS = 5000


def _key_params(key: ObjectKey) -> tuple[str, ...]:
    kind = key.ref.kind
    return (
        key.account,
        key.cluster,
        kind.group,
        kind.version,
        kind.resource,
        key.ref.namespace,
        key.ref.name,
    )


def _write_params(write: Write, now: float) -> tuple[Any, ...]:
    if isinstance(write, Delete):
        return (*_key_params(write.key), "", "", "", b"", write.seq, 1, now)
    if isinstance(write, UnparsedObject):
        # SQLite keeps objects as text and reads nothing in them: parsed here, as the
        # PostgreSQL store's jsonb cast would (and refused the same way).
        uid, version = _identity(write)
        fields = (uid, version, write.checksum, bytes(write.object))
        return (*_key_params(write.key), *fields, write.seq, 0, now)
    fields = (write.uid, write.resource_version, write.checksum, bytes(write.object))
    return (*_key_params(write.key), *fields, write.seq, 0, now)


def _identity(write: UnparsedObject) -> tuple[str, str]:
    try:
        obj = orjson.loads(write.object)
    except orjson.JSONDecodeError as exc:
        raise BadObjectError(f"{write.key.ref}: object is not JSON text: {exc}") from None
    if not isinstance(obj, dict):
        raise BadObjectError(f"{write.key.ref}: object is not a JSON object")
    return identity_of(obj)


def _row_to_object(row: Sequence[Any]) -> StoredObject:
    ref = ObjectRef(Kind(row[2], row[3], row[4]), row[5], row[6])
    return StoredObject(
        key=ObjectKey(row[0], row[1], ref),
        uid=row[7],
        resource_version=row[8],
        checksum=row[9],
        object=bytes(row[10]),
        seq=int(row[11]),
        updated_at=float(row[12]),
    )


# The newest write to the same object as write ? that was forwarded and came after it.
_SAME_OBJECT = " AND ".join(f"o.{column} = w.{column}" for column in _KEY.split(", "))
_NEWER_FORWARDED = f"""SELECT o.id FROM writes AS w JOIN writes AS o ON {_SAME_OBJECT}
    WHERE w.id = ? AND o.forwarded = 1 AND o.n > w.n ORDER BY o.n DESC LIMIT 1"""

_WRITE_COLUMNS = (
    "id, account, cluster, api_group, api_version, resource, namespace, name, verb, status,"
    " reason, subject, data, created_at, updated_at"
)


def _row_to_write(row: Sequence[Any]) -> WriteRecord:
    return WriteRecord(
        id=row[0],
        account=row[1],
        cluster=row[2],
        ref=ObjectRef(Kind(row[3], row[4], row[5]), row[6], row[7]),
        verb=row[8],
        status=WriteStatus(row[9]),
        reason=row[10],
        subject=row[11],
        data=bytes(row[12]),
        created_at=float(row[13]),
        updated_at=float(row[14]),
    )


def _row_to_dead_letter(row: Sequence[Any]) -> DeadLetter:
    return DeadLetter(int(row[0]), row[1], bytes(row[2]), row[3], float(row[4]))


def _connect(path: str) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves so a batch is exactly one transaction.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
    try:
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        _migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    current = int(row[0]) if row and row[0] is not None else 0
    for version, steps in enumerate(MIGRATIONS[current:], start=current + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql in steps:
                conn.execute(sql)
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def count_kinds_query(account: str | None, cluster: str | None) -> tuple[str, list[str]]:
    """count_kinds' SQL and parameters. ``deleted = 0`` and the grouped columns match the
    covering partial index objects_live_kinds, so SQLite reads that index, not the table."""
    where = ["deleted = 0"]
    params = [v for v in (account, cluster) if v is not None]
    where += [
        f"{c} = ?" for c, v in (("account", account), ("cluster", cluster)) if v is not None
    ]
    groups = "account, cluster, api_group, api_version, resource"
    sql = (
        f"SELECT {groups}, count(*) FROM objects WHERE {' AND '.join(where)}"
        f" GROUP BY {groups} ORDER BY {groups}"
    )
    return sql, params


def parse_sqlite_url(url: str) -> str:
    """The database path in ``sqlite:///path.db`` (SQLAlchemy style: ``sqlite:////abs.db`` is
    absolute, ``sqlite:///rel.db`` relative to the working directory) or ``sqlite://:memory:``."""
    if url in ("sqlite://:memory:", "sqlite:///:memory:"):
        return ":memory:"
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise StoreError(f"bad SQLite URL {url!r}: expected sqlite:///path.db or sqlite://:memory:")
    path = url[len(prefix) :]
    if not path or path.endswith("/") or "?" in path or "#" in path:
        raise StoreError(f"bad SQLite URL {url!r}: no database path, or a query string")
    return path


async def open_sqlite(url: str) -> SqliteStore:
    return await SqliteStore.open(parse_sqlite_url(url))


class SqliteStore:
    """A :class:`~clustersync.adapters.store.base.Store` in one SQLite file (or ``:memory:``)."""

    def __init__(self, executor: ThreadPoolExecutor, conn: sqlite3.Connection) -> None:
        self._executor = executor
        self._conn: sqlite3.Connection | None = conn

    @classmethod
    async def open(cls, path: str) -> SqliteStore:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        try:
            # The connection is created on the worker thread: sqlite3 objects stay on one thread.
            conn = await asyncio.get_running_loop().run_in_executor(executor, _connect, path)
        except sqlite3.Error as exc:
            executor.shutdown(wait=False)
            raise StoreError(f"cannot open SQLite database {path!r}: {exc}") from exc
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(executor, conn)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise StoreError("the SQLite store is closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, conn)
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite: {exc}") from exc

    async def get(self, key: ObjectKey) -> StoredObject | None:
        sql = f"{_SELECT} WHERE {_KEY_MATCH} AND deleted = 0"

        def run(conn: sqlite3.Connection) -> StoredObject | None:
            row = conn.execute(sql, _key_params(key)).fetchone()
            return _row_to_object(row) if row else None

        return await self._run(run)

    async def get_many(self, keys: Sequence[ObjectKey]) -> dict[ObjectKey, StoredObject]:
        wanted = list(dict.fromkeys(keys))
        sql = f"{_SELECT} WHERE {_KEY_MATCH} AND deleted = 0"

        def run(conn: sqlite3.Connection) -> dict[ObjectKey, StoredObject]:
            # One trip to the database thread; each lookup is an in-process primary-key probe.
            found: dict[ObjectKey, StoredObject] = {}
            for key in wanted:
                row = conn.execute(sql, _key_params(key)).fetchone()
                if row:
                    found[key] = _row_to_object(row)
            return found

        return await self._run(run) if wanted else {}

    async def apply(self, writes: Sequence[Write]) -> int:
        batch = list(writes)

        def run(conn: sqlite3.Connection) -> int:
            now = time.time()
            before = conn.total_changes
            conn.execute("BEGIN IMMEDIATE")
            try:
                # executemany re-uses one prepared statement: thousands of rows per call are cheap.
                # total_changes skips rows whose DO UPDATE was vetoed by the seq guard.
                conn.executemany(_WRITE, (_write_params(w, now) for w in batch))
                landed = conn.total_changes - before
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return landed

        return await self._run(run) if batch else 0

    async def list(
        self,
        account: str | None = None,
        cluster: str | None = None,
        kind: Kind | None = None,
        *,
        namespace: str | None = None,
        name: str | None = None,
        after: ObjectKey | None = None,
        limit: int | None = None,
    ) -> list[StoredObject]:
        where = ["deleted = 0"]
        params: list[Any] = []
        for column, value in (
            ("account", account),
            ("cluster", cluster),
            ("namespace", namespace),
            ("name", name),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if kind is not None:
            where.append("api_group = ? AND api_version = ? AND resource = ?")
            params += [kind.group, kind.version, kind.resource]
        if after is not None:  # a row value compares column by column, as ObjectKey does
            where.append(f"({_KEY}) > ({', '.join('?' * 7)})")
            params += _key_params(after)
        # The key column order equals ObjectKey's field order, so this matches sorted(keys).
        sql = f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY {_KEY}"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)

        def run(conn: sqlite3.Connection) -> list[StoredObject]:
            return [_row_to_object(row) for row in conn.execute(sql, params)]

        return await self._run(run)

    async def count_kinds(
        self, account: str | None = None, cluster: str | None = None
    ) -> builtins.list[KindCount]:
        sql, params = count_kinds_query(account, cluster)

        def run(conn: sqlite3.Connection) -> list[KindCount]:
            return [
                KindCount(r[0], r[1], Kind(r[2], r[3], r[4]), int(r[5]))
                for r in conn.execute(sql, params)
            ]

        return await self._run(run)

    async def count_dead_letters(self) -> dict[str, int]:
        def run(conn: sqlite3.Connection) -> dict[str, int]:
            rows = conn.execute("SELECT subject, count(*) FROM dead_letters GROUP BY subject")
            return {str(subject): int(n) for subject, n in rows}

        return await self._run(run)

    async def highest_version(self) -> int:
        def run(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT coalesce(max(seq), 0) FROM objects").fetchone()[0])

        return await self._run(run)

    async def purge_tombstones(self, older_than: float) -> int:
        def run(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "DELETE FROM objects WHERE deleted = 1 AND updated_at < ?", (older_than,)
            )
            return cur.rowcount

        return await self._run(run)

    async def park(self, subject: str, data: bytes, reason: str) -> int:
        def run(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO dead_letters (subject, data, reason, parked_at) VALUES (?, ?, ?, ?)",
                (subject, bytes(data), reason, time.time()),
            )
            assert cur.lastrowid is not None  # always set after a successful INSERT
            return cur.lastrowid

        return await self._run(run)

    # builtins.list: inside the class body, plain ``list`` now names the method above.
    async def dead_letters(self, limit: int = 100) -> builtins.list[DeadLetter]:
        """The oldest ``limit`` dead letters, by id ascending (the order they were parked)."""

        def run(conn: sqlite3.Connection) -> list[DeadLetter]:
            rows = conn.execute(
                "SELECT id, subject, data, reason, parked_at FROM dead_letters ORDER BY id LIMIT ?",
                (limit,),
            )
            return [_row_to_dead_letter(row) for row in rows]

        return await self._run(run)

    async def dead_letter(self, id: int) -> DeadLetter | None:
        def run(conn: sqlite3.Connection) -> DeadLetter | None:
            row = conn.execute(
                "SELECT id, subject, data, reason, parked_at FROM dead_letters WHERE id = ?", (id,)
            ).fetchone()
            return _row_to_dead_letter(row) if row else None

        return await self._run(run)

    async def drop_dead_letter(self, id: int) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM dead_letters WHERE id = ?", (id,)).rowcount > 0

        return await self._run(run)

    async def add_write(self, write: WriteRecord) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            now = time.time()
            cur = conn.execute(
                f"INSERT INTO writes ({_WRITE_COLUMNS}) VALUES ({', '.join('?' * 15)})"
                " ON CONFLICT (id) DO NOTHING",
                (
                    *write.column_values(),
                    now,
                    now,
                ),
            )
            return cur.rowcount > 0

        return await self._run(run)

    async def get_write(self, id: str) -> WriteRecord | None:
        def run(conn: sqlite3.Connection) -> WriteRecord | None:
            sql = f"SELECT {_WRITE_COLUMNS} FROM writes WHERE id = ?"
            row = conn.execute(sql, (id,)).fetchone()
            return _row_to_write(row) if row else None

        return await self._run(run)

    async def settle_write(self, id: str, status: WriteStatus, reason: str = "") -> bool:
        currents = replaceable_statuses(status)
        keep_data = "data" if not is_final(status) else "x''"
        sql = (
            f"UPDATE writes SET status = ?, reason = ?, updated_at = ?, data = {keep_data}"
            f" WHERE id = ? AND status IN ({', '.join('?' * len(currents))})"
        )

        def run(conn: sqlite3.Connection) -> bool:
            params = (status.value, reason, time.time(), id, *currents)
            return conn.execute(sql, params).rowcount > 0

        return await self._run(run) if currents else False

    async def claim_forward(self, id: str) -> str | None:
        def run(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(_NEWER_FORWARDED, (id,)).fetchone()
            if row is not None:
                return str(row[0])
            conn.execute("UPDATE writes SET forwarded = 1 WHERE id = ?", (id,))
            return None

        return await self._run(run)

    async def pending_writes(self, limit: int = 10_000) -> builtins.list[WriteRecord]:
        def run(conn: sqlite3.Connection) -> list[WriteRecord]:
            rows = conn.execute(
                f"SELECT {_WRITE_COLUMNS} FROM writes WHERE status = 'pending' ORDER BY n LIMIT ?",
                (limit,),
            )
            return [_row_to_write(row) for row in rows]

        return await self._run(run)

    async def count_writes(self) -> builtins.list[tuple[str, str, str, int]]:
        def run(conn: sqlite3.Connection) -> list[tuple[str, str, str, int]]:
            rows = conn.execute(
                "SELECT account, cluster, status, count(*) FROM writes"
                " GROUP BY account, cluster, status ORDER BY account, cluster, status"
            )
            return [(r[0], r[1], r[2], int(r[3])) for r in rows]

        return await self._run(run)

    async def recent_writes(
        self,
        account: str | None = None,
        cluster: str | None = None,
        ref: ObjectRef | None = None,
        limit: int = 100,
    ) -> builtins.list[WriteRecord]:
        where, params = write_filter(account, cluster, ref, "?")
        sql = f"SELECT {_WRITE_COLUMNS} FROM writes{where} ORDER BY n DESC LIMIT ?"

        def run(conn: sqlite3.Connection) -> list[WriteRecord]:
            return [_row_to_write(row) for row in conn.execute(sql, (*params, limit))]

        return await self._run(run)

    async def purge_writes(self, older_than: float) -> int:
        finals = [s.value for s in WriteStatus if is_final(s)] + [WriteStatus.SENT.value]
        sql = (
            "DELETE FROM writes WHERE updated_at < ?"
            f" AND status IN ({', '.join('?' * len(finals))})"
        )

        def run(conn: sqlite3.Connection) -> int:
            return conn.execute(sql, (older_than, *finals)).rowcount

        return await self._run(run)

    async def save_cluster_info(self, info: ClusterInfo) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO cluster_info (account, cluster, protocol, kinds, updated_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (account, cluster) DO UPDATE SET"
                " protocol = excluded.protocol, kinds = excluded.kinds,"
                " updated_at = excluded.updated_at",
                (
                    info.account,
                    info.cluster,
                    info.protocol,
                    encode_kinds(info.kinds).decode(),
                    time.time(),
                ),
            )

        await self._run(run)

    async def cluster_info(self, account: str, cluster: str) -> ClusterInfo | None:
        def run(conn: sqlite3.Connection) -> tuple[str, str, float] | None:
            row = conn.execute(
                "SELECT protocol, kinds, updated_at FROM cluster_info"
                " WHERE account = ? AND cluster = ?",
                (account, cluster),
            ).fetchone()
            return (row[0], row[1], float(row[2])) if row else None

        found = await self._run(run)
        if found is None:
            return None
        protocol, kinds, updated_at = found
        return ClusterInfo(account, cluster, protocol, decode_kinds(kinds), updated_at)

    async def save_link(
        self, account: str, cluster: str, connection_id: str, link: bytes, *, current: bool
    ) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            now = time.time()
            if current:
                cur = conn.execute(
                    "UPDATE cluster_state SET link = ?, updated_at = ?"
                    " WHERE account = ? AND cluster = ? AND connection_id = ?",
                    (link.decode(), now, account, cluster, connection_id),
                )
            else:
                cur = conn.execute(
                    "INSERT INTO cluster_state VALUES (?, ?, ?, ?, '{}', ?)"
                    " ON CONFLICT (account, cluster) DO UPDATE SET"
                    " connection_id = excluded.connection_id, link = excluded.link,"
                    " updated_at = excluded.updated_at",
                    (account, cluster, connection_id, link.decode(), now),
                )
            return cur.rowcount > 0

        return await self._run(run)

    async def save_progress(self, account: str, cluster: str, progress: bytes) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO cluster_state VALUES (?, ?, '', '{}', ?, ?)"
                " ON CONFLICT (account, cluster) DO UPDATE SET progress = excluded.progress,"
                " updated_at = excluded.updated_at",
                (account, cluster, progress.decode(), time.time()),
            )

        return await self._run(run)

    async def cluster_states(self) -> builtins.list[ClusterState]:
        def run(conn: sqlite3.Connection) -> list[ClusterState]:
            rows = conn.execute(
                "SELECT account, cluster, connection_id, link, progress, updated_at"
                " FROM cluster_state ORDER BY account, cluster"
            )
            return [
                ClusterState(r[0], r[1], r[2], r[3].encode(), r[4].encode(), float(r[5]))
                for r in rows
            ]

        return await self._run(run)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return  # closing twice is harmless
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        finally:
            self._executor.shutdown(wait=False)
