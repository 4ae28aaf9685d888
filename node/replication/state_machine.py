"""The replicated state machine: applies Raft commands to the SQLite store.

Applies are deterministic (all ids and times come from the command), idempotent (the Raft index
of each applied entry is stored in the same transaction, and entries at or below it are skipped
when pysyncobj replays its journal), and never raise: an exception inside a pysyncobj apply would
make it retry the same entry forever.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypedDict, cast

from sqlalchemy import BindParameter, bindparam, delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

from node.replication import commands as c
from node.storage.store import Store, idempotency, jobs, payloads, workers

log = logging.getLogger(__name__)

BATCH_SHIFT = 16  # seq = raft index << 16 | position in the command
MAX_BATCH = 1 << BATCH_SHIFT
# Positions one proposal may use: the leader appends up to MAX_BATCH // MAX_PROPOSAL_ITEMS
# proposals as one entry (RaftNode, groupCommands).
MAX_PROPOSAL_ITEMS = 4096
TRANSIENT_RETRIES = 5


# Statements built once: SQLAlchemy caches their compiled form, and the per-job ones run as
# one executemany, so applying a command costs a few statements however many jobs it holds.
_IDS: BindParameter[str] = bindparam("ids", expanding=True)
_EXISTING = select(jobs.c.id).where(jobs.c.id.in_(_IDS))
_INSERT_JOB = insert(jobs)
_LEASABLE = select(jobs.c.id, jobs.c.attempts, jobs.c.enqueued_at).where(
    jobs.c.id.in_(_IDS), jobs.c.status == "queued"
)
_LEASE = (
    update(jobs)
    .where(jobs.c.id == bindparam("b_id"))
    .values(
        status="running",
        attempts=bindparam("b_attempts"),
        worker=bindparam("b_worker"),
        leased_at=bindparam("b_at"),
    )
)
_FINISHING = select(jobs.c.id, jobs.c.status, jobs.c.iterations, jobs.c.leased_at).where(
    jobs.c.id.in_(_IDS)
)
_COMPLETE = (
    update(jobs)
    .where(jobs.c.id == bindparam("b_id"))
    .values(
        status="completed",
        result=bindparam("b_result"),
        done_seq=bindparam("b_seq"),
        feed=bindparam("b_feed"),
        finished_at=bindparam("b_at"),
        error=None,
    )
)
_DROP_PAYLOADS = delete(payloads).where(payloads.c.id.in_(_IDS))


class _Rejected(Exception):
    """A command of the entry failed while applying it without savepoints."""


class ApplyError:
    """The result of a command that was rejected when applied (it changed nothing)."""

    def __init__(self, message: str):
        self.message = message

    def __repr__(self) -> str:
        return f"ApplyError({self.message!r})"


class KeyConflict:
    """An idempotency key reused for a different request; `job_id` is the key's first job."""

    def __init__(self, job_id: str):
        self.job_id = job_id

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KeyConflict) and other.job_id == self.job_id

    def __repr__(self) -> str:
        return f"KeyConflict({self.job_id!r})"


class RequeueResult(TypedDict):
    requeued: list[str]  # back in the queue
    failed: list[str]  # out of attempts


# What applying a command returns. Enqueue: per job its id (the earlier job's id for a known
# idempotency key) or a KeyConflict; Lease: (job id, attempt) of each job leased; Requeue: the
# jobs requeued and failed; Complete: the ids it completed; Workers: how many it recorded.
Result = list[str | KeyConflict] | list[tuple[str, int]] | RequeueResult | list[str] | int


@dataclass(frozen=True)
class JobEvent:
    """A job state change made by an applied entry (for metrics)."""

    kind: str  # enqueued, leased, requeued, completed or failed
    job_id: str
    seconds: float | None = None  # leased: time since enqueue; completed: time since lease


def command_width(cmd: c.Command) -> int:
    """How many seq positions a command uses inside its entry."""
    if isinstance(cmd, c.Enqueue):
        return len(cmd.jobs)
    if isinstance(cmd, c.Complete):
        return len(cmd.results)
    if isinstance(cmd, c.Requeue):
        return len(cmd.leases)
    return 0


class StateMachine:
    def __init__(
        self,
        store: Store,
        # Called once per applied entry with its commands and their results, and with None
        # once a snapshot replaced the store.
        on_applied: Callable[[list[tuple[c.Command, Result]] | None], None] | None = None,
        on_events: Callable[[list[JobEvent]], None] | None = None,
    ):
        self.store = store
        self.on_applied = on_applied
        self.on_events = on_events
        self._term = 0
        self._events: list[JobEvent] = []
        self._deltas: dict[str, int] = {}  # counter changes of the entry being applied
        # The counters as of the last applied entry (last_applied among them): read by the
        # apply itself instead of querying them, and by readers that must not wait on the
        # database (the queue-capacity check of every enqueue). Replaced whole, never mutated.
        self.counts: dict[str, int] = store.counts()

    def reload(self) -> None:
        """Re-read what is kept in memory after the store was replaced (snapshot installed)."""
        self.counts = self.store.counts()

    def apply(
        self, index: int, batch: list[c.Wire], term: int = 0
    ) -> Sequence[Result | ApplyError] | None:
        """Apply the log entry at Raft `index` of `term`: a batch of encoded commands (group
        commit). The index and term of the last entry applied are stored with its changes, so
        a restarted node can check that its Raft log still holds that entry.

        Returns one result per command (an `ApplyError` for a command that could not be
        applied), or None when the entry was applied before (journal replay)."""
        if self.counts["last_applied"] >= index:
            return None
        self._term = term
        isolate = False
        for attempt in range(TRANSIENT_RETRIES):
            self._events, self._deltas = [], {}
            try:
                with self.store.engine.begin() as conn:
                    results, applied = self._apply_batch(conn, index, batch, isolate)
                    self._write_counters(conn, index)
                self._count_applied(index)
                break
            except _Rejected:
                # Rolled back; again, each command in a savepoint of its own, so the one that
                # fails changes nothing and the others still apply.
                isolate = True
            except OperationalError as e:
                # A locked or busy database passes; retrying beats diverging from the peers.
                log.warning("apply of entry %d failed (%s), retrying", index, e.orig)
                time.sleep(0.05 * (attempt + 1))
            except Exception:
                log.exception("cannot apply Raft entry %d", index)
                self._skip(index)
                return None
        else:
            log.error("cannot apply Raft entry %d: database stays busy", index)
            self._skip(index)
            return None
        if self.on_events is not None and self._events:
            try:
                self.on_events(self._events)
            except Exception:
                log.exception("on_events hook failed for entry %d", index)
        if self.on_applied is not None and applied:
            try:
                self.on_applied(applied)
            except Exception:
                log.exception("on_applied hook failed for entry %d", index)
        return results

    def _apply_batch(
        self, conn: Connection, index: int, batch: list[c.Wire], isolate: bool
    ) -> tuple[Sequence[Result | ApplyError], list[tuple[c.Command, Result]]]:
        """Apply the commands of one entry. Without `isolate`, all in the entry's transaction
        (the common case, no savepoints), raising `_Rejected` at the first command that
        fails; with it, each command in a savepoint of its own."""
        cmds: list[c.Command | Exception] = []
        for wire in batch:
            try:
                cmds.append(c.decode(wire))
            except Exception as e:
                if not isolate:
                    raise _Rejected() from e
                cmds.append(e)
        if not isolate:
            # None of them is an Exception: the first that failed to decode raised above.
            return self._apply_all(conn, index, cast("list[c.Command]", cmds))
        results: list[Result | ApplyError] = []
        applied: list[tuple[c.Command, Result]] = []
        base = 0  # positions in the entry, so seq numbers never collide
        for cmd in cmds:
            events_before, deltas_before = len(self._events), dict(self._deltas)
            try:
                if isinstance(cmd, Exception):
                    raise cmd
                with conn.begin_nested():
                    result = self._dispatch(conn, index, base, cmd)
                base += command_width(cmd)
                results.append(result)
                applied.append((cmd, result))
            except OperationalError:
                raise
            except Exception as e:
                # Rolled back with the savepoint.
                del self._events[events_before:]
                self._deltas = deltas_before
                # Deterministic: every replica rejects the same command the same way.
                log.error("rejected a command in Raft entry %d: %s: %s", index, type(e).__name__, e)
                self._bump("apply_failures", 1)
                results.append(ApplyError(f"{type(e).__name__}: {e}"))
        if base > MAX_BATCH:
            raise ValueError(f"entry {index} holds {base} items, more than {MAX_BATCH}")
        return results, applied

    def _skip(self, index: int) -> None:
        """Skip an entry that cannot be applied at all, the same way on every replica."""
        self._events, self._deltas = [], {"apply_failures": 1}
        try:
            with self.store.engine.begin() as conn:
                self._write_counters(conn, index)
            self._count_applied(index)
        except Exception:
            log.exception("cannot record the skipped entry %d", index)

    def _bump(self, name: str, delta: int) -> None:
        self._deltas[name] = self._deltas.get(name, 0) + delta

    def _write_counters(self, conn: Connection, index: int) -> None:
        """The entry's counter changes and its index, in one statement."""
        self.store.add_to_counters(
            conn,
            {
                **self._deltas,
                "last_applied": index - self.counts["last_applied"],
                "last_applied_term": self._term - self.counts["last_applied_term"],
            },
        )

    def _count_applied(self, index: int) -> None:
        """After the commit: the in-memory counters follow the database."""
        counts = dict(self.counts)
        for name, d in self._deltas.items():
            counts[name] += d
        counts["last_applied"] = index
        counts["last_applied_term"] = self._term
        self.counts = counts

    def _dispatch(self, conn: Connection, index: int, base: int, cmd: c.Command) -> Result:
        seq = (index << BATCH_SHIFT) + base
        if isinstance(cmd, c.Enqueue):
            return self._enqueue_run(conn, index, base, [cmd])[0]
        if isinstance(cmd, c.Lease):
            return self._lease(conn, cmd)
        if isinstance(cmd, c.Requeue):
            return self._requeue(conn, seq, cmd)
        if isinstance(cmd, c.Complete):
            return self._complete(conn, seq, cmd)
        if isinstance(cmd, c.Workers):
            return self._workers(conn, cmd)
        raise TypeError(f"unknown command {cmd!r}")

    def _apply_all(
        self, conn: Connection, index: int, cmds: list[c.Command]
    ) -> tuple[list[Result], list[tuple[c.Command, Result]]]:
        results: list[Result] = []
        base = i = 0
        try:
            while i < len(cmds):
                end = i + 1
                while (
                    isinstance(cmds[i], c.Enqueue)
                    and end < len(cmds)
                    and isinstance(cmds[end], c.Enqueue)
                ):
                    end += 1
                if isinstance(cmds[i], c.Enqueue):
                    # All Enqueue: the loop above checked each.
                    run = cast("list[c.Enqueue]", cmds[i:end])
                    results += self._enqueue_run(conn, index, base, run)
                else:
                    results.append(self._dispatch(conn, index, base, cmds[i]))
                base += sum(command_width(cmd) for cmd in cmds[i:end])
                i = end
        except OperationalError:
            raise
        except Exception as e:
            raise _Rejected() from e
        if base > MAX_BATCH:
            raise _Rejected()
        return results, list(zip(cmds, results, strict=True))

    def _enqueue_run(
        self, conn: Connection, index: int, base: int, run: list[c.Enqueue]
    ) -> list[list[str | KeyConflict]]:
        """Apply consecutive Enqueue commands: per command, per job, its id (the earlier job's
        id for a known idempotency key), or a `KeyConflict` when the key was first used with
        another payload or iteration count.

        A key counts as known while it is younger than the command's window (its newest job's
        time minus `key_ttl`); expired keys are deleted when keyed jobs come in."""
        seq0 = index << BATCH_SHIFT
        new_jobs = [j for cmd in run for j in cmd.jobs]
        keys = {j.key for j in new_jobs if j.key is not None}
        known: dict[str, tuple[str, str, int, float]] = {}  # key -> job id, digest, ...
        if keys:
            rows = conn.execute(select(idempotency).where(idempotency.c.key.in_(keys)))
            known = {r.key: (r.job_id, r.digest, r.iterations, r.created_at) for r in rows}
        existing = set(conn.execute(_EXISTING, {"ids": [j.id for j in new_jobs]}).scalars())
        job_rows: list[dict[str, Any]] = []
        key_rows: dict[str, dict[str, Any]] = {}
        out: list[list[str | KeyConflict]] = []
        horizon = float("-inf")
        for cmd in run:
            if cmd.jobs:
                horizon = max(float(j.enqueued_at) for j in cmd.jobs) - float(cmd.key_ttl)
            results: list[str | KeyConflict] = []
            for pos, j in enumerate(cmd.jobs):
                if j.key is not None:
                    k = known.get(j.key)
                    if k is not None and k[3] >= horizon:
                        same = (k[1], k[2]) == (j.digest, int(j.iterations))
                        results.append(k[0] if same else KeyConflict(k[0]))
                        continue
                    known[j.key] = (j.id, j.digest, int(j.iterations), float(j.enqueued_at))
                    key_rows[j.key] = {
                        "key": j.key,
                        "job_id": j.id,
                        "iterations": int(j.iterations),
                        "digest": j.digest,
                        "created_at": float(j.enqueued_at),
                    }
                results.append(j.id)
                if j.id in existing:
                    continue
                existing.add(j.id)
                job_rows.append(
                    {
                        "id": j.id,
                        "seq": seq0 + base + pos,
                        "iterations": int(j.iterations),
                        "size": int(j.size),
                        "digest": j.digest,
                        "status": "queued",
                        "attempts": 0,
                        "enqueued_at": float(j.enqueued_at),
                    }
                )
            base += command_width(cmd)
            out.append(results)
        if key_rows:
            conn.execute(insert(idempotency).prefix_with("OR REPLACE"), list(key_rows.values()))
            conn.execute(delete(idempotency).where(idempotency.c.created_at < horizon))
        if job_rows:
            conn.execute(_INSERT_JOB, job_rows)
            self._events += [JobEvent("enqueued", r["id"]) for r in job_rows]
        self._bump("queued", len(job_rows))
        self._bump("backlog_iterations", sum(r["iterations"] for r in job_rows))
        return out

    def _lease(self, conn: Connection, cmd: c.Lease) -> list[tuple[str, int]]:
        rows = conn.execute(_LEASABLE, {"ids": list(cmd.job_ids)}).all()
        leased = [(job_id, attempts + 1) for job_id, attempts, _ in rows]
        if leased:
            conn.execute(
                _LEASE,
                [
                    {"b_id": job_id, "b_attempts": attempt, "b_worker": cmd.worker, "b_at": cmd.at}
                    for job_id, attempt in leased
                ],
            )
        self._events += [
            JobEvent("leased", job_id, max(0.0, cmd.at - enqueued_at))
            for job_id, _, enqueued_at in rows
        ]
        self._bump("queued", -len(leased))
        self._bump("running", len(leased))
        return leased

    def _requeue(self, conn: Connection, seq: int, cmd: c.Requeue) -> RequeueResult:
        out: RequeueResult = {"requeued": [], "failed": []}
        for pos, (job_id, attempt) in enumerate(cmd.leases):
            row = conn.execute(
                select(jobs.c.status, jobs.c.attempts, jobs.c.iterations).where(jobs.c.id == job_id)
            ).first()
            if row is None or row.status != "running" or row.attempts != attempt:
                continue
            if row.attempts >= cmd.max_attempts:
                self._bump("backlog_iterations", -row.iterations)
                conn.execute(
                    update(jobs)
                    .where(jobs.c.id == job_id)
                    .values(
                        status="failed",
                        done_seq=seq + pos,
                        feed=self._next_feed(),
                        finished_at=cmd.at,
                        error=f"{cmd.reason}; gave up after {row.attempts} attempts",
                    )
                )
                self._bump("failed", 1)
                self._bump("finished", 1)
                out["failed"].append(job_id)
                self._events.append(JobEvent("failed", job_id))
            else:
                conn.execute(
                    update(jobs)
                    .where(jobs.c.id == job_id)
                    .values(status="queued", worker=None, leased_at=None)
                )
                self._bump("queued", 1)
                out["requeued"].append(job_id)
                self._events.append(JobEvent("requeued", job_id))
            self._bump("running", -1)
        if out["failed"]:
            conn.execute(_DROP_PAYLOADS, {"ids": out["failed"]})
        self._trim(conn, cmd.retain)
        return out

    def _complete(self, conn: Connection, seq: int, cmd: c.Complete) -> list[str]:
        rows = {r.id: r for r in conn.execute(_FINISHING, {"ids": [i for i, _ in cmd.results]})}
        done: list[str] = []
        updates: list[dict[str, Any]] = []
        was = {"queued": 0, "running": 0}
        backlog = 0
        for pos, (job_id, result) in enumerate(cmd.results):
            row = rows.pop(job_id, None)  # popped: a second result for it in here is late
            if row is None or row.status not in was:
                continue  # unknown, or finished already: the first result stands
            was[row.status] += 1
            updates.append(
                {
                    "b_id": job_id,
                    "b_result": result,
                    "b_seq": seq + pos,
                    "b_feed": self._next_feed(),
                    "b_at": cmd.at,
                }
            )
            done.append(job_id)
            backlog += row.iterations
            self._events.append(
                JobEvent(
                    "completed",
                    job_id,
                    None if row.leased_at is None else max(0.0, cmd.at - row.leased_at),
                )
            )
        if done:
            conn.execute(_COMPLETE, updates)
            conn.execute(_DROP_PAYLOADS, {"ids": done})
        for status, n in was.items():
            self._bump(status, -n)
        self._bump("backlog_iterations", -backlog)
        self._bump("completed", len(done))
        self._bump("finished", len(done))
        self._trim(conn, cmd.retain)
        return done

    def _next_feed(self) -> int:
        """The next position in the completion feed: one more than the last given."""
        self._bump("feed", 1)
        return self.counts["feed"] + self._deltas["feed"]

    def _trim(self, conn: Connection, retain: int) -> None:
        """Drop the oldest finished jobs beyond `retain`."""
        excess = self.counts["finished"] + self._deltas.get("finished", 0) - retain
        if excess <= 0:
            return
        rows = conn.execute(
            select(jobs.c.id, jobs.c.status)
            .where(jobs.c.done_seq.isnot(None))
            .order_by(jobs.c.done_seq)
            .limit(excess)
        ).all()
        conn.execute(delete(jobs).where(jobs.c.id.in_([r.id for r in rows])))
        for r in rows:
            self._bump(r.status, -1)
        self._bump("finished", -len(rows))

    def _workers(self, conn: Connection, cmd: c.Workers) -> int:
        conn.execute(delete(workers))
        if cmd.workers:
            conn.execute(
                insert(workers),
                [{"id": w, "info": info, "last_seen": seen} for w, info, seen in cmd.workers],
            )
        return len(cmd.workers)
