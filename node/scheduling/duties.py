"""What the leader does every second besides answering requests: take back the jobs of
workers that went quiet, publish the list of live workers, and notice leadership changes.
And on every node: remove payloads no job needs any more."""

from __future__ import annotations

import asyncio
import logging
import time

from node.errors import QueueError
from node.observability.metrics import Metrics
from node.replication.proposer import Proposer
from node.replication.raft import RaftNode
from node.scheduling.leases import Scheduler
from node.scheduling.roster import Roster
from node.storage.store import RunDb, Store

log = logging.getLogger(__name__)

DUTY_INTERVAL = 1.0
PAYLOAD_GC_INTERVAL = 60.0


async def leader_duties(
    raft: RaftNode,
    scheduler: Scheduler,
    roster: Roster,
    proposer: Proposer,
    store: Store,
    run_db: RunDb,
    metrics: Metrics,
) -> None:
    """Runs for the node's lifetime; acts while this node leads."""
    was_leader = False
    known_leader = None
    while True:
        await asyncio.sleep(DUTY_INTERVAL)
        if raft.leader is not None and raft.leader != known_leader:
            if known_leader is not None:
                metrics.leader_changes.inc()
            known_leader = raft.leader
        leader = raft.is_leader()
        try:
            if leader and not was_leader:
                roster.adopt(await run_db(store.workers), time.time())
            if was_leader and not leader:
                scheduler.step_down()
                roster.clear()
            was_leader = leader
            if not leader:
                continue
            await scheduler.expire()  # also adopts the replicated leases
            changes = roster.changes(time.time())
            if changes is not None:
                await proposer.propose(changes)
        except QueueError as e:
            log.warning("leader duties postponed: %s", e.message)
        except Exception:
            log.exception("leader duties failed; retrying")


async def collect_payloads(store: Store, run_db: RunDb, request_timeout: float) -> None:
    """Every PAYLOAD_GC_INTERVAL, remove payloads of finished jobs and orphans: payloads whose
    enqueue never committed, once well past any request that could still commit them."""
    while True:
        await asyncio.sleep(PAYLOAD_GC_INTERVAL)
        try:
            removed = await run_db(store.collect_payloads, time.time() - 10 * request_timeout - 60)
            if removed:
                log.info("removed %d payloads no job needs", removed)
        except Exception:
            log.exception("payload collection failed")
