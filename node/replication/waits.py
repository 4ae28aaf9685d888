"""Requests that wait for this node's own applies: for a job to finish (GET /work/{id}?wait=S)
or for the completion feed to move (GET /completed?wait=S).

A waiter registers before it reads the store and is woken by the first applied entry that
finishes its job (or moves the feed) after that; it then reads again. An entry committed
between the registration and the read is seen by the read, and one committed after it wakes
the waiter: no wake-up is lost. A waiter costs one future; nothing polls the database.
"""

from __future__ import annotations

import asyncio
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from node.replication import commands as c


def finished_jobs(applied: Sequence[tuple[c.Command, Any]]) -> list[str]:
    """The jobs an applied entry completed or failed (its commands with their results)."""
    done: list[str] = []
    for cmd, result in applied:
        if isinstance(cmd, c.Complete):
            done += result
        elif isinstance(cmd, c.Requeue):
            done += result["failed"]
    return done


class Waits:
    """The waiters of one node. Used on the event loop only."""

    def __init__(self) -> None:
        self._jobs: dict[str, set[asyncio.Future[None]]] = {}
        self._feed: set[asyncio.Future[None]] = set()
        self.closed = False
        # Counts the wake-ups: a read of the store begun at the current generation sees every
        # finish whose waiters were woken before it, so waiters registered since may share it.
        self.generation = 0

    def __len__(self) -> int:
        return sum(len(w) for w in self._jobs.values()) + len(self._feed)

    @contextmanager
    def job(self, job_id: str) -> Iterator[asyncio.Future[None]]:
        """A future set once an entry applied from now on finishes `job_id`."""
        woken = asyncio.get_running_loop().create_future()
        if self.closed:
            woken.set_result(None)
        waiters = self._jobs.setdefault(job_id, set())
        waiters.add(woken)
        try:
            yield woken
        finally:
            waiters.discard(woken)
            if not waiters:
                self._jobs.pop(job_id, None)

    @contextmanager
    def feed(self) -> Iterator[asyncio.Future[None]]:
        """A future set once an entry applied from now on finishes any job."""
        woken = asyncio.get_running_loop().create_future()
        if self.closed:
            woken.set_result(None)
        self._feed.add(woken)
        try:
            yield woken
        finally:
            self._feed.discard(woken)

    def finished(self, job_ids: list[str] | None) -> None:
        """Wake the waiters of these jobs and of the feed; None (the store was replaced by a
        snapshot) wakes every waiter."""
        self.generation += 1
        if job_ids is None:
            for waiters in self._jobs.values():
                _wake(waiters)
        else:
            for job_id in job_ids:
                _wake(self._jobs.get(job_id, ()))
        if job_ids is None or job_ids:
            _wake(self._feed)

    def close(self) -> None:
        """The node is stopping: every waiter answers now with what it has."""
        self.closed = True
        self.finished(None)


def _wake(waiters: set[asyncio.Future[None]] | tuple[()]) -> None:
    for woken in waiters:
        if not woken.done():
            woken.set_result(None)


async def until(woken: asyncio.Future[None], seconds: float) -> None:
    """Wait for `woken`, at most `seconds`."""
    if seconds > 0 and not woken.done():
        await asyncio.wait([woken], timeout=seconds)
