"""One manager node: builds the store, Raft, the payload data plane, the scheduler, scaling,
the service and its HTTP listeners, starts their tasks and stops them in order."""

from __future__ import annotations

import asyncio
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import aiohttp
from aiohttp import web

from node.config import NodeConfig
from node.http.server import serve
from node.observability.history import History
from node.observability.metrics import Metrics
from node.replication import commands as c
from node.replication.handover import hand_over
from node.replication.payloads import Payloads
from node.replication.proposer import Proposer
from node.replication.raft import RaftNode
from node.replication.state_machine import StateMachine
from node.replication.waits import Waits, finished_jobs
from node.scaling.factory import make_backend, make_manager_slots, scaling_limits
from node.scaling.loop import Scaler, ScalingLoop
from node.scheduling.duties import collect_payloads, leader_duties
from node.scheduling.leases import Scheduler
from node.scheduling.roster import Roster
from node.service import NodeService
from node.storage.store import Store

log = logging.getLogger(__name__)

# A stopping leader waits at most this long for a follower to take over before it goes on.
HANDOVER_TIMEOUT = 1.0


class Node:
    def __init__(self, cfg: NodeConfig):
        self.cfg = cfg
        self.store = Store(cfg.data_dir, sync_payloads=cfg.fsync == "on")
        self._executor = ThreadPoolExecutor(8, thread_name_prefix="db")
        self._tasks: list[asyncio.Task[None]] = []
        self._runners: list[web.AppRunner] = []

    async def run_db(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking store call off the event loop."""
        return await self.loop.run_in_executor(self._executor, functools.partial(fn, *args))

    async def start(self) -> None:
        cfg, store = self.cfg, self.store
        self.loop = asyncio.get_running_loop()
        # No global connection cap: a peer that stops answering must not starve the others.
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=128)
        )
        self.metrics = Metrics()
        self.machine = StateMachine(
            store, on_applied=self._on_applied, on_events=self.metrics.job_events
        )
        self.raft = RaftNode(cfg, self.machine)
        self.proposer = Proposer(self.raft, cfg.request_timeout)
        self.waits = Waits()
        self.metrics.waiting.set_function(lambda: len(self.waits))
        self.payloads = Payloads(
            cfg, store, self.session, self.run_db, sent=self.metrics.payload_bytes.inc
        )
        self.roster = Roster(ttl=max(cfg.lease_timeout, 15.0) + 5.0)
        self.scheduler = Scheduler(
            cfg,
            store,
            self.proposer,
            self.raft.is_leader,
            self.run_db,
            lambda: self.machine.counts["queued"],
        )
        self.scaling: ScalingLoop | None = None
        scaler = None
        if cfg.max_workers > 0:
            backend = make_backend(cfg, sorted(cfg.members.values()))
            scaler = Scaler(backend, self.roster, scaling_limits(cfg, backend), cfg.boot_timeout)
            self.scaling = ScalingLoop(
                scaler,
                self.raft.is_leader,
                lambda: self.machine.counts,
                lambda: self.run_db(store.oldest_queued_at),
                self.scheduler.busy_workers,
            )
        self.metrics.attach(lambda: self.machine.counts, self.raft, scaler)
        history = History()
        self.service = NodeService(
            cfg,
            store=store,
            run_db=self.run_db,
            machine=self.machine,
            raft=self.raft,
            proposer=self.proposer,
            payloads=self.payloads,
            waits=self.waits,
            scheduler=self.scheduler,
            roster=self.roster,
            scaler=scaler,
            metrics=self.metrics,
            history=history,
        )
        self._runners = await serve(self.service, cfg, self.session)
        self._tasks = [
            asyncio.create_task(
                leader_duties(
                    self.raft,
                    self.scheduler,
                    self.roster,
                    self.proposer,
                    store,
                    self.run_db,
                    self.metrics,
                )
            ),
            asyncio.create_task(collect_payloads(store, self.run_db, cfg.request_timeout)),
            asyncio.create_task(
                history.sample_forever(
                    lambda: self.machine.counts,
                    lambda: self.metrics.totals,
                    self.service.worker_states,
                )
            ),
        ]
        if self.scaling is not None:
            self._tasks.append(asyncio.create_task(self.scaling.run()))
        slots = make_manager_slots(cfg)
        if slots is not None:
            self._tasks.append(asyncio.create_task(slots.run(self.raft.is_leader)))
        addresses = [a for a in (cfg.http, cfg.internal_http) if a]
        log.info(
            "node %s serving HTTP on %s, Raft on %s, %d peers",
            cfg.node_id,
            " and ".join(addresses),
            cfg.raft,
            len(cfg.peers),
        )

    async def stop(self) -> None:
        if self.cfg.peers:
            await hand_over(self.raft, self.cfg.raft, HANDOVER_TIMEOUT)
        for t in self._tasks:
            t.cancel()
        self.scheduler.close()
        self.waits.close()
        if self.scaling is not None:
            await self.loop.run_in_executor(None, self.scaling.scaler.backend.stop_all)
        # Closing the client session first ends calls forwarded to the leader, so their
        # handlers answer (503) instead of holding the HTTP shutdown.
        await self.payloads.close()
        await self.session.close()
        for runner in self._runners:
            await runner.cleanup()
        self.raft.close()
        self._executor.shutdown(wait=True)
        self.store.close()
        log.info("node %s stopped", self.cfg.node_id)

    def _on_applied(self, applied: list[tuple[c.Command, Any]] | None) -> None:
        """Called on Raft's tick thread once per applied entry (None: a snapshot replaced the
        store); wakes the event loop once for the whole entry."""
        work = applied is None or any(isinstance(cmd, (c.Enqueue, c.Requeue)) for cmd, _ in applied)
        finished = None if applied is None else finished_jobs(applied)
        added = [
            (job.enqueued_at, job.iterations)
            for cmd, result in (applied or () if self.scaling is not None else ())
            if isinstance(cmd, c.Enqueue)
            for job, job_id in zip(cmd.jobs, result, strict=True)
            if job_id == job.id
        ]
        if work or added or finished != []:
            self.loop.call_soon_threadsafe(self._arrived, work, added, finished)

    def _arrived(
        self, work: bool, added: list[tuple[float, int]], finished: list[str] | None
    ) -> None:
        if work:
            self.scheduler.work_arrived()
        if added and self.scaling is not None:
            self.scaling.jobs_arrived(added)
        if finished != []:
            self.waits.finished(finished)
