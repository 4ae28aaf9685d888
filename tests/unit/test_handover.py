"""A stopping leader's hand-over: asks until a follower takes over, never waits unbounded."""

import asyncio
import logging
import threading
import time

import pytest

from node.replication.handover import hand_over

ME, OTHER = "127.0.0.1:7001", "127.0.0.1:7002"


class FakeRaft:
    """Answers transfer_leadership like RaftNode: refused `refusals` times (a follower lacks
    entries), then sent; `takes_over` decides whether the follower then wins. Callbacks come
    from another thread, as from Raft's tick thread."""

    def __init__(self, role="leader", refusals=0, takes_over=True, raises=False):
        self.role, self.leader = role, ME if role == "leader" else OTHER
        self.refusals, self.takes_over, self.raises = refusals, takes_over, raises
        self.asked = 0

    def transfer_leadership(self, callback):
        self.asked += 1
        if self.raises:
            raise RuntimeError("Set changed size during iteration")
        if self.asked <= self.refusals:
            reason = "request_denied"
        else:
            reason = None
            if self.takes_over:
                threading.Timer(0.03, self._lose).start()
        threading.Thread(target=callback, args=(reason,)).start()

    def _lose(self):
        self.role, self.leader = "follower", None
        time.sleep(0.01)  # the new leader's first heartbeat names it
        self.leader = OTHER


@pytest.mark.parametrize(
    "raft, handed_over, asked, log_says",
    [
        (FakeRaft(), True, 1, "handed Raft leadership over to 127.0.0.1:7002"),
        (FakeRaft(refusals=3), True, 4, "handed Raft leadership over to 127.0.0.1:7002"),
        (FakeRaft(refusals=1000), False, None, "could not hand Raft leadership over"),
        (FakeRaft(takes_over=False), False, None, "could not hand Raft leadership over"),
        (FakeRaft(raises=True), False, 1, "could not ask a follower"),
        (FakeRaft(role="follower"), False, 0, None),
    ],
)
def test_a_stopping_leader_hands_over_or_gives_up_by_its_deadline(
    raft, handed_over, asked, log_says, caplog
):
    caplog.set_level(logging.INFO, logger="node.replication.handover")
    started = time.monotonic()
    assert asyncio.run(hand_over(raft, ME, timeout=0.5)) is handed_over
    assert time.monotonic() - started < 0.8
    if asked is not None:
        assert raft.asked == asked
    if log_says is None:
        assert not caplog.records
    else:
        assert log_says in caplog.text
