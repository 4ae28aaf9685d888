"""A stopping leader hands Raft leadership to a follower before it goes.

Without it the others notice the leader is gone only after an election timeout (0.4-1.4 s by
default) and may need a second round; with Raft's TimeoutNow the most caught-up follower
stands at once and wins within a round trip, so clients meet a new leader in milliseconds.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable, Protocol, TypeVar

log = logging.getLogger(__name__)

# After TimeoutNow is sent: how long to wait for the election before asking again.
ELECTION_WAIT = 0.2
# After a refusal (no connected follower has every entry yet, which under load lasts
# milliseconds): how long before asking again.
RETRY_WAIT = 0.02
POLL = 0.005

T = TypeVar("T")


class Raft(Protocol):
    """What the hand-over needs of a RaftNode."""

    @property
    def role(self) -> str: ...

    @property
    def leader(self) -> str | None: ...

    def transfer_leadership(self, callback: Callable[[str | None], None]) -> None: ...


async def hand_over(raft: Raft, self_address: str, timeout: float) -> bool:
    """If `raft` (a RaftNode) leads, have a follower take over; wait until one has, at most
    `timeout` seconds. Logs the outcome; True once another node leads."""
    if raft.role != "leader":
        return False
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + timeout

    def handed_over() -> bool:
        return raft.role != "leader" and raft.leader not in (None, self_address)

    reason: str | None = None
    answered = False
    while not handed_over() and loop.time() < deadline:
        if raft.role == "leader":
            sent: asyncio.Future[str | None] = loop.create_future()

            def done(refused: str | None, sent: asyncio.Future[str | None] = sent) -> None:
                # On Raft's tick thread, or on this one when it answers at once.
                loop.call_soon_threadsafe(_set_once, sent, refused)

            try:
                raft.transfer_leadership(done)
                reason = await asyncio.wait_for(sent, deadline - loop.time())
                answered = True
            except TimeoutError:
                break
            except Exception:
                log.exception("could not ask a follower to take Raft leadership over")
                break
        wait = ELECTION_WAIT if answered and reason is None else RETRY_WAIT
        until = min(deadline, loop.time() + wait)
        while not handed_over() and loop.time() < until:
            await asyncio.sleep(POLL)
    elapsed_ms = (loop.time() - started) * 1000
    if handed_over():
        log.info("handed Raft leadership over to %s in %.0f ms", raft.leader, elapsed_ms)
        return True
    log.warning(
        "could not hand Raft leadership over in %.0f ms (role %s, last answer %s); "
        "the others elect a leader once this node is gone",
        elapsed_ms,
        raft.role,
        reason if answered else "none",
    )
    return False


def _set_once(fut: asyncio.Future[T], value: T) -> None:
    if not fut.done():
        fut.set_result(value)
