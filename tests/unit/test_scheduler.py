"""The leader's lease path against a real store and state machine, without Raft: leases
that run at the same time never leave a worker waiting while jobs are queued."""

import asyncio
import functools
import time

import pytest

from node.config import NodeConfig
from node.replication import commands as c
from node.replication.state_machine import StateMachine
from node.scheduling.leases import Scheduler
from node.storage.store import Store


class LocalProposer:
    """Applies each command as its own entry after a turn of the loop, as a commit would."""

    def __init__(self, machine: StateMachine):
        self.machine = machine
        self.index = 1

    async def propose(self, cmd):
        await asyncio.sleep(0.01)
        self.index += 1
        return self.machine.apply(self.index, [c.encode(cmd)])[0]


async def run_db(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args))


@pytest.fixture
def scheduler(tmp_path):
    store = Store(str(tmp_path))
    machine = StateMachine(store)
    cfg = NodeConfig(
        node_id="n", raft="h:1", http="h:2", peers=(), data_dir=str(tmp_path), secret="s" * 16
    )
    proposer = LocalProposer(machine)
    jobs = tuple(c.NewJob(f"{n:032x}", 5, 10, "d" * 64, 100.0 + n) for n in range(20))
    machine.apply(1, [c.encode(c.Enqueue(jobs))])
    yield Scheduler(cfg, store, proposer, lambda: True, run_db, lambda: machine.counts["queued"])
    store.close()


@pytest.mark.parametrize("workers,each", [(2, 8), (3, 6), (4, 5)])
def test_concurrent_leases_split_the_queue_without_waiting(scheduler, workers, each):
    async def main():
        started = time.monotonic()
        got = await asyncio.gather(
            *(scheduler.lease(f"w{n}", each, wait=5) for n in range(workers))
        )
        return got, time.monotonic() - started

    got, seconds = asyncio.run(main())
    ids = [job["id"] for jobs in got for job in jobs]
    assert all(len(jobs) == each for jobs in got)
    assert len(set(ids)) == len(ids) == workers * each
    assert seconds < 2, "a lease waited for work although jobs were queued"


def test_a_short_lease_lingers_until_enough_jobs_are_queued(scheduler):
    more = tuple(c.NewJob(f"{n:032x}", 5, 10, "d" * 64, 200.0 + n) for n in range(20, 32))

    async def main():
        async def enqueue_later():
            await asyncio.sleep(0.1)
            await scheduler._proposer.propose(c.Enqueue(more))
            scheduler.work_arrived()

        asyncio.create_task(enqueue_later())
        return await scheduler.lease("w", 32, wait=0, linger=5)

    started = time.monotonic()
    jobs = asyncio.run(main())
    assert len(jobs) == 32  # 20 queued, 12 more arrived while it lingered
    assert time.monotonic() - started < 3, "the lease waited past the moment it could fill"


# (linger, seconds at least) -> the 20 queued jobs, after the linger when one is asked for
@pytest.mark.parametrize("linger,at_least", [(0, 0), (0.3, 0.3)])
def test_a_lease_that_cannot_fill_returns_what_is_queued_after_its_linger(
    scheduler, linger, at_least
):
    started = time.monotonic()
    jobs = asyncio.run(scheduler.lease("w", 32, wait=0, linger=linger))
    assert len(jobs) == 20 and time.monotonic() - started >= at_least
