"""One manager node: wires the store, Raft, data plane, scheduler, scaling and HTTP together."""
from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import aiohttp
from aiohttp import web

from . import api, commands as c, dashboard, internal
from .blobs import Blobs
from .config import NodeConfig
from .errors import NoQuorum, QueueError
from .handover import hand_over
from .metrics import Metrics
from .proposer import Proposer
from .raft import RaftNode
from .roster import Roster
from .scaling.loop import Scaler
from .scaling.policy import idle_timeout_for
from .scaling.setup import make_backend, scaling_limits
from .scheduler import Scheduler
from .state import StateMachine
from .store import Store

log = logging.getLogger(__name__)

DUTY_INTERVAL = 1.0
SCALE_SOON_INTERVAL = 0.2
PAYLOAD_GC_INTERVAL = 60.0
# Healthy while this node's applied index is at most this far behind the leader's commit index.
HEALTHY_LAG = 1000
# A stopping leader waits at most this long for a follower to take over before it goes on.
HANDOVER_TIMEOUT = 1.0


class Node:
    def __init__(self, cfg: NodeConfig):
        self.cfg = cfg
        self.store = Store(cfg.data_dir, sync_payloads=cfg.fsync == "on")
        self._executor = ThreadPoolExecutor(8, thread_name_prefix="db")
        self._tasks: list[asyncio.Task] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self._urls = {p.raft: p.url for p in cfg.peers} | {cfg.raft: cfg.url}
        self.roster = Roster(ttl=max(cfg.lease_timeout, 15.0) + 5.0)
        self.metrics = Metrics()
        self.history = dashboard.History()
        self.scaler: Scaler | None = None
        self._scale_soon = asyncio.Event()
        if cfg.max_workers > 0:
            self.scaler = Scaler(make_backend(cfg, sorted(self._urls.values())), self.roster,
                                 scaling_limits(cfg), cfg.boot_timeout)

    async def run_db(self, fn: Callable, *args: Any) -> Any:
        """Run a blocking store call off the event loop."""
        return await self.loop.run_in_executor(self._executor, functools.partial(fn, *args))

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        # No global connection cap: a peer that stops answering must not starve the others.
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=128))
        self.machine = StateMachine(self.store, on_applied=self._on_applied,
                                    on_events=self.metrics.job_events)
        self.raft = RaftNode(self.cfg, self.machine)
        self.proposer = Proposer(self.raft, self.cfg.request_timeout)
        self.blobs = Blobs(self.cfg, self.store, self.session, self.run_db,
                           sent=self.metrics.payload_bytes.inc)
        self.metrics.attach(self)
        self.scheduler = Scheduler(self.cfg, self.store, self.proposer, self.raft._isLeader,
                                   self.run_db, lambda: self.machine.counts["queued"])
        routes = api.routes(self) + internal.routes(self) + dashboard.routes(self)
        if self.cfg.internal_http:
            public = [r for r in routes if not r.path.startswith("/internal/")]
            listeners = [(self.cfg.http, public),
                         (self.cfg.internal_http, [r for r in routes if r not in public])]
        else:
            listeners = [(self.cfg.http, routes)]
        self._runners = [await self._listen(address, group) for address, group in listeners]
        self._tasks = [asyncio.create_task(self._leader_duties()),
                       asyncio.create_task(self._collect_payloads()),
                       asyncio.create_task(dashboard.sample_forever(self))]
        if self.scaler is not None:
            self._tasks.append(asyncio.create_task(self._scaling_loop()))
        log.info("node %s serving HTTP on %s, Raft on %s, %d peers", self.cfg.node_id,
                 " and ".join(a for a, _ in listeners), self.cfg.raft, len(self.cfg.peers))

    async def _listen(self, address: str, routes: list) -> web.AppRunner:
        app = web.Application(
            client_max_size=self.cfg.max_body_bytes + 1,
            middlewares=[api.make_error_middleware(self.cfg.request_timeout),
                         api.make_auth_middleware(self.cfg.secret, self.cfg.api_key)])
        app.add_routes(routes)
        # At shutdown, long-polls are answered at once (Scheduler.close); calls still open
        # after shutdown_timeout (e.g. forwarded to the leader) are cut, and workers retry.
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True,
                               shutdown_timeout=1.0,
                               keepalive_timeout=self.cfg.idle_connection_timeout)
        await runner.setup()
        host, port = address.rsplit(":", 1)
        # A burst of new connections larger than the accept queue makes the kernel drop
        # handshakes the client already believes complete; 1024 (capped by somaxconn) absorbs
        # bursts that aiohttp's default of 128 would not.
        await web.TCPSite(runner, host, int(port), backlog=1024).start()
        return runner

    async def stop(self) -> None:
        if self.cfg.peers:
            await hand_over(self.raft, self.cfg.raft, HANDOVER_TIMEOUT)
        for t in self._tasks:
            t.cancel()
        self.scheduler.close()
        if self.scaler is not None:
            await self.loop.run_in_executor(None, self.scaler.backend.stop_all)
        # Closing the client session first ends calls forwarded to the leader, so their
        # handlers answer (503) instead of holding the HTTP shutdown.
        await self.blobs.close()
        await self.session.close()
        for runner in self._runners:
            await runner.cleanup()
        self.raft.destroy()
        self._executor.shutdown(wait=True)
        self.store.close()
        log.info("node %s stopped", self.cfg.node_id)

    def _on_applied(self, cmd: c.Command | None, result: Any) -> None:
        """Called on pysyncobj's tick thread after each applied command."""
        if cmd is None or isinstance(cmd, (c.Enqueue, c.Requeue)):
            self.loop.call_soon_threadsafe(self.scheduler.work_arrived)
        if isinstance(cmd, c.Enqueue) and self.scaler is not None:
            added = [(job.enqueued_at, job.iterations)
                     for job, job_id in zip(cmd.jobs, result, strict=True) if job_id == job.id]
            if added:
                self.loop.call_soon_threadsafe(self._jobs_arrived, added)

    def _jobs_arrived(self, added: list[tuple[float, int]]) -> None:
        if self.scaler.jobs_arrived(added, time.time()):
            self._scale_soon.set()

    def leader_url(self) -> str | None:
        leader = self.raft.leader
        return self._urls.get(leader) if leader else None

    # --- leader duties -------------------------------------------------------------------

    async def _leader_duties(self) -> None:
        was_leader = False
        known_leader = None
        while True:
            await asyncio.sleep(DUTY_INTERVAL)
            if self.raft.leader is not None and self.raft.leader != known_leader:
                if known_leader is not None:
                    self.metrics.leader_changes.inc()
                known_leader = self.raft.leader
            leader = self.raft._isLeader()
            try:
                if leader and not was_leader:
                    self.roster.adopt(await self.run_db(self.store.workers), time.time())
                if was_leader and not leader:
                    self.scheduler.step_down()
                    self.roster.clear()
                was_leader = leader
                if not leader:
                    continue
                await self.scheduler.expire()       # also adopts the replicated leases
                changes = self.roster.changes(time.time())
                if changes is not None:
                    await self.proposer.propose(changes)
            except QueueError as e:
                log.warning("leader duties postponed: %s", e.message)
            except Exception:
                log.exception("leader duties failed; retrying")

    async def _scaling_loop(self) -> None:
        """Its own task: a slow cloud API must not hold up lease expiry. A step runs every
        DUTY_INTERVAL, and as soon as jobs arrive to a pool with no worker up or booting
        (at most every SCALE_SOON_INTERVAL): a burst on an idle cluster starts workers at
        once instead of up to a second later."""
        was_leader = False
        last = 0.0
        while True:
            try:
                await asyncio.wait_for(self._scale_soon.wait(), DUTY_INTERVAL)
                await asyncio.sleep(max(0.0, last + SCALE_SOON_INTERVAL - self.loop.time()))
            except asyncio.TimeoutError:
                pass
            self._scale_soon.clear()
            last = self.loop.time()
            leader = self.raft._isLeader()
            if leader and not was_leader:
                self.scaler.became_leader(time.time())
            was_leader = leader
            if not leader:
                continue
            try:
                await self._scale()
            except Exception:
                log.exception("scaling step failed; retrying")

    async def _scale(self) -> None:
        counts = self.machine.counts
        oldest = await self.run_db(self.store.oldest_queued_at)
        busy = self.scheduler.busy_workers()
        await self.loop.run_in_executor(None, self.scaler.step, time.time(), counts["queued"],
                                        counts["backlog_iterations"], oldest, busy)

    def idle_timeout(self) -> float | None:
        """What workers are told: the policy's idle timeout, none while at the minimum."""
        idle = (self.scaler.idle_timeout(self.cfg.worker_idle_timeout) if self.scaler
                else self.cfg.worker_idle_timeout)
        return idle_timeout_for(len(self.roster.live(time.time())), self.cfg.min_workers, idle)

    async def _collect_payloads(self) -> None:
        while True:
            await asyncio.sleep(PAYLOAD_GC_INTERVAL)
            try:
                # Orphans are payloads whose enqueue never committed; wait well past any
                # request that could still commit them.
                removed = await self.run_db(self.store.collect_payloads,
                                            time.time() - 10 * self.cfg.request_timeout - 60)
                if removed:
                    log.info("removed %d payloads no job needs", removed)
            except Exception:
                log.exception("payload collection failed")

    # --- status ------------------------------------------------------------------------

    async def worker_states(self, workers: list[dict] | None = None) -> dict[str, int]:
        """Workers by state: the leader's live view; elsewhere the replicated list (`workers`,
        when the caller read it already)."""
        if self.raft._isLeader():
            live = set(self.roster.live(time.time()))
            busy = self.scheduler.busy_workers()
            booting = self.scaler.booting if self.scaler is not None else 0
        else:
            if workers is None:
                workers = await self.run_db(self.store.workers)
            live = {w["id"] for w in workers}
            busy = await self.run_db(self.store.busy_workers)
            booting = 0
        return {"busy": len(busy), "idle": len(live - busy), "booting": booting}

    async def status(self) -> dict:
        counts = self.machine.counts
        workers = await self.run_db(self.store.workers)
        return {
            "node": self.cfg.node_id,
            "pid": os.getpid(),
            "url": self.cfg.url,
            "role": self.raft.role,
            "leader": self.raft.leader,
            "leader_url": self.leader_url(),
            "raft": {"term": self.raft.raftCurrentTerm,
                     "commit_index": self.raft.raftCommitIndex,
                     "last_applied": self.raft.raftLastApplied,
                     "leader_commit_index": self.raft.leader_commit_index},
            "queue": {s: counts[s] for s in ("queued", "running", "completed", "failed")},
            "apply_failures": counts["apply_failures"],
            "workers": workers,
            "worker_states": await self.worker_states(workers),
            "scaling": self.scaling_status(),
        }

    def scaling_status(self) -> dict | None:
        if self.scaler is None:
            return None
        d = self.scaler.decision
        return {"backend": self.scaler.backend.name, "launches": self.scaler.launches,
                "idle_timeout": self.idle_timeout(),
                "last_decision": None if d is None else {"start": d.start, "reason": d.reason},
                "decisions": list(self.scaler.recent)}

    def quorum_problem(self) -> str | None:
        """Why this node cannot commit anything right now, if it knows; None otherwise."""
        if self.raft.leader is None:
            return "no leader known"
        if self.raft._isLeader():
            if not self.raft.leader_has_majority(2 * self.cfg.raft_max_timeout):
                return "leader without a majority of answering followers"
        elif not self.raft.hears_leader():
            return "no heartbeat from the leader within the election timeout"
        return None

    def check_quorum(self) -> None:
        """Fail fast (503) instead of letting a request wait out its timeout."""
        problem = self.quorum_problem()
        if problem is not None:
            raise NoQuorum(f"this node cannot reach a majority ({problem}); retry on another node")

    def health(self) -> tuple[bool, str]:
        problem = self.quorum_problem()
        if problem is not None:
            return False, problem
        target = self.raft.leader_commit_index if not self.raft._isLeader() else None
        target = target if target is not None else self.raft.raftCommitIndex
        lag = target - self.raft.raftLastApplied
        if lag > HEALTHY_LAG:
            return False, f"catching up: {lag} log entries behind"
        return True, "ok"
