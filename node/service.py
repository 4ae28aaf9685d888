"""The queue's operations on one node, as the HTTP layer calls them (node/http/service.py):
enqueue, read, lease, complete; the node's status and health.

Writes go through the proposer as Raft commands; reads come from this node's replica of the
store; leader-only operations raise NotLeader on a follower.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from node.config import NodeConfig
from node.errors import Gone, JobNotFound, KeyReused, NoQuorum, NotLeader, QueueFull
from node.observability.history import History
from node.observability.metrics import CONTENT_TYPE, Metrics
from node.replication import commands as c
from node.replication.payloads import Payloads
from node.replication.proposer import Proposer
from node.replication.raft import RaftNode
from node.replication.state_machine import KeyConflict, StateMachine
from node.replication.waits import Waits, until
from node.scaling.loop import Scaler
from node.scaling.policy import idle_timeout_told
from node.scheduling.leases import Scheduler
from node.scheduling.roster import Roster
from node.storage.store import JobDigest, RunDb, Store
from protocol.ids import digest_of, new_job_id

log = logging.getLogger(__name__)

# A row of the store, as its queries return it.
Row = dict[str, Any]

# Healthy while this node's applied index is at most this far behind the leader's commit index.
HEALTHY_LAG = 1000
FINISHED = ("completed", "failed")
ELECTING = "electing a new leader (the last one was heard from just now)"
# How often a request waiting out such an election looks for its end.
ELECTION_POLL = 0.005


def quorum_problem(
    *,
    leader_known: bool,
    is_leader: bool,
    majority_answers: bool,
    hears_leader: bool,
    leader_just_heard: bool,
) -> str | None:
    """Why a node cannot commit anything right now, or None.

    ELECTING when no leader is known but one was heard from within the minimum election
    timeout: no node stands for election that soon after a heartbeat on its own, so this is
    a hand-over (Raft's TimeoutNow) or a leader that just stepped down, and the next leader
    follows within milliseconds. A node cut off from the leader stands only after at least
    the minimum timeout, so it is never taken for this."""
    if not leader_known:
        return ELECTING if leader_just_heard else "no leader known"
    if is_leader:
        return None if majority_answers else "leader without a majority of answering followers"
    if not hears_leader:
        return "no heartbeat from the leader within the election timeout"
    return None


class NodeService:
    def __init__(
        self,
        cfg: NodeConfig,
        *,
        store: Store,
        run_db: RunDb,
        machine: StateMachine,
        raft: RaftNode,
        proposer: Proposer,
        payloads: Payloads,
        waits: Waits,
        scheduler: Scheduler,
        roster: Roster,
        scaler: Scaler | None,
        metrics: Metrics,
        history: History,
    ):
        self.cfg = cfg
        self._store = store
        self._db = run_db
        self._machine = machine
        self._raft = raft
        self._proposer = proposer
        self._payloads = payloads
        self._waits = waits
        self._job_reads: dict[tuple[str, int], asyncio.Future[Row | None]] = {}
        self._scheduler = scheduler
        self._roster = roster
        self._scaler = scaler
        self._metrics = metrics
        self._history = history

    # --- public ----------------------------------------------------------------------

    async def enqueue(self, data: bytes, iterations: int, key: str | None) -> dict[str, Any]:
        last = self._machine.counts["feed"]  # before the job can exist
        job_id, created = await self._enqueue(data, iterations, key)
        return {"id": job_id, "after": await self._feed_after([job_id], created, last)}

    async def enqueue_batch(
        self, items: list[tuple[bytes, int]], key: str | None
    ) -> dict[str, Any]:
        last = self._machine.counts["feed"]
        ids, created = await self._enqueue_batch(items, key)
        return {"ids": ids, "after": await self._feed_after(ids, created, last)}

    async def _feed_after(self, ids: list[str], created: set[str], last: int) -> int | None:
        """A position in the completion feed that the completions of these jobs come after,
        so that a client can follow the feed from it instead of asking for each job: `last`
        (the feed's end before the jobs were created) for new jobs, and for jobs an
        Idempotency-Key found, one before the position of any that already finished. None
        when one of those finished without a position (before the feed existed) or is gone."""
        found = [job_id for job_id in ids if job_id not in created]
        if not found:
            return last
        states = await self._db(self._store.feed_positions, found)
        after = last
        for job_id in found:
            status, position = states.get(job_id, (None, None))
            if status is None or (status in FINISHED and position is None):
                return None
            if position is not None:
                after = min(after, position - 1)
        return after

    async def _enqueue(self, data: bytes, iterations: int, key: str | None) -> tuple[str, set[str]]:
        """The job's id, and the ids of the jobs this call created."""
        started = time.perf_counter()
        digest = digest_of(data)
        if key is not None:
            known = await self._db(self._store.idempotency_key, key)
            if known is not None:
                return _same_request(known, digest, iterations), set()
        if self._machine.counts["queued"] >= self.cfg.max_queued:
            raise QueueFull(
                f"queue: at its capacity of {self.cfg.max_queued} queued jobs; retry later"
            )
        await self._check_quorum()
        job_id = new_job_id()
        await self._payloads.replicate(job_id, data, digest)
        (result,) = await self._proposer.propose(
            c.Enqueue(
                (c.NewJob(job_id, iterations, len(data), digest, time.time(), key),),
                self.cfg.idempotency_window,
            )
        )
        if isinstance(result, KeyConflict):
            raise _key_reused()
        if result == job_id:
            log.info(
                "job %s enqueued (%d bytes, %d iterations)",
                job_id,
                len(data),
                iterations,
                extra={"jobs": [job_id]},
            )
        self._metrics.enqueue_seconds.observe(time.perf_counter() - started)
        return result, {job_id} if result == job_id else set()

    async def _enqueue_batch(
        self, items: list[tuple[bytes, int]], key: str | None
    ) -> tuple[list[str], set[str]]:
        """Enqueue every (payload, iterations) as one Raft command, all the jobs or none: their
        ids, and those of the jobs this call created."""
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        # Hashing many megabytes would stall the event loop; hashlib lets go of the GIL.
        digests = await loop.run_in_executor(None, lambda: [digest_of(d) for d, _ in items])
        n = len(items)
        # A key per part, made from the batch's key so that no single enqueue's key (visible
        # ASCII, no space) can be the same: a retry finds every part's job.
        keys = [None if key is None else f"{key} {i}/{n}" for i in range(n)]
        if key is not None:
            known = await self._db(self._store.batch_keys, key)
            if known:
                if set(known) != set(keys):
                    raise _key_reused()
                return [
                    _same_request(known[str(k)], digest, iterations)
                    for k, digest, (_, iterations) in zip(keys, digests, items, strict=True)
                ], set()
        if self._machine.counts["queued"] + n > self.cfg.max_queued:
            raise QueueFull(
                f"queue: {n} more jobs would pass its capacity of {self.cfg.max_queued} queued "
                "jobs; retry later"
            )
        await self._check_quorum()
        ids = [new_job_id() for _ in items]
        copies = await asyncio.gather(
            *(
                self._payloads.replicate(job_id, data, digest)
                for job_id, (data, _), digest in zip(ids, items, digests, strict=True)
            ),
            return_exceptions=True,
        )
        failed = next((e for e in copies if isinstance(e, BaseException)), None)
        if failed is not None:
            raise failed
        now = time.time()
        result = await self._proposer.propose(
            c.Enqueue(
                tuple(
                    c.NewJob(job_id, iterations, len(data), digest, now, k)
                    for job_id, (data, iterations), digest, k in zip(
                        ids, items, digests, keys, strict=True
                    )
                ),
                self.cfg.idempotency_window,
            )
        )
        if any(isinstance(r, KeyConflict) for r in result):
            raise _key_reused()
        log.info("%d jobs enqueued in a batch", n, extra={"jobs": ids})
        self._metrics.enqueue_seconds.observe(time.perf_counter() - started)
        got = [str(r) for r in result]
        return got, {r for r, new in zip(got, ids, strict=True) if r == new}

    async def job(self, job_id: str, wait: float = 0.0) -> dict[str, Any] | None:
        loop = asyncio.get_running_loop()
        end = loop.time() + wait
        while True:
            with self._waits.job(job_id) as woken:
                job = await self._read_job(job_id)
                remaining = end - loop.time()
                finished = job is not None and job["status"] in FINISHED
                if finished or remaining <= 0 or self._waits.closed:
                    return None if job is None else _job_view(job)
                await until(woken, remaining)

    async def _read_job(self, job_id: str) -> Row | None:
        """The job as the store holds it. Requests that ask for the same job while no finish
        was applied share one read: thousands of waiters of a few jobs, woken together, cost
        a few reads (a read begun before the last wake-up is never shared, as it may predate
        that finish)."""
        key = (job_id, self._waits.generation)
        read = self._job_reads.get(key)
        if read is None:
            read = asyncio.ensure_future(self._db(self._store.job, job_id))
            self._job_reads[key] = read
            read.add_done_callback(lambda _: self._job_reads.pop(key, None))
        return await asyncio.shield(read)

    async def completions(self, after: int, limit: int, wait: float = 0.0) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        end = loop.time() + wait
        while True:
            with self._waits.feed() as woken:
                finished, first, last = await self._db(self._store.feed, after, limit)
                if after < first - 1:
                    raise Gone(
                        f"after: positions {after + 1} to {first - 1} are no longer kept (a "
                        f"node keeps the newest {self.cfg.max_finished} finished jobs, "
                        f"--max-finished); the oldest kept is {first}, so resume from "
                        f"after={first - 1}"
                    )
                if finished or end - loop.time() <= 0 or self._waits.closed:
                    return {
                        "completions": finished,
                        "next": finished[-1]["position"] if finished else after,
                        "last": last,
                    }
                await until(woken, end - loop.time())

    async def completed(self, top: int) -> list[dict[str, Any]]:
        return await self._db(self._store.completed, top)

    async def status(self) -> dict[str, Any]:
        counts = self._machine.counts
        workers = await self._db(self._store.workers)
        raft = self._raft
        return {
            "node": self.cfg.node_id,
            "pid": os.getpid(),
            "url": self.cfg.url,
            "role": raft.role,
            "leader": raft.leader,
            "leader_url": self.leader_url(),
            "raft": {
                "term": raft.term,
                "commit_index": raft.commit_index,
                "last_applied": raft.last_applied,
                "leader_commit_index": raft.leader_commit_index,
                "last_snapshot": _snapshot_view(raft.last_snapshot),
            },
            "queue": {s: counts[s] for s in ("queued", "running", "completed", "failed")},
            "apply_failures": counts["apply_failures"],
            "workers": workers,
            "worker_states": await self.worker_states(workers),
            "scaling": self._scaling_status(),
        }

    def health(self) -> tuple[bool, str]:
        problem = self._quorum_problem()
        if problem == ELECTING:
            return True, problem
        if problem is not None:
            return False, problem
        raft = self._raft
        target = raft.leader_commit_index if not raft.is_leader() else None
        target = target if target is not None else raft.commit_index
        lag = target - raft.last_applied
        if lag > HEALTHY_LAG:
            return False, f"catching up: {lag} log entries behind"
        return True, "ok"

    async def metrics(self) -> tuple[bytes, str]:
        self._metrics.worker_states = await self.worker_states()
        return self._metrics.render(), CONTENT_TYPE

    # --- workers ---------------------------------------------------------------------

    def is_leader(self) -> bool:
        return self._raft.is_leader()

    def leader_url(self) -> str | None:
        leader = self._raft.leader
        return self.cfg.members.get(leader) if leader else None

    async def lease(
        self, worker: str, info: dict[str, str], max_jobs: int, wait: float, linger: float
    ) -> dict[str, Any]:
        self._check_leader()
        self._roster.touch(worker, info, time.time())
        jobs = await self._scheduler.lease(worker, max_jobs, wait, linger)
        return {
            "jobs": jobs,
            "lease_timeout": self.cfg.lease_timeout,
            "idle_timeout": self.idle_timeout_told(),
        }

    async def heartbeat(self, worker: str, info: dict[str, str], jobs: list[str]) -> dict[str, Any]:
        self._check_leader()
        self._roster.touch(worker, info, time.time())
        held = await self._scheduler.heartbeat(worker, jobs)
        return {"jobs": held, "lease_timeout": self.cfg.lease_timeout}

    async def release(self, worker: str, jobs: list[str], reason: str) -> list[str]:
        self._check_leader()
        return await self._scheduler.release(worker, jobs, reason)

    async def complete(self, worker: str, results: list[tuple[str, str]]) -> list[str]:
        accepted = await self._proposer.propose(
            c.Complete(tuple(results), time.time(), self.cfg.max_finished)
        )
        if accepted:
            log.info(
                "jobs completed by %s (%d): %s",
                worker,
                len(accepted),
                " ".join(accepted),
                extra={"jobs": accepted, "worker": worker},
            )
        return accepted

    def idle_timeout_told(self) -> float | None:
        """What workers are told: the policy's idle timeout, none while at the minimum."""
        default = self.cfg.worker_idle_timeout
        idle = self._scaler.current_idle_timeout(default) if self._scaler is not None else default
        return idle_timeout_told(len(self._roster.live(time.time())), self.cfg.min_workers, idle)

    # --- payloads --------------------------------------------------------------------

    async def store_payloads(self, items: list[tuple[str, bytes, str]]) -> None:
        await self._payloads.store_batch(items)

    async def payload(self, job_id: str, digest: str | None, *, local: bool) -> bytes:
        if local:
            data = await self._payloads.fetch(job_id, digest, from_peers=False)
            if data is None:
                raise JobNotFound(f"id: no payload of {job_id} on this node")
            return data
        here = await self._db(self._store.jobs_and_payloads, [job_id])
        return await self._payload_for(job_id, digest, *here[job_id])

    async def payloads(self, jobs: list[tuple[str, str]]) -> list[tuple[str, bytes, str]]:
        here = await self._db(self._store.jobs_and_payloads, [job_id for job_id, _ in jobs])

        async def one(job_id: str, digest: str) -> tuple[str, bytes, str] | None:
            try:
                data = await self._payload_for(job_id, digest, *here[job_id])
            except JobNotFound:
                return None
            return job_id, data, digest

        found = await asyncio.gather(*(one(job_id, digest) for job_id, digest in jobs))
        return [item for item in found if item is not None]

    async def _payload_for(
        self, job_id: str, digest: str | None, known: JobDigest | None, held: bytes | None
    ) -> bytes:
        """A queued or running job's payload: `held` here, or else fetched from a peer
        (`known` and `held` as Store.jobs_and_payloads gives them). Workers pass the digest from
        their lease, so a node that has not applied the enqueue yet can still serve it."""
        if known is not None and known["status"] not in ("queued", "running"):
            raise JobNotFound(f"id: job {job_id} is {known['status']}; its payload is gone")
        if known is not None:
            digest = known["digest"]
        elif digest is None:
            raise JobNotFound(f"id: no job {job_id!r} on this node (pass its digest)")
        data = held if held is not None else await self._payloads.fetch(job_id, digest)
        if data is None:
            raise JobNotFound(f"id: no node holds the payload of {job_id} right now")
        return data

    def compact(self) -> None:
        self._raft.compact()

    # --- dashboard -------------------------------------------------------------------

    async def member_status(self) -> dict[str, Any]:
        status = await self.status()
        status["healthy"], status["health"] = self.health()
        return status

    def history(self) -> list[dict[str, Any]]:
        return list(self._history.samples)

    # --- status ----------------------------------------------------------------------

    async def worker_states(self, workers: list[Row] | None = None) -> dict[str, int]:
        """Workers by state: the leader's live view; elsewhere the replicated list (`workers`,
        when the caller read it already)."""
        if self._raft.is_leader():
            live = set(self._roster.live(time.time()))
            busy = self._scheduler.busy_workers()
            booting = self._scaler.booting if self._scaler is not None else 0
        else:
            if workers is None:
                workers = await self._db(self._store.workers)
            live = {w["id"] for w in workers}
            busy = await self._db(self._store.busy_workers)
            booting = 0
        return {"busy": len(busy), "idle": len(live - busy), "booting": booting}

    def _scaling_status(self) -> dict[str, Any] | None:
        scaler = self._scaler
        if scaler is None:
            return None
        d = scaler.decision
        return {
            "backend": scaler.backend.name,
            "launches": scaler.launches,
            "idle_timeout": self.idle_timeout_told(),
            "last_decision": None if d is None else {"start": d.start, "reason": d.reason},
            "boot_failures": {
                "in_a_row": scaler.boot_failures,
                "next_launch_in": round(max(0.0, scaler.retry_at - time.time()), 1),
                "reason": scaler.backoff_reason(time.time()) if scaler.boot_failures else None,
            },
            "decisions": list(scaler.recent),
        }

    def _quorum_problem(self) -> str | None:
        """Why this node cannot commit anything right now, if it knows; None otherwise
        (ELECTING: in an election that will most likely end within milliseconds)."""
        raft = self._raft
        return quorum_problem(
            leader_known=raft.leader is not None,
            is_leader=raft.is_leader(),
            majority_answers=raft.leader_has_majority(2 * self.cfg.raft_max_timeout),
            hears_leader=raft.hears_leader(),
            leader_just_heard=raft.heard_leader_within(self.cfg.raft_min_timeout),
        )

    async def _check_quorum(self) -> None:
        """Fail fast (503) instead of letting a request wait out its timeout; but wait out an
        election that began while the leader was still heard (a leadership hand-over), which
        ends within milliseconds or else within the election timeout's minimum."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.raft_min_timeout
        while (problem := self._quorum_problem()) == ELECTING and loop.time() < deadline:
            await asyncio.sleep(ELECTION_POLL)
        if problem is not None:
            raise NoQuorum(f"this node cannot reach a majority ({problem}); retry on another node")

    def _check_leader(self) -> None:
        if not self._raft.is_leader():
            raise NotLeader("this node is not the leader; retry")


def _key_reused() -> KeyReused:
    return KeyReused(
        "Idempotency-Key: already used for a different payload or iterations; "
        "use a new key for a new job"
    )


def _same_request(known: Row, digest: str, iterations: int) -> str:
    """The job id recorded for a key, if this request matches the one that created it."""
    if (known["digest"], known["iterations"]) != (digest, iterations):
        raise _key_reused()
    job_id: str = known["job_id"]
    return job_id


def _snapshot_view(snapshot: dict[str, float] | None) -> dict[str, Any] | None:
    """The last snapshot this node took: its Raft index, when, how long Raft's thread was
    held for it and how long until it was in place (None while it is being written)."""
    if snapshot is None:
        return None
    return {
        "index": int(snapshot["index"]),
        "at": snapshot["at"],
        "raft_paused_ms": round(snapshot["pin_ms"] + snapshot["install_ms"], 2),
        "pin_ms": round(snapshot["pin_ms"], 2),
        "install_ms": round(snapshot["install_ms"], 2),
        "seconds": round(snapshot["seconds"], 3) if snapshot["seconds"] >= 0 else None,
    }


def _job_view(job: Row) -> dict[str, Any]:
    view = {k: job[k] for k in ("id", "status", "iterations", "size", "enqueued_at", "attempts")}
    if job["status"] == "running":
        view["worker"] = job["worker"]
        view["leased_at"] = job["leased_at"]
    if job["status"] == "completed":
        view["result"] = job["result"]
        view["completed_at"] = job["finished_at"]
    if job["status"] == "failed":
        view["error"] = job["error"]
        view["failed_at"] = job["finished_at"]
    return view
