"""Leases: the leader hands queued jobs to workers and takes back the ones whose worker went quiet.

Who holds which job is replicated (Lease and Requeue commands); lease deadlines live only in the
leader's memory. A new leader gives every running job a fresh deadline, so a worker that is still
computing keeps its job as long as its heartbeats reach the new leader.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Callable, Iterable, TypedDict

from node.config import NodeConfig
from node.errors import NotLeader
from node.replication import commands as c
from node.replication.proposer import Proposer
from node.replication.state_machine import RequeueResult
from node.storage.store import RunDb, Store

log = logging.getLogger(__name__)

MAX_RUNNING_SCAN = 100_000


class LeasedJob(TypedDict):
    """A job as a lease hands it to a worker."""

    id: str
    iterations: int
    size: int
    digest: str  # of the payload, which the worker fetches
    attempt: int


@dataclass(frozen=True)
class LeaseDeadline:
    deadline: float
    attempt: int
    worker: str


def expired_leases(deadlines: dict[str, LeaseDeadline], now: float) -> list[tuple[str, int]]:
    """(job id, attempt) of every lease whose deadline has passed, oldest deadline first."""
    due = sorted(
        (d.deadline, job_id, d.attempt) for job_id, d in deadlines.items() if d.deadline <= now
    )
    return [(job_id, attempt) for _, job_id, attempt in due]


class Scheduler:
    def __init__(
        self,
        cfg: NodeConfig,
        store: Store,
        proposer: Proposer,
        is_leader: Callable[[], bool],
        run_db: RunDb,
        queued: Callable[[], int],
    ):
        self._cfg = cfg
        self._queued = queued  # jobs queued as of the last applied entry
        self._store = store
        self._proposer = proposer
        self._is_leader = is_leader
        self._db = run_db
        self.deadlines: dict[str, LeaseDeadline] = {}
        self._reserved: set[str] = set()
        self._work = asyncio.Event()
        self._closing = False

    def busy_workers(self) -> set[str]:
        """Workers holding a lease this leader knows of."""
        return {lease.worker for lease in self.deadlines.values()}

    def work_arrived(self) -> None:
        """Wake long-polling lease requests (called on the event loop after an apply)."""
        self._work.set()

    def step_down(self) -> None:
        self.deadlines.clear()

    def close(self) -> None:
        """The node is stopping: answer every waiting long-poll now (with no jobs)."""
        self._closing = True
        self._work.set()

    async def lease(
        self, worker: str, max_jobs: int, wait: float, linger: float = 0.0
    ) -> list[LeasedJob]:
        """Lease up to `max_jobs` queued jobs, waiting up to `wait` seconds for one. With
        `linger`, fewer than `max_jobs` queued get up to `linger` seconds to become as many:
        a stream of short jobs then goes out in fuller leases, and each lease, payload read
        and report serves more jobs. Either way it stops waiting after max(wait, linger)."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + wait
        latest = loop.time() + max(wait, linger)
        fill_by = None
        while True:
            if not self._is_leader():
                raise NotLeader("this node stopped being the leader; retry")
            if self._closing:
                return []
            self._work.clear()
            if linger > 0 and 0 < self._queued() < max_jobs:
                now = loop.time()
                fill_by = fill_by or min(now + linger, latest)
                if now < fill_by:
                    try:
                        await asyncio.wait_for(self._work.wait(), fill_by - now)
                    except TimeoutError:
                        pass
                    continue
            jobs = await self._lease_now(worker, max_jobs)
            remaining = give_up - loop.time()
            if jobs or remaining <= 0:
                return jobs or []
            if jobs is None:
                # Leases running at the same time took the jobs found: look again shortly.
                await asyncio.sleep(min(0.01, remaining))
                continue
            try:
                await asyncio.wait_for(self._work.wait(), remaining)
            except TimeoutError:
                return []

    async def _lease_now(self, worker: str, max_jobs: int) -> list[LeasedJob] | None:
        """Lease up to max_jobs of the oldest queued jobs: [] when none is queued, None when
        every job found went to leases running at the same time."""
        found = await self._db(
            self._store.jobs_with_status, "queued", max_jobs, frozenset(self._reserved)
        )
        # Leases that ran while the query did may have reserved some of these.
        candidates = [j for j in found if j["id"] not in self._reserved]
        if not candidates:
            return None if found else []
        ids = tuple(j["id"] for j in candidates)
        self._reserved.update(ids)
        try:
            leased = dict(await self._proposer.propose(c.Lease(worker, ids, time.time())))
        finally:
            self._reserved.difference_update(ids)
        if not leased:
            return None
        deadline = time.time() + self._cfg.lease_timeout
        out: list[LeasedJob] = []
        for job in candidates:
            attempt = leased.get(job["id"])
            if attempt is None:
                continue
            self.deadlines[job["id"]] = LeaseDeadline(deadline, attempt, worker)
            out.append(
                {
                    "id": job["id"],
                    "iterations": job["iterations"],
                    "size": job["size"],
                    "digest": job["digest"],
                    "attempt": attempt,
                }
            )
        leased_ids = [job["id"] for job in out]
        log.info(
            "jobs leased to %s (%d): %s",
            worker,
            len(leased_ids),
            " ".join(leased_ids),
            extra={"jobs": leased_ids, "worker": worker},
        )
        return out

    async def heartbeat(self, worker: str, job_ids: Iterable[str]) -> list[str]:
        """Extend the worker's leases; returns the jobs it still holds (drop the others)."""
        if not self._is_leader():
            raise NotLeader("this node stopped being the leader; retry")
        states = await self._db(self._store.job_states, list(job_ids))
        deadline = time.time() + self._cfg.lease_timeout
        held = []
        for job_id, (status, holder, attempts) in states.items():
            if status == "running" and holder == worker:
                self.deadlines[job_id] = LeaseDeadline(deadline, attempts, worker)
                held.append(job_id)
        return held

    async def release(self, worker: str, job_ids: list[str], reason: str) -> list[str]:
        """Return the worker's leases on these jobs to the queue now (each used an attempt)."""
        if not self._is_leader():
            raise NotLeader("this node stopped being the leader; retry")
        states = await self._db(self._store.job_states, job_ids)
        leases = tuple(
            (job_id, attempts)
            for job_id, (status, holder, attempts) in states.items()
            if status == "running" and holder == worker
        )
        if not leases:
            return []
        result = await self._requeue(leases, f"released by {worker}: {reason}")
        return result["requeued"] + result["failed"]

    async def _requeue(self, leases: tuple[tuple[str, int], ...], reason: str) -> RequeueResult:
        result = await self._proposer.propose(
            c.Requeue(leases, reason, self._cfg.max_attempts, time.time(), self._cfg.max_finished)
        )
        if result["requeued"]:
            log.info(
                "jobs back in the queue (%d), %s: %s",
                len(result["requeued"]),
                reason,
                " ".join(result["requeued"]),
                extra={"jobs": result["requeued"]},
            )
        if result["failed"]:
            log.warning(
                "jobs failed (%d), %s; no attempts left: %s",
                len(result["failed"]),
                reason,
                " ".join(result["failed"]),
                extra={"jobs": result["failed"]},
            )
        for job_id in result["requeued"] + result["failed"]:
            self.deadlines.pop(job_id, None)
        if result["requeued"]:
            self.work_arrived()
        return result

    async def expire(self) -> None:
        """One pass of lease expiry; the leader runs it every second."""
        running = await self._db(self._store.jobs_with_status, "running", MAX_RUNNING_SCAN)
        now = time.time()
        live: dict[str, LeaseDeadline] = {}
        for job in running:
            known = self.deadlines.get(job["id"])
            if known is None or known.attempt != job["attempts"]:
                # Leased by an earlier leader, or by a proposal that timed out here: adopt it.
                known = LeaseDeadline(
                    now + self._cfg.lease_timeout, job["attempts"], job["worker"] or ""
                )
            live[job["id"]] = known
        self.deadlines = live
        expired = expired_leases(live, now)
        if not expired:
            return
        by_worker: dict[str, list[str]] = {}
        for job_id, _ in expired:
            by_worker.setdefault(live[job_id].worker, []).append(job_id)
        for worker, ids in by_worker.items():
            log.info(
                "leases expired for %s (%d): %s",
                worker or "an earlier leader's worker",
                len(ids),
                " ".join(ids),
                extra={"jobs": ids, "worker": worker},
            )
        await self._requeue(tuple(expired), "lease expired: the worker stopped sending heartbeats")
