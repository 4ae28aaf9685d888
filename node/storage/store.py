"""The node's SQLite store (SQLAlchemy 2 Core, WAL).

Two files in the data directory, attached to every connection:
- `state.db` (schema `main`): jobs, counters, workers and the Raft index last applied. It is
  written only by Raft applies, so it is identical on every replica, and it is what a Raft
  snapshot copies.
- `payloads.db` (schema `payloads`): payload bytes, written by the data plane. Node-local: a
  node that lacks a payload fetches it from a peer, so snapshots leave it out.
"""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any, Awaitable, Callable, Iterable, Protocol, TypedDict, TypeVar, cast

from sqlalchemy import (
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Select,
    String,
    Table,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import PoolProxiedConnection

metadata = MetaData()

jobs = Table(
    "jobs",
    metadata,
    Column("id", String, primary_key=True),
    # Enqueue order: Raft index << 16 | position in the batch. Same on every replica.
    Column("seq", Integer, nullable=False, unique=True),
    Column("iterations", Integer, nullable=False),
    Column("size", Integer, nullable=False),
    Column("digest", String, nullable=False),
    Column("status", String, nullable=False),  # queued|running|completed|failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("worker", String),
    Column("enqueued_at", Float, nullable=False),
    Column("leased_at", Float),
    # Finish order, like seq; pullCompleted walks it backwards.
    Column("done_seq", Integer),
    # Position in the completion feed: 1, 2, 3... in finish order, the same on every replica.
    Column("feed", Integer),
    Column("finished_at", Float),
    Column("result", String),
    Column("error", String),
)
# Lease selection and the expiry scan: WHERE status=? ORDER BY seq LIMIT n.
Index("ix_jobs_status_seq", jobs.c.status, jobs.c.seq)
# Retention: ORDER BY done_seq over finished jobs only.
Index("ix_jobs_done_seq", jobs.c.done_seq, sqlite_where=jobs.c.done_seq.isnot(None))
# The completion feed: WHERE feed > after ORDER BY feed LIMIT n.
Index("ix_jobs_feed", jobs.c.feed, unique=True, sqlite_where=jobs.c.feed.isnot(None))
# pullCompleted: WHERE status='completed' ORDER BY done_seq DESC LIMIT top, an index walk
# (with the index above alone, SQLite sorted every completed job for each call).
Index(
    "ix_jobs_status_done_seq",
    jobs.c.status,
    jobs.c.done_seq,
    sqlite_where=jobs.c.done_seq.isnot(None),
)

# Idempotency keys: a retried enqueue with the same key gets the first job's id back.
idempotency = Table(
    "idempotency",
    metadata,
    Column("key", String, primary_key=True),
    Column("job_id", String, nullable=False),
    Column("iterations", Integer, nullable=False),
    Column("digest", String, nullable=False),
    Column("created_at", Float, nullable=False),
)
Index("ix_idempotency_created_at", idempotency.c.created_at)

counters = Table(
    "counters",
    metadata,
    Column("name", String, primary_key=True),
    Column("value", Integer, nullable=False),
)

workers = Table(
    "workers",
    metadata,
    Column("id", String, primary_key=True),
    Column("info", String, nullable=False),
    Column("last_seen", Float, nullable=False),
)

payloads = Table(
    "payloads",
    metadata,
    Column("id", String, primary_key=True),
    Column("data", LargeBinary, nullable=False),
    Column("stored_at", Float, nullable=False),
    schema="payloads",
)

STATUSES = ("queued", "running", "completed", "failed")
# backlog_iterations: iterations of the queued and running jobs, for the scaling policy;
# feed: the last position given in the completion feed.
COUNTERS = (
    "last_applied",
    "last_applied_term",
    "finished",
    "apply_failures",
    "backlog_iterations",
    "feed",
) + STATUSES


T = TypeVar("T")


class RunDb(Protocol):
    """Runs a blocking call (a Store method) off the event loop: `await run_db(fn, *args)`."""

    def __call__(self, fn: Callable[..., T], /, *args: Any) -> Awaitable[T]: ...


class ActiveJob(TypedDict):
    """A queued or running job as `Store.jobs_with_status` gives it."""

    id: str
    iterations: int
    size: int
    digest: str
    attempts: int
    worker: str | None
    leased_at: float | None


class JobDigest(TypedDict):
    """What `Store.jobs_and_payloads` tells of a job: its status and its payload's digest."""

    status: str
    digest: str


# Statements on the hottest paths, built once: building one costs more than running it.
_COUNTERS = select(counters.c.name, counters.c.value)
_COUNTER: Select[int] = select(counters.c.value).where(counters.c.name == bindparam("n"))
_BUMP = (
    update(counters)
    .where(counters.c.name == bindparam("n"))
    .values(value=counters.c.value + bindparam("d"))
)
_PUT_PAYLOAD = insert(payloads).prefix_with("OR REPLACE")
_JOB_DIGESTS = select(jobs.c.id, jobs.c.status, jobs.c.digest).where(
    jobs.c.id.in_(bindparam("ids", expanding=True))
)
_PAYLOADS_OF = select(payloads.c.id, payloads.c.data).where(
    payloads.c.id.in_(bindparam("ids", expanding=True))
)


class Store:
    """Tables and queries. Safe to use from several threads (one pooled connection each)."""

    def __init__(self, data_dir: str, sync_payloads: bool = False):
        """`sync_payloads`: every commit of payloads.db reaches the disk before it returns
        (the node's --fsync on), so an acknowledged job's payload survives a power cut."""
        os.makedirs(data_dir, exist_ok=True)
        self.sync_payloads = sync_payloads
        self.state_path = os.path.join(data_dir, "state.db")
        self.payloads_path = os.path.join(data_dir, "payloads.db")
        self.engine: Engine = create_engine(
            f"sqlite:///{self.state_path}", pool_size=8, max_overflow=8
        )
        event.listen(self.engine, "connect", self._on_connect)
        event.listen(self.engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
        with self.engine.begin() as conn:
            metadata.create_all(conn)
            columns = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(jobs)")}
            if "feed" not in columns:  # a store made before the completion feed
                conn.exec_driver_sql("ALTER TABLE jobs ADD COLUMN feed INTEGER")
            for table in metadata.sorted_tables:  # indexes added since the store was made
                for index in table.indexes:
                    index.create(conn, checkfirst=True)
            for name in COUNTERS:
                conn.execute(
                    text("INSERT OR IGNORE INTO counters(name, value) VALUES (:n, 0)"), {"n": name}
                )

    def _on_connect(self, dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        # pysqlite's own transaction handling starts transactions late (before the first
        # write); turn it off and emit BEGIN from the "begin" event, as SQLAlchemy documents.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("ATTACH DATABASE ? AS payloads", (self.payloads_path,))
        for schema in ("main", "payloads"):
            cur.execute(f"PRAGMA {schema}.journal_mode=WAL")
            # NORMAL in WAL mode is durable against process crashes; Raft replication is what
            # protects against losing a machine (see README). state.db can stay so with fsync
            # on too: what a power cut takes from it is applied again from the synced log.
            full = schema == "payloads" and self.sync_payloads
            cur.execute(f"PRAGMA {schema}.synchronous={'FULL' if full else 'NORMAL'}")
            # Python's SQLite is built with secure_delete on: every page a deleted payload
            # freed was zeroed and written again (73 us per 16 KB payload, on every node).
            # FAST still purges deleted rows from b-tree pages but leaves freed pages as they
            # are until reused: the data directory holds payloads and must be protected as such.
            cur.execute(f"PRAGMA {schema}.secure_delete=FAST")
        cur.execute("PRAGMA busy_timeout=10000")
        cur.close()

    def close(self) -> None:
        self.engine.dispose()

    # --- reads -------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return dict(conn.execute(_COUNTERS).all())

    def last_applied(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(_COUNTER, {"n": "last_applied"}).scalar_one()

    def oldest_queued_at(self) -> float | None:
        """Enqueue time of the first job in the queue: one index lookup."""
        q = (
            select(jobs.c.enqueued_at)
            .where(jobs.c.status == "queued")
            .order_by(jobs.c.seq)
            .limit(1)
        )
        with self.engine.connect() as conn:
            return conn.execute(q).scalar_one_or_none()

    def job(self, job_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
            return dict(row) if row else None

    @staticmethod
    def completed_query(top: int) -> Select[str, str | None, int, float | None]:
        return (
            select(jobs.c.id, jobs.c.result, jobs.c.iterations, jobs.c.finished_at)
            .where(jobs.c.done_seq.isnot(None), jobs.c.status == "completed")
            .order_by(jobs.c.done_seq.desc())
            .limit(top)
        )

    def completed(self, top: int) -> list[dict[str, Any]]:
        """The `top` most recently completed jobs, newest first: an index walk of `top` rows."""
        q = self.completed_query(top)
        with self.engine.connect() as conn:
            return [
                {
                    "id": r.id,
                    "result": r.result,
                    "iterations": r.iterations,
                    "completed_at": r.finished_at,
                }
                for r in conn.execute(q)
            ]

    @staticmethod
    def feed_query(after: int, limit: int) -> Select[Any]:
        return (
            select(
                jobs.c.feed,
                jobs.c.id,
                jobs.c.status,
                jobs.c.iterations,
                jobs.c.finished_at,
                jobs.c.result,
                jobs.c.error,
            )
            .where(jobs.c.feed > after)
            .order_by(jobs.c.feed)
            .limit(limit)
        )

    def feed(self, after: int, limit: int) -> tuple[list[dict[str, Any]], int, int]:
        """The completion feed: the finished jobs at positions after `after`, in order (at
        most `limit`); the first position still kept (older finished jobs were dropped by
        retention); and the last position given. Index walks, in one read transaction."""
        with self.engine.begin() as conn:
            rows = conn.execute(self.feed_query(after, limit)).all()
            last = conn.execute(_COUNTER, {"n": "feed"}).scalar_one()
            first = conn.execute(self.feed_query(-1, 1)).first()
        finished = [
            {
                "position": r.feed,
                "id": r.id,
                "status": r.status,
                "iterations": r.iterations,
                "finished_at": r.finished_at,
                **({"result": r.result} if r.status == "completed" else {"error": r.error}),
            }
            for r in rows
        ]
        return finished, last + 1 if first is None else first.feed, last

    @staticmethod
    def status_query(
        status: str, limit: int
    ) -> Select[str, int, int, str, int, str | None, float | None]:
        return (
            select(
                jobs.c.id,
                jobs.c.iterations,
                jobs.c.size,
                jobs.c.digest,
                jobs.c.attempts,
                jobs.c.worker,
                jobs.c.leased_at,
            )
            .where(jobs.c.status == status)
            .order_by(jobs.c.seq)
            .limit(limit)
        )

    def jobs_with_status(
        self, status: str, limit: int, exclude: Iterable[str] = ()
    ) -> list[ActiveJob]:
        """Oldest jobs in `status`, skipping ids in `exclude`: an index walk, not a scan."""
        exclude = set(exclude)
        q = self.status_query(status, limit + len(exclude))
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(q).mappings() if r.id not in exclude]
        return cast("list[ActiveJob]", rows[:limit])  # status_query's columns

    def job_states(self, job_ids: Iterable[str]) -> dict[str, tuple[str, str | None, int]]:
        """id -> (status, worker, attempts) for the ids that exist."""
        ids = list(job_ids)
        if not ids:
            return {}
        q = select(jobs.c.id, jobs.c.status, jobs.c.worker, jobs.c.attempts).where(
            jobs.c.id.in_(ids)
        )
        with self.engine.connect() as conn:
            return {r.id: (r.status, r.worker, r.attempts) for r in conn.execute(q)}

    def feed_positions(self, job_ids: list[str]) -> dict[str, tuple[str, int | None]]:
        """id -> (status, position in the completion feed) for the ids that exist."""
        q = select(jobs.c.id, jobs.c.status, jobs.c.feed).where(jobs.c.id.in_(job_ids))
        with self.engine.connect() as conn:
            return {r.id: (r.status, r.feed) for r in conn.execute(q)}

    def idempotency_key(self, key: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(idempotency).where(idempotency.c.key == key)).mappings().first()
            )
            return dict(row) if row else None

    def batch_keys(self, key: str) -> dict[str, dict[str, Any]]:
        """The idempotency keys a batch sent with `key` recorded (`key` and a space, then the
        part's place, as NodeService.enqueue_batch makes them), by key."""
        q = select(idempotency).where(idempotency.c.key > key + " ", idempotency.c.key < key + "!")
        with self.engine.connect() as conn:
            return {r["key"]: dict(r) for r in conn.execute(q).mappings()}

    def workers(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [
                {"id": r.id, "last_seen": r.last_seen, **json.loads(r.info)}
                for r in conn.execute(select(workers).order_by(workers.c.id))
            ]

    # --- payloads (node-local data plane) -------------------------------------------------

    def busy_workers(self) -> set[str]:
        """Workers holding a lease on a running job."""
        q = select(jobs.c.worker).where(jobs.c.status == "running").distinct()
        with self.engine.connect() as conn:
            return {w for w in conn.execute(q).scalars() if w}

    def put_payloads(self, items: list[tuple[str, bytes, float]]) -> None:
        """Store payloads in one transaction."""
        with self.engine.begin() as conn:
            conn.execute(
                _PUT_PAYLOAD,
                [{"id": job_id, "data": data, "stored_at": at} for job_id, data, at in items],
            )

    def get_payload(self, job_id: str) -> bytes | None:
        with self.engine.connect() as conn:
            return conn.execute(
                select(payloads.c.data).where(payloads.c.id == job_id)
            ).scalar_one_or_none()

    def jobs_and_payloads(self, ids: list[str]) -> dict[str, tuple[JobDigest | None, bytes | None]]:
        """For each id: its job's status and digest (None when this node has not applied its
        enqueue) and the payload held here (None when not held); two index lookups in all."""
        with self.engine.connect() as conn:
            known: dict[str, JobDigest] = {
                r.id: {"status": r.status, "digest": r.digest}
                for r in conn.execute(_JOB_DIGESTS, {"ids": ids})
            }
            held = dict(conn.execute(_PAYLOADS_OF, {"ids": ids}).all())
        return {i: (known.get(i), held.get(i)) for i in ids}

    def collect_payloads(self, orphan_before: float) -> int:
        """Delete payloads of finished jobs, and of jobs never committed (stored before
        `orphan_before` with no job row: their enqueue failed or timed out)."""
        live = select(jobs.c.id).where(
            jobs.c.id == payloads.c.id, jobs.c.status.in_(("queued", "running"))
        )
        known = select(jobs.c.id).where(jobs.c.id == payloads.c.id)
        with self.engine.begin() as conn:
            finished = conn.execute(delete(payloads).where(~live.exists(), known.exists()))
            orphans = conn.execute(
                delete(payloads).where(~known.exists(), payloads.c.stored_at < orphan_before)
            )
            return finished.rowcount + orphans.rowcount

    # --- writes used by the state machine -----------------------------------------------

    @staticmethod
    def add_to_counters(conn: Connection, deltas: dict[str, int]) -> None:
        """Add to several counters in one statement."""
        changes = [{"n": name, "d": d} for name, d in deltas.items() if d]
        if changes:
            conn.execute(_BUMP, changes)

    # --- snapshots ------------------------------------------------------------------------

    def pin(self) -> PinnedState:
        """Open a read transaction on state.db and read its applied index: a copy made from it
        (`PinnedState.copy_to`, from any thread) holds the state as of now, however much is
        applied meanwhile (WAL readers see the database as of their first read)."""
        raw = self.engine.raw_connection()
        try:
            db = _sqlite(raw)
            db.execute("BEGIN")
            (applied,) = db.execute(
                "SELECT value FROM counters WHERE name = 'last_applied'"
            ).fetchone()
        except BaseException:
            raw.close()
            raise
        return PinnedState(raw, applied)

    def restore_from(self, path: str) -> None:
        """Replace state.db's contents with the SQLite file at `path`."""
        raw = self.engine.raw_connection()
        try:
            src = sqlite3.connect(path)
            try:
                src.backup(_sqlite(raw), name="main")
            finally:
                src.close()
        finally:
            raw.close()


class PinnedState:
    """A read transaction on state.db (Store.pin), released by `copy_to` or `release`."""

    def __init__(self, raw: PoolProxiedConnection, applied: int):
        self._raw: PoolProxiedConnection | None = raw
        self.applied = applied  # the Raft index the state was applied up to

    def copy_to(self, path: str) -> None:
        """Copy the pinned state into a new SQLite file at `path`, then release it. SQLite's
        backup reads through the open read transaction and releases the GIL while it copies."""
        try:
            assert self._raw is not None, "the pinned state was released"
            dst = sqlite3.connect(path)
            try:
                _sqlite(self._raw).backup(dst, name="main")
            finally:
                dst.close()
        finally:
            self.release()

    def release(self) -> None:
        if self._raw is not None:
            raw, self._raw = self._raw, None
            try:
                _sqlite(raw).execute("ROLLBACK")
            finally:
                raw.close()


def _sqlite(raw: PoolProxiedConnection) -> sqlite3.Connection:
    """The pysqlite connection under a pooled one."""
    return cast(sqlite3.Connection, raw.driver_connection)


def count_by_status(conn: Connection) -> dict[str, int]:
    """Counts computed from the jobs table itself (tests compare them with the counters)."""
    rows = conn.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status)).all()
    return {s: 0 for s in STATUSES} | dict(rows)
