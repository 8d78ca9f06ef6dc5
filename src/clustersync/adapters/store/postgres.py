"""The PostgreSQL store (asyncpg): the backend's shared copy of every synced object.

Writes are guarded by ``seq`` inside the database (``ON CONFLICT ... WHERE excluded.seq >
objects.seq``), so several backend replicas can apply the same bus messages concurrently and a
stale or redelivered message never overwrites newer state, without any locking in Python.
"""

from __future__ import annotations

import builtins
import contextlib
import re
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

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
    StoreUnavailableError,
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
from clustersync.protocol.messages import WriteStatus

CONNECT_TIMEOUT = 10.0
POOL_MIN_SIZE = 1
POOL_MAX_SIZE = 4

# Serialises concurrent migrators (several replicas starting at once). Any constant works as
# long as nothing else in the database uses it; this one spells "clsync" in ASCII.
_MIGRATION_LOCK = 0x636C7379_6E63

# True where this PostgreSQL build can compress with lz4 (a build option, on in Debian's and
# the official images since PostgreSQL 14).
_LZ4_AVAILABLE = (
    "EXISTS (SELECT FROM pg_settings"
    " WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals))"
)

_KEY_COLUMNS = ("account", "cluster", "api_group", "api_version", "resource", "namespace", "name")
_KEY = ", ".join(_KEY_COLUMNS)

# Versioned migrations: (version, statements). Never edit an applied one; append a new version.
# ``object`` is ``jsonb`` (migration 0002): queryable and indexable. jsonb reorders keys and
# respaces, which is harmless here: kubescape's checksum ignores key order and hashes numbers as
# doubles, so a stored object re-hashes to its checksum; the contract compares parsed JSON.
# jsonb refuses the \u0000 escape; such an object fails to store and is parked as a dead letter.
# Key columns use the "C" collation so ORDER BY matches Python's string order (code points),
# which is what ObjectKey's ordering and the SQLite store give; it also makes comparisons cheap.
MIGRATIONS: list[tuple[str, list[str]]] = [
    (
        "0001",
        [
            """
            CREATE TABLE objects (
                account          text COLLATE "C" NOT NULL,
                cluster          text COLLATE "C" NOT NULL,
                api_group        text COLLATE "C" NOT NULL,
                api_version      text COLLATE "C" NOT NULL,
                resource         text COLLATE "C" NOT NULL,
                namespace        text COLLATE "C" NOT NULL,
                name             text COLLATE "C" NOT NULL,
                uid              text NOT NULL DEFAULT '',
                resource_version text NOT NULL DEFAULT '',
                checksum         text NOT NULL DEFAULT '',
                object           json,             -- NULL on tombstones; see below
                seq              bigint NOT NULL,
                deleted          boolean NOT NULL DEFAULT false,
                updated_at       timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (account, cluster, api_group, api_version, resource, namespace, name)
            )
            """,
            # purge_tombstones scans only tombstones, which are few next to live rows.
            "CREATE INDEX objects_tombstones ON objects (updated_at) WHERE deleted",
            """
            CREATE TABLE dead_letters (
                id        bigserial PRIMARY KEY,
                subject   text NOT NULL,
                data      bytea NOT NULL,
                reason    text NOT NULL,
                parked_at timestamptz NOT NULL DEFAULT now()
            )
            """,
        ],
    ),
    ("0002", ["ALTER TABLE objects ALTER COLUMN object TYPE jsonb USING object::jsonb"]),
    (
        "0003",
        [
            # n orders pending writes by arrival (ids are random); data is the bus message,
            # emptied once the outcome is final.
            """
            CREATE TABLE writes (
                n           bigserial PRIMARY KEY,
                id          text NOT NULL UNIQUE,
                account     text NOT NULL,
                cluster     text NOT NULL,
                api_group   text NOT NULL,
                api_version text NOT NULL,
                resource    text NOT NULL,
                namespace   text NOT NULL,
                name        text NOT NULL,
                verb        text NOT NULL,
                status      text NOT NULL,
                reason      text NOT NULL,
                subject     text NOT NULL,
                data        bytea NOT NULL,
                created_at  timestamptz NOT NULL DEFAULT now(),
                updated_at  timestamptz NOT NULL DEFAULT now()
            )
            """,
            "CREATE INDEX writes_pending ON writes (n) WHERE status = 'pending'",
            """
            CREATE TABLE cluster_info (
                account    text NOT NULL,
                cluster    text NOT NULL,
                protocol   text NOT NULL,
                kinds      jsonb NOT NULL,
                updated_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (account, cluster)
            )
            """,
        ],
    ),
    (
        "0004",
        [
            """
            CREATE TABLE cluster_state (
                account       text NOT NULL,
                cluster       text NOT NULL,
                connection_id text NOT NULL,
                link          jsonb NOT NULL,
                progress      jsonb NOT NULL,
                updated_at    timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (account, cluster)
            )
            """,
        ],
    ),
    (
        "0005",
        [
            # count_kinds (status, fleet page, cluster metrics) reads only this narrow index of
            # live rows, never the objects' bodies: an index-only scan once VACUUM has set the
            # visibility map. Exact by construction, nothing extra on the write path but the
            # index itself. Built inside the migration's transaction (not CONCURRENTLY): writes
            # wait for the build, a few seconds at 1M rows.
            "CREATE INDEX objects_live_kinds ON objects"
            " (account, cluster, api_group, api_version, resource) WHERE NOT deleted",
        ],
    ),
    (
        "0006",
        [
            # The index of 0005 also matches every lookup of a live object by its key (its
            # columns are the key's first five, its predicate the lookups' NOT deleted). With
            # statistics from before a large initial sync, PostgreSQL took it for the batched
            # reads and filtered a whole kind's entries for each key: seconds per batch at 100k
            # objects. With the whole key in it, either index finds one object directly, and
            # counting still reads only the index.
            "DROP INDEX objects_live_kinds",
            "CREATE INDEX objects_live_kinds ON objects"
            " (account, cluster, api_group, api_version, resource, namespace, name)"
            " WHERE NOT deleted",
        ],
    ),
    (
        "0007",
        [
            # Objects (5 KB and up) are compressed when stored; with PostgreSQL's default, pglz,
            # that was the largest part of PostgreSQL's CPU per synced object. lz4 costs a
            # fraction of it for a slightly larger row. Only values written from now on use it
            # (rows stored before stay readable as they are); no rewrite, a brief lock. A server
            # built without lz4 keeps pglz. EXECUTE: a server older than 14, which knows no
            # SET COMPRESSION (and no lz4), never parses the statement.
            f"""
            DO $$ BEGIN
                IF {_LZ4_AVAILABLE} THEN
                    EXECUTE 'ALTER TABLE objects ALTER COLUMN object SET COMPRESSION lz4';
                END IF;
            END $$
            """,
        ],
    ),
    (
        "0008",
        [
            # Which backend writes were forwarded to their cluster, so that an older write to
            # the same object, redelivered later, is not carried out after a newer one.
            "ALTER TABLE writes ADD COLUMN forwarded boolean NOT NULL DEFAULT false",
            "CREATE INDEX writes_forwarded ON writes"
            " (account, cluster, api_group, api_version, resource, namespace, name, n)"
            " WHERE forwarded",
        ],
    ),
]

# Per-connection staging table for apply(). It is created once when the pool opens a connection
# and emptied by every commit (ON COMMIT DELETE ROWS) rather than created and dropped per batch:
# that avoids catalog churn on every write and keeps asyncpg's cached COPY introspection valid
# (a table dropped at commit would leave a cached statement pointing at a dead relation).
# ``earlier`` lists the lower seqs of a key's writes in this batch that would each have landed if
# the writes were applied one by one (see _dedupe); it is NULL for the usual single write and
# only feeds the count apply() returns.
# Staged objects are compressed too (a row over 2 KB is), then read back whole for the INSERT:
# with pglz that doubled the compression cost of every object; lz4 where the server has it.
_STAGING = "clustersync_staged"


def _staging_ddl(lz4: bool) -> str:
    compression = " COMPRESSION lz4" if lz4 else ""
    return f"""
        CREATE TEMP TABLE IF NOT EXISTS {_STAGING} (
            account text, cluster text, api_group text, api_version text, resource text,
            namespace text, name text, uid text, resource_version text, checksum text,
            object text{compression}, seq bigint, deleted boolean, earlier bigint[]
        ) ON COMMIT DELETE ROWS
    """


_STAGING_COLUMNS = (
    *_KEY_COLUMNS,
    "uid",
    "resource_version",
    "checksum",
    "object",
    "seq",
    "deleted",
    "earlier",
)


def _string_at(field: str) -> str:
    """SQL for the string at ``metadata.<field>`` of the staged object ``j``, else ''."""
    path = f"'{{metadata,{field}}}'"
    return f"CASE WHEN jsonb_typeof(j #> {path}) = 'string' THEN j #>> {path} ELSE '' END"


_PK_MATCH = " AND ".join(f"o.{c} = s.{c}" for c in _KEY_COLUMNS)
_MIN_SEQ = -(2**63)  # "no row yet": every seq is above it

# One statement per batch. The object goes through COPY as text and is cast to jsonb here, so
# PostgreSQL validates the JSON once, server side. The WHERE on the conflict branch is the seq
# guard: stale writes are skipped and RETURNING omits them.
# An UnparsedObject is staged with a NULL uid and resource_version: they are read here from the
# jsonb the cast builds anyway (strings only, as protocol.backend.identity_of reads them), which
# costs PostgreSQL a little and saves the ingester a parse of every object. OFFSET 0 keeps the
# subquery from being merged into the INSERT, which would repeat the cast for each use of ``j``.
# The count is the rows that landed plus, for keys written several times in the batch, the
# earlier versions that would have landed one at a time (what the SQLite store counts). Every
# part of a WITH statement reads the same snapshot, so the seq lookup sees each row as it
# was before this INSERT. The lookup is a scalar subquery on purpose: the planner cannot turn it
# into a join (which, with no statistics on the temp table, could mean scanning all objects);
# it stays one primary-key probe per multi-write key and nothing for the other rows.
_UPSERT = f"""
    WITH landed AS (
        INSERT INTO objects AS o ({_KEY}, uid, resource_version, checksum, object, seq,
                                  deleted, updated_at)
        SELECT {_KEY}, coalesce(uid, {_string_at("uid")}), coalesce(resource_version,
               {_string_at("resourceVersion")}), checksum, j, seq, deleted, now()
        FROM (SELECT *, object::jsonb AS j FROM {_STAGING} OFFSET 0) AS staged
        ON CONFLICT ({_KEY}) DO UPDATE SET
            uid = excluded.uid,
            resource_version = excluded.resource_version,
            checksum = excluded.checksum,
            object = excluded.object,
            seq = excluded.seq,
            deleted = excluded.deleted,
            updated_at = excluded.updated_at
        WHERE excluded.seq > o.seq
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM landed) + coalesce((
        SELECT sum((SELECT count(*) FROM unnest(s.earlier) AS h WHERE h > coalesce(
                        (SELECT o.seq FROM objects o WHERE {_PK_MATCH}), {_MIN_SEQ})))
        FROM {_STAGING} s
        WHERE s.earlier IS NOT NULL
    ), 0)::bigint
"""

_SELECT = f"""
    SELECT {_KEY}, uid, resource_version, checksum, object::text AS object, seq,
           extract(epoch FROM updated_at)::float8 AS updated_at
    FROM objects
"""

# get_many: the wanted keys arrive as seven parallel arrays (one parameter per key column, so the
# statement stays the same, and prepared, whatever the number of keys). Each key is one
# primary-key probe. The arrays' text has the default collation: COLLATE "C" makes the
# comparison use the key columns' own, so the primary-key index serves it.
_KEY_ARRAYS = ", ".join(f"${n}::text[]" for n in range(1, len(_KEY_COLUMNS) + 1))
_WANTED_MATCH = " AND ".join(f'o.{c} = k.{c} COLLATE "C"' for c in _KEY_COLUMNS)
_GET_MANY = f"""
    SELECT {", ".join(f"o.{c}" for c in _KEY_COLUMNS)}, o.uid, o.resource_version, o.checksum,
           o.object::text AS object, o.seq, extract(epoch FROM o.updated_at)::float8 AS updated_at
    FROM unnest({_KEY_ARRAYS}) AS k({_KEY})
    JOIN objects o ON {_WANTED_MATCH}
    WHERE NOT o.deleted
"""


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text and text[0] else type(exc).__name__


def _redact(url: str) -> str:
    """The URL without its password, safe for error messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "<unparseable URL>"


def _check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a non-numeric port
    except ValueError as exc:
        raise StoreError(f"bad PostgreSQL URL {_redact(url)!r}: {_one_line(exc)}") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise StoreError(f"bad PostgreSQL URL {_redact(url)!r}: scheme must be postgresql://")
    if not re.fullmatch(r"/[^/]+", parts.path or ""):
        raise StoreError(f"bad PostgreSQL URL {_redact(url)!r}: no database name in the path")


# Errors asyncpg raises for an unusable server or URL: bad DSN values (ValueError), refused or
# unresolvable hosts (OSError), timeouts, and server-side refusals (PostgresError).
# The server is away (down, restarting, shutting down) or the connection broke: worth waiting for.
_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
)
# What the jsonb cast raises for text it refuses: not JSON (22P02), a \u0000 escape or one
# the database encoding cannot hold (22P05), bad UTF-8 (22021).
_NOT_JSONB = frozenset({"22P02", "22P05", "22021"})
_CONNECT_ERRORS = (OSError, ValueError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


async def _connect(url: str) -> asyncpg.Connection:
    _check_url(url)
    try:
        return await asyncpg.connect(url, timeout=CONNECT_TIMEOUT)
    except _CONNECT_ERRORS as exc:
        raise StoreError(f"cannot connect to {_redact(url)}: {_one_line(exc)}") from None


def count_kinds_query(account: str | None, cluster: str | None) -> tuple[str, list[str]]:
    """count_kinds' SQL and arguments. Its ``NOT deleted`` and grouped columns match the partial
    index objects_live_kinds (migration 0005), so PostgreSQL can answer from that index alone."""
    where = ["NOT deleted"]
    args: list[str] = []
    for column, value in (("account", account), ("cluster", cluster)):
        if value is not None:
            args.append(value)
            where.append(f"{column} = ${len(args)}")
    groups = "account, cluster, api_group, api_version, resource"
    query = (
        f"SELECT {groups}, count(*) AS n FROM objects WHERE {' AND '.join(where)}"
        f" GROUP BY {groups} ORDER BY {groups}"
    )
    return query, args


async def migrate(url: str) -> list[str]:
    """Apply pending migrations; returns the versions applied by this call (empty if none).

    Each migration runs in its own transaction holding a transaction-scoped advisory lock, so
    concurrent migrators queue up and the later ones find the work done."""
    return await _migrate(url)


async def _migrate(url: str) -> list[str]:
    conn = await _connect(url)
    applied: list[str] = []
    try:
        for version, statements in MIGRATIONS:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                # Inside the lock: concurrent CREATE TABLE IF NOT EXISTS can still collide.
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version text PRIMARY KEY,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
                done = await conn.fetchval(
                    "SELECT true FROM schema_migrations WHERE version = $1", version
                )
                if done:
                    continue
                for statement in statements:
                    await conn.execute(statement)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
                applied.append(version)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        raise StoreError(f"migration failed: {_one_line(exc)}") from exc
    finally:
        await conn.close()
    return applied


async def open_postgres(url: str, *, migrate: bool = True) -> PostgresStore:
    """Open a small connection pool on ``postgresql://user[:password]@host:port/db``.

    Raises StoreError with a one-line reason for a bad URL or an unreachable server."""
    _check_url(url)
    if migrate:
        await _migrate(url)  # the keyword parameter shadows migrate() in here
    try:
        pool = await asyncpg.create_pool(
            url,
            min_size=POOL_MIN_SIZE,
            max_size=POOL_MAX_SIZE,
            timeout=CONNECT_TIMEOUT,
            init=_init_connection,
            reset=_keep_session,
            # Plan every execution for the table as it is now. asyncpg keeps statements
            # prepared, and after five runs PostgreSQL may settle on a generic plan made while
            # the table was small (sequential scans), which a store that grew to 100k rows then
            # runs for every batched read: 22 ms became 410 ms for 300 keys, and a read of one
            # batch took 26 s in the production benchmark. Planning costs well under a ms.
            server_settings={"plan_cache_mode": "force_custom_plan"},
        )
    except _CONNECT_ERRORS as exc:
        raise StoreError(f"cannot connect to {_redact(url)}: {_one_line(exc)}") from None
    return PostgresStore(pool)


async def _init_connection(conn: asyncpg.Connection) -> None:
    lz4: bool = await conn.fetchval(f"SELECT {_LZ4_AVAILABLE}")
    await conn.execute(_staging_ddl(lz4))


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Nothing to reset when a connection goes back to the pool. asyncpg's default runs a reset
    query (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL) on every release, one round trip per
    store call; this store never changes session state: it takes only transaction-scoped locks,
    listens to nothing, sets nothing, and its staging table empties on every commit. asyncpg still
    rolls back a transaction left open, before calling this."""


def _dedupe(writes: Sequence[Write]) -> list[tuple[Write, list[int] | None]]:
    """One write per key so the single INSERT never touches a row twice (PostgreSQL rejects
    that): the first write with the highest seq, the one that wins when the writes are applied
    one by one. With it come the lower seqs that would each have landed one by one (each higher
    than all before it), so apply() can count like sequential writes; None if there are none."""
    best: dict[ObjectKey, tuple[Write, list[int] | None]] = {}
    for write in writes:
        current = best.get(write.key)
        if current is None:
            best[write.key] = (write, None)
        elif write.seq > current[0].seq:
            earlier = current[1] or []
            earlier.append(current[0].seq)
            best[write.key] = (write, earlier)
    return list(best.values())


def _staged_row(write: Write, earlier: list[int] | None) -> tuple[Any, ...]:
    key = write.key
    kind = key.ref.kind
    head = (
        key.account,
        key.cluster,
        kind.group,
        kind.version,
        kind.resource,
        key.ref.namespace,
        key.ref.name,
    )
    if isinstance(write, Delete):
        return (*head, "", "", "", None, write.seq, True, earlier)
    if isinstance(write, UnparsedObject):
        # Valid JSON (the jsonb cast checks) that opens with "{" is an object.
        if write.object[:1] != b"{":
            raise BadObjectError(f"{write.key.ref}: object is not a JSON object")
        text = write.object.decode("utf-8")
        return (*head, None, None, write.checksum, text, write.seq, False, earlier)
    return (
        *head,
        write.uid,
        write.resource_version,
        write.checksum,
        write.object.decode("utf-8"),
        write.seq,
        False,
        earlier,
    )


def _row_to_object(row: asyncpg.Record) -> StoredObject:
    ref = ObjectRef(
        Kind(row["api_group"], row["api_version"], row["resource"]), row["namespace"], row["name"]
    )
    return StoredObject(
        key=ObjectKey(row["account"], row["cluster"], ref),
        uid=row["uid"],
        resource_version=row["resource_version"],
        checksum=row["checksum"],
        object=row["object"].encode("utf-8"),
        seq=row["seq"],
        updated_at=row["updated_at"],
    )


# The newest write to the same object as write $1 that was forwarded and came after it.
_NEWER_FORWARDED = """
    SELECT o.id FROM writes AS w JOIN writes AS o
      ON (o.account, o.cluster, o.api_group, o.api_version, o.resource, o.namespace, o.name)
       = (w.account, w.cluster, w.api_group, w.api_version, w.resource, w.namespace, w.name)
    WHERE w.id = $1 AND o.forwarded AND o.n > w.n
    ORDER BY o.n DESC LIMIT 1
"""

_WRITE_SELECT = """
    SELECT id, account, cluster, api_group, api_version, resource, namespace, name, verb, status,
           reason, subject, data, extract(epoch FROM created_at)::float8 AS created_at,
           extract(epoch FROM updated_at)::float8 AS updated_at
    FROM writes
"""


def _row_to_write(row: asyncpg.Record) -> WriteRecord:
    return WriteRecord(
        id=row["id"],
        account=row["account"],
        cluster=row["cluster"],
        ref=ObjectRef(
            Kind(row["api_group"], row["api_version"], row["resource"]),
            row["namespace"],
            row["name"],
        ),
        verb=row["verb"],
        status=WriteStatus(row["status"]),
        reason=row["reason"],
        subject=row["subject"],
        data=bytes(row["data"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _row_to_dead_letter(row: asyncpg.Record) -> DeadLetter:
    parked: datetime = row["parked_at"]
    return DeadLetter(
        id=row["id"],
        subject=row["subject"],
        data=bytes(row["data"]),
        reason=row["reason"],
        parked_at=parked.timestamp(),
    )


class PostgresStore:
    """Store backed by PostgreSQL; safe to share between tasks (each call takes a pooled
    connection) and between processes (all guards are in SQL)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection, with driver and server errors turned into StoreError so callers
        depend on the Store contract only."""
        try:
            async with self._pool.acquire() as conn:
                yield conn
        except StoreError:
            raise
        except _UNAVAILABLE as exc:
            raise StoreUnavailableError(f"PostgreSQL unavailable: {_one_line(exc)}") from exc
        except (
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            OSError,
            TimeoutError,
            UnicodeDecodeError,
        ) as exc:
            raise StoreError(_one_line(exc)) from exc

    async def get(self, key: ObjectKey) -> StoredObject | None:
        kind = key.ref.kind
        async with self._conn() as conn:
            row = await conn.fetchrow(
                _SELECT + " WHERE account = $1 AND cluster = $2 AND api_group = $3"
                " AND api_version = $4 AND resource = $5 AND namespace = $6 AND name = $7"
                " AND NOT deleted",
                key.account,
                key.cluster,
                kind.group,
                kind.version,
                kind.resource,
                key.ref.namespace,
                key.ref.name,
            )
        return None if row is None else _row_to_object(row)

    async def get_many(self, keys: Sequence[ObjectKey]) -> dict[ObjectKey, StoredObject]:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        columns: list[list[str]] = [[] for _ in _KEY_COLUMNS]
        for key in wanted:
            kind = key.ref.kind
            values = (key.account, key.cluster, kind.group, kind.version, kind.resource,
                      key.ref.namespace, key.ref.name)  # fmt: skip
            for column, value in zip(columns, values, strict=True):
                column.append(value)
        async with self._conn() as conn:
            rows = await conn.fetch(_GET_MANY, *columns)
        found = (_row_to_object(row) for row in rows)
        return {row.key: row for row in found}

    async def apply(self, writes: Sequence[Write]) -> int:
        if not writes:
            return 0
        try:
            rows = [_staged_row(w, earlier) for w, earlier in _dedupe(writes)]
        except UnicodeDecodeError as exc:
            raise BadObjectError(f"object is not UTF-8 JSON text: {_one_line(exc)}") from exc
        async with self._conn() as conn:
            try:
                async with conn.transaction():
                    await conn.copy_records_to_table(
                        _STAGING, records=rows, columns=_STAGING_COLUMNS
                    )
                    landed: int = await conn.fetchval(_UPSERT)
            except asyncpg.DataError as exc:
                if exc.sqlstate in _NOT_JSONB:
                    raise BadObjectError(f"object refused as jsonb: {_one_line(exc)}") from exc
                raise
        return landed

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
        where = ["NOT deleted"]
        args: list[Any] = []
        filters: list[tuple[str, str | None]] = [
            ("account", account),
            ("cluster", cluster),
            ("namespace", namespace),
            ("name", name),
        ]
        if kind is not None:
            filters += [
                ("api_group", kind.group),
                ("api_version", kind.version),
                ("resource", kind.resource),
            ]
        for column, value in filters:
            if value is not None:
                args.append(value)
                where.append(f"{column} = ${len(args)}")
        if after is not None:  # a row value compares column by column, as ObjectKey does
            kind_after = after.ref.kind
            args += [
                after.account,
                after.cluster,
                kind_after.group,
                kind_after.version,
                kind_after.resource,
                after.ref.namespace,
                after.ref.name,
            ]
            marks = ", ".join(f"${n}" for n in range(len(args) - 6, len(args) + 1))
            where.append(f"({_KEY}) > ({marks})")
        query = f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY {_KEY}"
        if limit is not None:
            args.append(limit)
            query += f" LIMIT ${len(args)}"
        async with self._conn() as conn:
            rows = await conn.fetch(query, *args)
        return [_row_to_object(r) for r in rows]

    async def count_kinds(
        self, account: str | None = None, cluster: str | None = None
    ) -> builtins.list[KindCount]:
        query, args = count_kinds_query(account, cluster)
        async with self._conn() as conn:
            rows = await conn.fetch(query, *args)
        return [
            KindCount(
                r["account"],
                r["cluster"],
                Kind(r["api_group"], r["api_version"], r["resource"]),
                int(r["n"]),
            )
            for r in rows
        ]

    async def count_dead_letters(self) -> dict[str, int]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT subject, count(*) AS n FROM dead_letters GROUP BY subject"
            )
        return {str(r["subject"]): int(r["n"]) for r in rows}

    async def highest_version(self) -> int:
        async with self._conn() as conn:
            highest: int = await conn.fetchval("SELECT coalesce(max(seq), 0) FROM objects")
        return highest

    async def purge_tombstones(self, older_than: float) -> int:
        when = datetime.fromtimestamp(older_than, UTC)
        async with self._conn() as conn:
            status: str = await conn.execute(
                "DELETE FROM objects WHERE deleted AND updated_at < $1", when
            )
        return int(status.rsplit(" ", 1)[1])

    async def park(self, subject: str, data: bytes, reason: str) -> int:
        async with self._conn() as conn:
            ident: int = await conn.fetchval(
                "INSERT INTO dead_letters (subject, data, reason) VALUES ($1, $2, $3) RETURNING id",
                subject,
                data,
                reason,
            )
        return ident

    # builtins.list: inside the class body, plain `list` is the list() method above.
    async def dead_letters(self, limit: int = 100) -> builtins.list[DeadLetter]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT id, subject, data, reason, parked_at FROM dead_letters"
                " ORDER BY id LIMIT $1",
                limit,
            )
        return [_row_to_dead_letter(r) for r in rows]

    async def dead_letter(self, id: int) -> DeadLetter | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "SELECT id, subject, data, reason, parked_at FROM dead_letters WHERE id = $1", id
            )
        return None if row is None else _row_to_dead_letter(row)

    async def drop_dead_letter(self, id: int) -> bool:
        async with self._conn() as conn:
            status: str = await conn.execute("DELETE FROM dead_letters WHERE id = $1", id)
        return status != "DELETE 0"

    async def add_write(self, write: WriteRecord) -> bool:
        async with self._conn() as conn:
            status: str = await conn.execute(
                "INSERT INTO writes (id, account, cluster, api_group, api_version, resource,"
                " namespace, name, verb, status, reason, subject, data)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
                " ON CONFLICT (id) DO NOTHING",
                *write.column_values(),
            )
        return status != "INSERT 0 0"

    async def get_write(self, id: str) -> WriteRecord | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(_WRITE_SELECT + " WHERE id = $1", id)
        return None if row is None else _row_to_write(row)

    async def settle_write(self, id: str, status: WriteStatus, reason: str = "") -> bool:
        currents = list(replaceable_statuses(status))
        if not currents:
            return False
        keep_data = "data" if not is_final(status) else "''::bytea"
        async with self._conn() as conn:
            result: str = await conn.execute(
                "UPDATE writes SET status = $1, reason = $2, updated_at = now(),"
                f" data = {keep_data} WHERE id = $3 AND status = ANY($4::text[])",
                status.value,
                reason,
                id,
                currents,
            )
        return result != "UPDATE 0"

    async def claim_forward(self, id: str) -> str | None:
        async with self._conn() as conn, conn.transaction():
            newer: str | None = await conn.fetchval(_NEWER_FORWARDED, id)
            if newer is None:
                await conn.execute("UPDATE writes SET forwarded = true WHERE id = $1", id)
        return newer

    async def pending_writes(self, limit: int = 10_000) -> builtins.list[WriteRecord]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                _WRITE_SELECT + " WHERE status = 'pending' ORDER BY n LIMIT $1", limit
            )
        return [_row_to_write(r) for r in rows]

    async def count_writes(self) -> builtins.list[tuple[str, str, str, int]]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT account, cluster, status, count(*) AS n FROM writes"
                " GROUP BY account, cluster, status ORDER BY account, cluster, status"
            )
        return [(r["account"], r["cluster"], r["status"], int(r["n"])) for r in rows]

    async def recent_writes(
        self,
        account: str | None = None,
        cluster: str | None = None,
        ref: ObjectRef | None = None,
        limit: int = 100,
    ) -> builtins.list[WriteRecord]:
        where, params = write_filter(account, cluster, ref, "$")
        sql = f"{_WRITE_SELECT}{where} ORDER BY n DESC LIMIT ${len(params) + 1}"
        async with self._conn() as conn:
            rows = await conn.fetch(sql, *params, limit)
        return [_row_to_write(r) for r in rows]

    async def purge_writes(self, older_than: float) -> int:
        settled = [s.value for s in WriteStatus if is_final(s)] + [WriteStatus.SENT.value]
        async with self._conn() as conn:
            status: str = await conn.execute(
                "DELETE FROM writes WHERE updated_at < $1 AND status = ANY($2::text[])",
                datetime.fromtimestamp(older_than, UTC),
                settled,
            )
        return int(status.rsplit(" ", 1)[1])

    async def save_cluster_info(self, info: ClusterInfo) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "INSERT INTO cluster_info (account, cluster, protocol, kinds)"
                " VALUES ($1, $2, $3, $4::jsonb) ON CONFLICT (account, cluster) DO UPDATE SET"
                " protocol = excluded.protocol, kinds = excluded.kinds, updated_at = now()",
                info.account,
                info.cluster,
                info.protocol,
                encode_kinds(info.kinds).decode(),
            )

    async def cluster_info(self, account: str, cluster: str) -> ClusterInfo | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "SELECT protocol, kinds::text AS kinds,"
                " extract(epoch FROM updated_at)::float8 AS updated_at"
                " FROM cluster_info WHERE account = $1 AND cluster = $2",
                account,
                cluster,
            )
        if row is None:
            return None
        kinds = decode_kinds(row["kinds"])
        return ClusterInfo(account, cluster, row["protocol"], kinds, row["updated_at"])

    async def save_link(
        self, account: str, cluster: str, connection_id: str, link: bytes, *, current: bool
    ) -> bool:
        if current:
            query = (
                "UPDATE cluster_state SET link = $4::jsonb, updated_at = now()"
                " WHERE account = $1 AND cluster = $2 AND connection_id = $3"
            )
        else:
            query = (
                "INSERT INTO cluster_state (account, cluster, connection_id, link, progress)"
                " VALUES ($1, $2, $3, $4::jsonb, '{}') ON CONFLICT (account, cluster) DO UPDATE"
                " SET connection_id = excluded.connection_id, link = excluded.link,"
                " updated_at = now()"
            )
        async with self._conn() as conn:
            status: str = await conn.execute(query, account, cluster, connection_id, link.decode())
        return not status.endswith(" 0")

    async def save_progress(self, account: str, cluster: str, progress: bytes) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "INSERT INTO cluster_state (account, cluster, connection_id, link, progress)"
                " VALUES ($1, $2, '', '{}', $3::jsonb) ON CONFLICT (account, cluster) DO UPDATE"
                " SET progress = excluded.progress, updated_at = now()",
                account,
                cluster,
                progress.decode(),
            )

    async def cluster_states(self) -> builtins.list[ClusterState]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT account, cluster, connection_id, link::text AS link,"
                " progress::text AS progress,"
                " extract(epoch FROM updated_at)::float8 AS updated_at"
                " FROM cluster_state ORDER BY account, cluster"
            )
        return [
            ClusterState(
                r["account"],
                r["cluster"],
                r["connection_id"],
                r["link"].encode(),
                r["progress"].encode(),
                r["updated_at"],
            )
            for r in rows
        ]

    async def close(self) -> None:
        await self._pool.close()
