"""Proposing commands from asyncio: group commit, a deadline on every proposal.

Commands proposed in the same event-loop turn travel as one Raft entry. pysyncobj calls back on
its tick thread; the result is handed to the loop with call_soon_threadsafe. A proposal that gets
no answer within the request timeout fails with NoQuorum (503): with `commandsWaitLeader` set,
pysyncobj would otherwise hold it until a leader appears. It may still commit later; the client
sees that as a job that exists although its request failed, never as a lost job.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Callable, Protocol, Sequence, overload

from node.errors import NoQuorum
from node.replication import commands as c
from node.replication.state_machine import (
    MAX_PROPOSAL_ITEMS,
    ApplyError,
    KeyConflict,
    RequeueResult,
    Result,
    command_width,
)

log = logging.getLogger(__name__)

# An entry's results as the state machine returned them; None when unknown (see _resolve).
EntryResults = Sequence[Result | ApplyError] | None


class Raft(Protocol):
    def propose(
        self, batch: list[c.Wire], callback: Callable[[EntryResults, str | None], None]
    ) -> None:
        """Append `batch` as one entry; `callback(results, None)` once applied here, or
        `callback(None, why)` if it was not committed (RaftNode.propose)."""


class Proposer:
    def __init__(self, raft: Raft, timeout: float, max_items: int = MAX_PROPOSAL_ITEMS):
        self._raft = raft
        self._timeout = timeout
        self._max_items = min(max_items, MAX_PROPOSAL_ITEMS)
        self._pending: deque[tuple[c.Wire, int, asyncio.Future[Result | ApplyError]]] = deque()
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # The result of each command as StateMachine applied it (see state_machine.Result).
    @overload
    async def propose(
        self, cmd: c.Enqueue, timeout: float | None = None
    ) -> list[str | KeyConflict]: ...
    @overload
    async def propose(
        self, cmd: c.Lease, timeout: float | None = None
    ) -> list[tuple[str, int]]: ...
    @overload
    async def propose(self, cmd: c.Requeue, timeout: float | None = None) -> RequeueResult: ...
    @overload
    async def propose(self, cmd: c.Complete, timeout: float | None = None) -> list[str]: ...
    @overload
    async def propose(self, cmd: c.Workers, timeout: float | None = None) -> int: ...

    async def propose(self, cmd: c.Command, timeout: float | None = None) -> Result:
        """Commit `cmd` and return its result once applied on this node."""
        self._loop = asyncio.get_running_loop()
        fut: asyncio.Future[Result | ApplyError] = self._loop.create_future()
        self._pending.append((c.encode(cmd), command_width(cmd), fut))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)
        try:
            result = await asyncio.wait_for(asyncio.shield(fut), timeout or self._timeout)
        except TimeoutError:
            raise NoQuorum(
                "the cluster did not commit the request in time "
                "(no leader or no majority); retry later"
            ) from None
        if isinstance(result, ApplyError):
            raise RuntimeError(f"command rejected by the state machine: {result.message}")
        return result

    def _flush(self) -> None:
        self._scheduled = False
        while self._pending:
            batch: list[tuple[c.Wire, asyncio.Future[Result | ApplyError]]] = []
            items = 0
            while self._pending and (not batch or items + self._pending[0][1] <= self._max_items):
                wire, width, fut = self._pending.popleft()
                batch.append((wire, fut))
                items += width
            self._submit(batch)

    def _submit(self, batch: list[tuple[c.Wire, asyncio.Future[Result | ApplyError]]]) -> None:
        loop = self._loop
        assert loop is not None  # set by propose, which scheduled this flush
        futures = [f for _, f in batch]

        def done(result: EntryResults, failed: str | None) -> None:  # on Raft's tick thread
            loop.call_soon_threadsafe(_resolve, futures, result, failed)

        try:
            self._raft.propose([w for w, _ in batch], done)
        except Exception as e:  # e.g. the node is shutting down
            _resolve(futures, None, repr(e))


def _resolve(
    futures: list[asyncio.Future[Result | ApplyError]], result: EntryResults, failed: str | None
) -> None:
    for i, fut in enumerate(futures):
        if fut.done():
            continue
        if failed is not None:
            fut.set_exception(NoQuorum(f"not committed ({failed}); retry later"))
        elif result is None:
            # Applied before this node recorded a result (snapshot or replay): outcome unknown.
            fut.set_exception(NoQuorum("outcome unknown after a leader change; retry later"))
        else:
            fut.set_result(result[i])
