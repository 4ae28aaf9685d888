"""A worker: lease jobs from the managers, compute them, report the results, until idle or
orphaned (no manager answers)."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import socket
import time
from typing import Any

from protocol.failover import NoNodeAnswers
from protocol.wire import MAX_BATCH_BYTES, MAX_LEASE_JOBS, MalformedBatch, decode_batch
from worker.compute import LANES, rehash_batch
from worker.managers import CallFailed, ManagerClient

log = logging.getLogger("worker")

# A JSON object as the managers send it: a lease reply, or one leased job in it.
Json = dict[str, Any]
Batch = tuple[Json | None, list[tuple[Json, bytes]]]

POLL_WAIT = 10.0
# A batch of leased jobs should take about this long: long enough that the lease, payload and
# report calls are small beside the computing, short enough that other workers share the queue.
BATCH_SECONDS = 0.25
# Batches computing for less than this get the next one leased (and its payloads read) while
# they run; longer ones would hold the next jobs away from other workers for too long.
PREFETCH_BELOW = 2.0
MAX_REPORTS = 4
# Results of a batch are reported together unless this long has passed since the last report:
# a batch of short jobs makes one completion (one Raft entry), not one per group of lanes,
# and no result waits much longer than this once computed.
REPORT_EVERY = 0.5
# The next batch, leased while one computes, may wait this long on the leader for a full
# lease when fewer jobs are queued: a stream of short jobs then goes in fuller batches, with
# fewer leases, payload reads and reports per job, for at most this much more waiting.
LINGER = 0.1


def next_lease_size(size: int, leased: int, seconds: float, smallest: int, largest: int) -> int:
    """How many jobs to lease next, after `leased` of `size` asked for took `seconds`."""
    if leased >= size and seconds < BATCH_SECONDS:
        return min(largest, size * 2)
    if seconds > 4 * BATCH_SECONDS:
        return max(smallest, size // 2)
    return size


def smoothed_overhead(previous: float | None, idle: float, jobs: int) -> float:
    """The per-job overhead after one more full batch of `jobs`, of which `idle` seconds
    passed without computing before the next batch started (an exponential average)."""
    sample = max(0.0, idle) / jobs
    return sample if previous is None else 0.8 * previous + 0.2 * sample


class Worker:
    def __init__(self, args: argparse.Namespace, client: ManagerClient):
        self.args = args
        self.client = client
        self.idle_timeout: float | None = args.idle_timeout
        self.lease_timeout = 30.0
        self.held: set[str] = set()  # leased (also prefetched), not yet reported
        self.smallest_lease = min(LANES, args.max_jobs)
        self.lease_size = self.smallest_lease
        self.last_batch = 0.0  # seconds the last batch took to compute
        self.overhead: float | None = None  # seconds per job besides computing, smoothed
        self.reports: set[asyncio.Task[None]] = set()
        self.info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "backend": os.environ.get("WQ_WORKER_BACKEND", "local"),
        }

    async def run(self) -> str:
        """Work until idle or orphaned; returns why it stopped, once every result is reported."""
        heartbeat = asyncio.create_task(self.heartbeat())
        try:
            reason = await self.work()
            if self.reports:
                await asyncio.wait(self.reports)
            return reason
        finally:
            heartbeat.cancel()

    async def work(self) -> str:
        """Lease, compute and report until idle or orphaned. While a short batch computes,
        the next one is leased and its payloads read, and results are reported in the
        background, so the kernel does not wait on the network."""
        idle_since = time.monotonic()
        prefetch: asyncio.Task[Batch] | None = None
        full: tuple[float, int, float] | None = None  # the last batch, if a full lease
        try:
            while True:
                if prefetch is not None:
                    reply, ready = await prefetch
                    prefetch = None
                    if reply is None or not reply["jobs"]:
                        full = None
                        continue  # nothing was waiting: poll as usual
                else:
                    reply, ready = await self.next_batch(POLL_WAIT)
                    if reply is None or not reply["jobs"]:
                        full = None
                    if reply is None:
                        if time.monotonic() - self.client.last_contact > self.args.orphan_timeout:
                            return f"no manager answered for {self.args.orphan_timeout:g}s"
                        await asyncio.sleep(1.0)
                        continue
                    if not reply["jobs"]:
                        idle = time.monotonic() - idle_since
                        if self.idle_timeout is not None and idle >= self.idle_timeout:
                            return f"idle for {idle:.0f}s"
                        continue
                started = time.monotonic()
                if full is not None:
                    self.note_overhead(started, *full)
                if self.last_batch < PREFETCH_BELOW:
                    prefetch = asyncio.create_task(self.next_batch(0, LINGER))
                await self.compute(ready)
                idle_since = time.monotonic()
                self.last_batch = idle_since - started
                # A lease as large as asked for means more work was waiting: the time until
                # the next batch starts is then overhead, not idleness.
                leased = len(reply["jobs"])
                full = (started, leased, self.last_batch) if leased >= reply["asked"] else None
                self.lease_size = next_lease_size(
                    self.lease_size,
                    len(reply["jobs"]),
                    self.last_batch,
                    self.smallest_lease,
                    self.args.max_jobs,
                )
        except asyncio.CancelledError:
            # Stopping (SIGTERM): give every held job back now rather than at lease expiry
            # (one whose result is on its way stays completed: the first result stands).
            if prefetch is not None:
                prefetch.cancel()
            try:
                await asyncio.wait_for(self.release(sorted(self.held), "the worker is stopping"), 3)
            except TimeoutError:
                pass
            raise
        finally:
            if prefetch is not None and not prefetch.done():
                prefetch.cancel()

    def note_overhead(self, now: float, started: float, jobs: int, computing: float) -> None:
        """Measure the time per job not spent computing, from one batch that started at
        `started` (a full lease of `jobs`, computed in `computing` s) to the next at `now`;
        reported with every poll, for the scaling policy's model of a job's cost."""
        self.overhead = smoothed_overhead(self.overhead, now - started - computing, jobs)
        self.info["overhead"] = round(self.overhead, 6)

    async def next_batch(self, wait: float, linger: float = 0.0) -> Batch:
        """Lease jobs (waiting up to `wait` seconds for some, and up to `linger` for a full
        lease once some are queued) and read their payloads. The reply is None when no
        manager answered; jobs whose payload could not be read are released and left out."""
        asked = self.lease_size
        try:
            reply = await self.client.call(
                "POST",
                "/internal/lease",
                json={
                    "worker": self.args.id,
                    "max_jobs": asked,
                    "wait": wait,
                    "linger": linger,
                    "info": self.info,
                },
                timeout=max(wait, linger) + 30,
            )
        except NoNodeAnswers:
            return None, []
        reply["asked"] = asked
        self.idle_timeout = reply.get("idle_timeout")
        self.lease_timeout = reply.get("lease_timeout", self.lease_timeout)
        jobs = reply["jobs"]
        if not jobs:
            return reply, []
        self.held.update(job["id"] for job in jobs)
        payloads = await self.payloads(jobs)
        ready = []
        for job, data in zip(jobs, payloads, strict=True):
            if data is None:
                self.held.discard(job["id"])  # released
            else:
                ready.append((job, data))
        return reply, ready

    async def payloads(self, jobs: list[Json]) -> list[bytes | None]:
        """The jobs' payloads, read many per call and checked against the lease's digests;
        None for a job whose payload could not be had (that job is released)."""
        chunks: list[list[Json]] = [[]]
        size = 0
        for job in jobs:
            if chunks[-1] and size + job["size"] > MAX_BATCH_BYTES:
                chunks.append([])
                size = 0
            chunks[-1].append(job)
            size += job["size"]
        found: dict[str, tuple[bytes, str]] = {}  # id -> (data, sha256 it was checked against)
        failed: dict[str, str] = {}

        async def read(chunk: list[Json]) -> None:
            try:
                body = await self.client.call(
                    "POST",
                    "/internal/payloads/read",
                    json={"jobs": [{"id": j["id"], "digest": j["digest"]} for j in chunk]},
                    raw=True,
                )
                found.update(
                    (i, (data, digest)) for i, data, digest in (decode_batch(body) if body else [])
                )
            except (CallFailed, NoNodeAnswers, MalformedBatch) as e:
                failed.update((j["id"], f"payload unavailable ({e})") for j in chunk)

        await asyncio.gather(*(read(chunk) for chunk in chunks))
        out: list[bytes | None] = []
        for job in jobs:
            data, digest = found.get(job["id"], (None, None))
            if data is not None and digest != job["digest"]:
                failed[job["id"]], data = "payload digest mismatch", None
            elif data is None:
                failed.setdefault(job["id"], "payload unavailable (no node holds it)")
            out.append(data)
        for reason in set(failed.values()):
            await self.release([i for i, r in failed.items() if r == reason], reason)
        return out

    async def compute(self, ready: list[tuple[Json, bytes]]) -> None:
        """Compute jobs together (one kernel lane each) and report their results in the
        background: those that finished since the last report, once REPORT_EVERY has passed
        or the batch is done."""
        if not ready:
            return
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        firsts = await loop.run_in_executor(
            None, lambda: [hashlib.sha512(data).digest() for _, data in ready]
        )
        batch = rehash_batch(firsts, [job["iterations"] - 1 for job, _ in ready], lanes=LANES)
        unreported: list[tuple[str, str]] = []
        reported = started
        while True:
            finished = await loop.run_in_executor(None, next, batch, None)
            if finished is None:
                break
            now = time.monotonic()
            results = [(ready[i][0]["id"], digest.hex()) for i, digest in finished]
            log.info(
                "jobs computed in %.2fs (%d): %s",
                now - started,
                len(results),
                " ".join(job_id for job_id, _ in results),
            )
            unreported += results
            if now - reported >= REPORT_EVERY:
                await self.report_later(unreported)
                unreported, reported = [], now
        if unreported:
            await self.report_later(unreported)
        elapsed = time.monotonic() - started
        if elapsed > 0.05:
            # Reported with every poll; the scaling policy sizes the pool with it.
            self.info["speed"] = round(sum(job["iterations"] for job, _ in ready) / elapsed)

    async def report_later(self, results: list[tuple[str, str]]) -> None:
        """Report in the background; at most MAX_REPORTS calls in flight."""
        while len(self.reports) >= MAX_REPORTS:
            await asyncio.wait(self.reports, return_when=asyncio.FIRST_COMPLETED)
        task = asyncio.create_task(self.report(results))
        self.reports.add(task)

        def reported(t: asyncio.Task[None]) -> None:
            self.reports.discard(t)
            self.held.difference_update(job_id for job_id, _ in results)

        task.add_done_callback(reported)

    async def release(self, job_ids: list[str], reason: str) -> None:
        """Give jobs back so another attempt can start without waiting for the lease."""
        if not job_ids:
            return
        log.warning("jobs %s released: %s", ", ".join(job_ids), reason)
        for i in range(0, len(job_ids), MAX_LEASE_JOBS):
            try:
                await self.client.call(
                    "POST",
                    "/internal/release",
                    json={
                        "worker": self.args.id,
                        "jobs": list(job_ids[i : i + MAX_LEASE_JOBS]),
                        "reason": reason[:200],
                    },
                    timeout=10,
                )
            except (NoNodeAnswers, CallFailed) as e:
                log.warning("release failed (%s); the leases will expire", e)

    async def heartbeat(self) -> None:
        while True:
            await asyncio.sleep(max(0.5, self.lease_timeout / 3))
            held = sorted(self.held)
            for i in range(0, len(held), MAX_LEASE_JOBS):
                chunk = held[i : i + MAX_LEASE_JOBS]
                try:
                    reply = await self.client.call(
                        "POST",
                        "/internal/heartbeat",
                        json={"worker": self.args.id, "jobs": chunk, "info": self.info},
                        timeout=10,
                    )
                except (NoNodeAnswers, CallFailed) as e:
                    log.warning("heartbeat failed: %s", e)
                    break
                lost = (set(chunk) - set(reply["jobs"])) & self.held
                if lost:
                    log.info("leases lost for %s; finishing them anyway", ", ".join(sorted(lost)))

    async def report(self, results: list[tuple[str, str]]) -> None:
        """Report results, retrying until a manager takes them or the managers are gone."""
        body = {
            "worker": self.args.id,
            "results": [{"id": job_id, "result": result} for job_id, result in results],
        }
        ids = ", ".join(job_id for job_id, _ in results)
        while True:
            try:
                await self.client.call("POST", "/internal/complete", json=body)
                return
            except CallFailed as e:
                log.error("jobs %s: results refused: %s", ids, e)
                return
            except NoNodeAnswers:
                if time.monotonic() - self.client.last_contact > self.args.orphan_timeout:
                    log.error("jobs %s: results not delivered, no manager answers", ids)
                    return
                await asyncio.sleep(1.0)
