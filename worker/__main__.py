"""`python -m worker`: lease jobs from the managers, compute them, report the results."""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import signal
import socket
import sys
import time

import aiohttp

from .client import CallFailed, ManagerClient, NoManager
from .compute import LANES, rehash_batch

log = logging.getLogger("worker")

POLL_WAIT = 10.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m worker",
        description="Lease jobs from the managers, compute iterated SHA-512, report results. "
                    "The cluster secret comes from WQ_SECRET or --secret-file.")
    p.add_argument("--managers", default=os.environ.get("WQ_MANAGERS"),
                   help="manager URLs, comma separated; any of them will do (WQ_MANAGERS)")
    p.add_argument("--id", help="worker id shown by the managers (default: <hostname>-<pid>)")
    p.add_argument("--secret-file", default=os.environ.get("WQ_SECRET_FILE"),
                   help="file holding the cluster secret (WQ_SECRET_FILE)")
    p.add_argument("--idle-timeout", type=float, default=60.0,
                   help="seconds without work before exiting; the managers may change it "
                        "[default: 60]")
    p.add_argument("--orphan-timeout", type=float, default=30.0,
                   help="seconds without any manager answering before exiting [default: 30]")
    p.add_argument("--max-jobs", type=int, default=LANES,
                   help="jobs leased and computed together, 1 to 64 [default: the kernel's lanes "
                        f"here, {LANES}]")
    p.add_argument("--log-level", default=os.environ.get("WQ_LOG_LEVEL", "INFO"),
                   help="DEBUG, INFO, WARNING or ERROR (WQ_LOG_LEVEL) [default: INFO]")
    args = p.parse_args(argv)
    args.id = args.id or f"{socket.gethostname()}-{os.getpid()}"
    if not args.managers:
        p.error("--managers (or WQ_MANAGERS) is required")
    if not 1 <= args.max_jobs <= 64:
        p.error("--max-jobs: allowed 1 to 64")
    if args.idle_timeout <= 0 or args.orphan_timeout <= 0:
        p.error("--idle-timeout and --orphan-timeout must be positive")
    return args


def read_secret(args: argparse.Namespace) -> str:
    if args.secret_file:
        with open(args.secret_file, encoding="utf-8") as f:
            return f.read().strip()
    return os.environ.get("WQ_SECRET", "")


class Worker:
    def __init__(self, args: argparse.Namespace, client: ManagerClient):
        self.args = args
        self.client = client
        self.idle_timeout: float | None = args.idle_timeout
        self.lease_timeout = 30.0
        self.held: list[str] = []           # ids of leased jobs not yet reported
        self.info = {"host": socket.gethostname(), "pid": os.getpid(),
                     "backend": os.environ.get("WQ_WORKER_BACKEND", "local")}

    async def run(self) -> str:
        """Work until idle or orphaned; returns why it stopped."""
        idle_since = time.monotonic()
        while True:
            try:
                reply = await self.client.call("POST", "/internal/lease", json={
                    "worker": self.args.id, "max_jobs": self.args.max_jobs, "wait": POLL_WAIT,
                    "info": self.info}, timeout=POLL_WAIT + 30)
            except NoManager:
                if time.monotonic() - self.client.last_contact > self.args.orphan_timeout:
                    return f"no manager answered for {self.args.orphan_timeout:g}s"
                await asyncio.sleep(1.0)
                continue
            self.idle_timeout = reply.get("idle_timeout")
            self.lease_timeout = reply.get("lease_timeout", self.lease_timeout)
            if not reply["jobs"]:
                idle = time.monotonic() - idle_since
                if self.idle_timeout is not None and idle >= self.idle_timeout:
                    return f"idle for {idle:.0f}s"
                continue
            await self.work_through(reply["jobs"])
            idle_since = time.monotonic()

    async def work_through(self, jobs: list[dict]) -> None:
        """Compute leased jobs together (one kernel lane each), heartbeating every lease still
        held, and report each result as soon as its job is done."""
        self.held = [job["id"] for job in jobs]
        heartbeat = asyncio.create_task(self.heartbeat())
        try:
            await self.compute(jobs)
        except asyncio.CancelledError:
            # Stopping (SIGTERM): give the jobs back now rather than at lease expiry.
            heartbeat.cancel()
            try:
                await asyncio.wait_for(self.release(self.held, "the worker is stopping"), 3)
            except asyncio.TimeoutError:
                pass
            raise
        finally:
            heartbeat.cancel()

    async def payload(self, job: dict) -> bytes | None:
        """The job's payload, checked against its digest; None (job released) if unavailable."""
        try:
            data = await self.client.call("GET", f"/internal/payloads/{job['id']}"
                                                 f"?digest={job['digest']}", raw=True)
        except (CallFailed, NoManager) as e:
            await self.release([job["id"]], f"payload unavailable ({e})")
            return None
        if hashlib.sha256(data).hexdigest() != job["digest"]:
            await self.release([job["id"]], "payload digest mismatch")
            return None
        return data

    async def compute(self, jobs: list[dict]) -> None:
        payloads = await asyncio.gather(*(self.payload(job) for job in jobs))
        ready = []
        for job, data in zip(jobs, payloads, strict=True):
            if data is None:
                self.held.remove(job["id"])      # released
            else:
                ready.append((job, data))
        if not ready:
            return
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        firsts = await loop.run_in_executor(
            None, lambda: [hashlib.sha512(data).digest() for _, data in ready])
        batch = rehash_batch(firsts, [job["iterations"] - 1 for job, _ in ready], lanes=LANES)
        while True:
            finished = await loop.run_in_executor(None, next, batch, None)
            if finished is None:
                break
            done = [ready[i][0] for i, _ in finished]
            for job in done:
                log.info("job %s computed (%d iterations in %.2fs)", job["id"], job["iterations"],
                         time.monotonic() - started)
            # Jobs that finish together are reported together: one call, one Raft command.
            await self.report([(job["id"], digest.hex()) for job, (_, digest)
                               in zip(done, finished, strict=True)])
            for job in done:
                self.held.remove(job["id"])
        elapsed = time.monotonic() - started
        if elapsed > 0.05:
            # Reported with every poll; the scaling policy sizes the pool with it.
            self.info["speed"] = round(sum(job["iterations"] for job, _ in ready) / elapsed)

    async def release(self, job_ids: list[str], reason: str) -> None:
        """Give jobs back so another attempt can start without waiting for the lease."""
        if not job_ids:
            return
        log.warning("jobs %s released: %s", ", ".join(job_ids), reason)
        try:
            await self.client.call("POST", "/internal/release", json={
                "worker": self.args.id, "jobs": list(job_ids), "reason": reason[:200]},
                timeout=10)
        except (NoManager, CallFailed) as e:
            log.warning("release failed (%s); the leases will expire", e)

    async def heartbeat(self) -> None:
        while True:
            await asyncio.sleep(max(0.5, self.lease_timeout / 3))
            if not self.held:
                continue
            try:
                reply = await self.client.call("POST", "/internal/heartbeat", json={
                    "worker": self.args.id, "jobs": list(self.held), "info": self.info},
                    timeout=10)
                lost = set(self.held) - set(reply["jobs"])
                if lost:
                    log.info("leases lost for %s; finishing them anyway", ", ".join(sorted(lost)))
            except (NoManager, CallFailed) as e:
                log.warning("heartbeat failed: %s", e)

    async def report(self, results: list[tuple[str, str]]) -> None:
        """Report results, retrying until a manager takes them or the managers are gone."""
        body = {"worker": self.args.id,
                "results": [{"id": job_id, "result": result} for job_id, result in results]}
        ids = ", ".join(job_id for job_id, _ in results)
        while True:
            try:
                await self.client.call("POST", "/internal/complete", json=body)
                return
            except CallFailed as e:
                log.error("jobs %s: results refused: %s", ids, e)
                return
            except NoManager:
                if time.monotonic() - self.client.last_contact > self.args.orphan_timeout:
                    log.error("jobs %s: results not delivered, no manager answers", ids)
                    return
                await asyncio.sleep(1.0)


async def amain(args: argparse.Namespace, secret: str) -> str:
    urls = [u.strip().rstrip("/") for u in args.managers.split(",") if u.strip()]
    main = asyncio.current_task()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    async with aiohttp.ClientSession() as session:
        worker = Worker(args, ManagerClient(urls, secret, session))
        try:
            return await worker.run()
        except asyncio.CancelledError:
            # Any job was released on the way here; a hash still running in its thread would
            # hold the interpreter's exit until it finished, so leave at once.
            log.info("exiting: stopped (SIGTERM)")
            logging.shutdown()
            os._exit(0)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format=f"%(asctime)s worker {args.id} %(levelname)s: %(message)s")
    secret = read_secret(args)
    if len(secret) < 16:
        print("python -m worker: the cluster secret (WQ_SECRET or --secret-file, at least 16 "
              "characters) is required", file=sys.stderr)
        return 2
    try:
        reason = asyncio.run(amain(args, secret))
    except KeyboardInterrupt:
        reason = "interrupted"
    log.info("exiting: %s", reason)
    return 0


if __name__ == "__main__":
    sys.exit(main())
