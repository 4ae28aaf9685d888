"""One test per patch of node/replication/syncobj: three real Raft nodes driven tick by tick on the
simulator's network, clock and disk (tests/sim/world.py).

Each test also runs with its patch switched off, where it must fail (strict xfail): that is
pysyncobj 0.3.17's own behaviour, so every test is shown to catch what its patch fixes.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import pickle
import shutil
import sqlite3
from typing import Any, Iterator

import pysyncobj
import pysyncobj.pickle as wire_pickle
import pytest
from pysyncobj.serializer import SERIALIZER_STATE

from node.replication import commands as c
from node.replication.raft import recovery_problem
from node.replication.syncobj import FAIL_REASON, patches
from node.replication.syncobj import journal as journal_module
from tests.sim.checks import holds, quiescent
from tests.sim.world import Crash, Message, World


def patched_and_upstream(name: str) -> Any:
    """Parametrize a test over the patch on, and off (where it must fail)."""
    return pytest.mark.parametrize(
        "patch",
        [
            pytest.param(name, id="patched"),
            pytest.param(
                name,
                id="upstream",
                marks=pytest.mark.xfail(
                    strict=True, reason=f"pysyncobj {patches.UPSTREAM_VERSION} without {name}"
                ),
            ),
        ],
        indirect=True,
    )


@pytest.fixture
def patch(request: pytest.FixtureRequest) -> Any:
    name = request.param
    on = request.node.callspec.id.startswith("patched")
    patches.ENABLED[name] = on
    yield name
    patches.ENABLED[name] = True


@contextlib.contextmanager
def started(tmp_path: Any, nodes: int = 3, fsync: bool = False, seed: int = 7) -> Iterator[World]:
    """A simulated cluster with every node started, closed afterwards."""
    w = World(str(tmp_path), nodes, seed=seed, fsync=fsync, compaction_entries=10_000)
    try:
        for name in w.nodes:
            w.start(name)
        yield w
    finally:
        w.close()


@pytest.fixture
def world(tmp_path: Any) -> Iterator[World]:
    with started(tmp_path) as w:
        yield w


def step(w: World) -> None:
    w.now += 0.05
    for name in w.nodes:
        w.tick(name)
    while w.network.queue:
        w.deliver(0)


def settle(w: World, seconds: float = 30.0) -> None:
    """Run a fault-free network until one leader holds every node in step with it."""
    deadline = w.now + seconds
    step(w)  # proposals wait in their node's queue until its next tick
    while not quiescent(w):
        assert w.now < deadline, "the cluster did not settle"
        step(w)


def leader(w: World) -> str:
    return next(n for n, node in w.nodes.items() if node.alive and node.raft.role == "leader")


def follower(w: World) -> str:
    return next(n for n, node in w.nodes.items() if node.alive and node.raft.role != "leader")


def propose(w: World, name: str, job_id: str) -> None:
    job = c.NewJob(job_id, 1, 0, hashlib.sha256(job_id.encode()).hexdigest(), w.now)
    w.propose(name, [c.encode(c.Enqueue((job,)))])


def commit(w: World, name: str, jobs: str) -> None:
    """Enqueue one job per letter through `name`, each committed everywhere before the next."""
    for job in jobs:
        propose(w, name, job)
        settle(w)


def last(w: World, name: str) -> int:
    return w.nodes[name].raft._logIndexes()[1]


def queued(w: World, src: str, dst: str, kind: str) -> list[Message]:
    return [m for m in w.network.queue if (m.src, m.dst, m.kind) == (src, dst, kind)]


def peer(w: World, of: str, name: str) -> Any:
    """pysyncobj's Node object for `name`, as node `of` knows it (its nextIndex and matchIndex
    tables are keyed by these)."""
    return w.nodes[of].raft._SyncObj__transport.peers[name]


def deliver_to(w: World, dst: str) -> None:
    for m in [m for m in w.network.queue if m.dst == dst]:
        w.deliver(w.network.queue.index(m))


def inject(w: World, src: str, dst: str, message: dict) -> None:
    w.sent(src, dst, message)
    w.deliver(len(w.network.queue) - 1)


@patched_and_upstream("append-conflict-only")
def test_a_late_append_never_shortens_a_log_the_follower_acknowledged(world, patch):
    w = world
    settle(w)
    lead, fol = leader(w), follower(w)
    propose(w, lead, "a")
    w.tick(lead)
    [early] = queued(w, lead, fol, "append_entries")
    settle(w)
    commit(w, lead, "bcd")
    acknowledged = last(w, fol)
    w.network.queue.append(early)  # the same append, delivered again late
    w.deliver(len(w.network.queue) - 1)
    assert last(w, fol) == acknowledged


@patched_and_upstream("ack-term-monotonic")
def test_a_late_success_ack_never_moves_next_index_back(world, patch):
    w = world
    settle(w)
    lead, fol = leader(w), follower(w)
    propose(w, lead, "a")
    w.tick(lead)
    deliver_to(w, fol)  # the follower acks "a"; the ack stays in flight
    propose(w, lead, "b")
    w.tick(lead)  # "b" goes out: nextIndex is past it
    follower_node = peer(w, lead, fol)
    sent_up_to = w.nodes[lead].raft._SyncObj__raftNextIndex[follower_node]
    [ack] = queued(w, fol, lead, "next_node_idx")
    w.deliver(w.network.queue.index(ack))
    assert w.nodes[lead].raft._SyncObj__raftNextIndex[follower_node] == sent_up_to


@patched_and_upstream("ack-term-monotonic")
def test_an_ack_of_an_earlier_term_counts_for_nothing(world, patch):
    w = world
    settle(w)
    lead, fol = leader(w), follower(w)
    raft = w.nodes[lead].raft
    follower_node = peer(w, lead, fol)
    before = raft._SyncObj__raftMatchIndex[follower_node]
    inject(
        w,
        fol,
        lead,
        {
            "type": "next_node_idx",
            "next_node_idx": before + 50,
            "reset": False,
            "success": True,
            "term": raft.raftCurrentTerm - 1,
        },
    )
    assert raft._SyncObj__raftMatchIndex[follower_node] == before


@patched_and_upstream("ack-term-monotonic")
def test_an_ack_of_an_earlier_term_never_makes_a_minority_commit(tmp_path, patch):
    """Five nodes. A follower acks entries of the leader's first term that a later leader
    then overwrites; when the first leader leads again, that old ack must not count the
    follower as holding the new entries at those indexes."""
    with started(tmp_path, nodes=5) as w:
        settle(w)
        first, fol = leader(w), follower(w)
        others = [n for n in w.nodes if n not in (first, fol)]
        w.partition({first, fol})  # only `fol` hears the leader
        for job in "abc":  # three entries: one a step
            propose(w, first, job)
            step(w)
        step(w)
        end = last(w, fol)
        assert last(w, first) == end
        stale = [
            m for m in w.network.history if (m.src, m.dst, m.kind) == (fol, first, "next_node_idx")
        ][-1]  # it vouches for ..end
        # Another node leads the next term, writing over "a".."c" on every node.
        second = others[0]
        elect(w, second)
        w.network.cut.clear()
        w._reconnect()
        settle(w)
        assert leader(w) == second and last(w, fol) < end
        # The first leader leads again, and appends up to `end` holding the rest off but one.
        w.stop(second)
        elect(w, first)
        w.partition({first, others[1]})
        while last(w, first) < end:
            propose(w, first, "d")
            step(w)
        # The old ack arrives (the link is back, nothing else reaches `fol` yet).
        w.network.cut.discard(frozenset((first, fol)))
        w._reconnect()
        w.network.queue.append(stale)
        w.deliver(len(w.network.queue) - 1)
        w.tick(first)
        raft = w.nodes[first].raft
        term = raft._SyncObj__getEntries(end, 1)[0][2]
        holders = [n for n, node in w.nodes.items() if node.alive and holds(node.raft, end, term)]
        assert len(holders) == 2 and raft.raftCommitIndex < end


def elect(w: World, name: str) -> None:
    """Let `name` stand (the others' timeouts far off) and step until it leads."""
    for n, node in w.nodes.items():
        if node.alive:
            node.raft._SyncObj__raftElectionDeadline = 0 if n == name else w.now + 100
    deadline = w.now + 10
    while w.nodes[name].raft.role != "leader":
        assert w.now < deadline, f"{name} was not elected"
        step(w)


@patched_and_upstream("snapshot-keeps-log")
def test_a_restart_between_writing_a_snapshot_and_trimming_keeps_later_entries(world, patch):
    w = world
    settle(w)
    lead, fol = leader(w), follower(w)
    commit(w, lead, "abc")
    raft = w.nodes[fol].raft
    raft.forceLogCompaction()
    w.tick(fol)  # the state is pinned
    w.tick(fol)  # and copied, after this tick's applies
    # The tick thread moves the snapshot into place; the process dies before it trims the log.
    assert raft._SyncObj__serializer.checkSerializing()[0] == SERIALIZER_STATE.SUCCESS
    for job in "def":
        propose(w, lead, job)
        w.tick(lead)
        deliver_to(w, fol)  # appended (and acknowledged) by the follower
    held = last(w, fol)
    w.stop(fol)  # the process dies before its next tick
    w.start(fol)
    assert last(w, fol) == held


@patched_and_upstream("journal-atomic-rewrite")
def test_a_crash_inside_a_journal_compaction_leaves_the_old_or_the_new_journal(tmp_path, patch):
    entries = [(f"cmd{i}".encode(), i, 1) for i in range(1, 31)]
    template = tmp_path / "template"
    journal = journal_module.FileJournal(str(template))
    for e in entries:
        journal.add(*e)
    journal._destroy()
    original = journal_module.ResizableFile.write
    outcomes = set()
    for budget in range(40):
        path = str(tmp_path / f"j{budget}")
        shutil.copy(template, path)
        left = [budget]

        def write(self: Any, offset: int, values: bytes, left: list[int] = left) -> None:
            left[0] -= 1
            if left[0] < 0:
                raise Crash("in a journal write")
            original(self, offset, values)

        journal = journal_module.FileJournal(path)
        journal_module.ResizableFile.write = write
        try:
            journal.deleteEntriesTo(10)
        except Crash:
            pass
        finally:
            journal_module.ResizableFile.write = original
            journal._destroy()
        reopened = journal_module.FileJournal(path)
        outcomes.add(tuple(reopened[i][1] for i in range(len(reopened))))
        reopened._destroy()
    assert outcomes <= {tuple(range(1, 31)), tuple(range(11, 31))}


@patched_and_upstream("snapshot-transfer-checked")
def test_a_snapshot_missing_a_chunk_is_not_installed(world, patch):
    w = world
    settle(w)
    lead = leader(w)
    fol = follower(w)
    w.stop(fol)
    for i in range(40):
        propose(w, lead, f"job{i}")
        step(w)
    raft = w.nodes[lead].raft
    raft._SyncObj__serializer._Serializer__transmissionBatchSize = 1024
    raft.forceLogCompaction()
    for _ in range(3):  # pinned, copied, then moved into place and the log trimmed
        step(w)
    assert raft._logIndexes()[0] > 1
    w.start(fol)
    snapshot = os.path.join(w.nodes[fol].cfg.data_dir, "raft.snapshot")
    dropped, installs = [], []
    deadline = w.now + 30
    while not quiescent(w):
        assert w.now < deadline, "the cluster did not settle"
        w.now += 0.05
        for name in w.nodes:
            w.tick(name)
        while w.network.queue:
            m = w.network.queue[0]
            chunk = None
            if m.kind == "append_entries" and m.dst == fol:
                chunk = wire_pickle.loads(m.data).get("serialized")
            if chunk and not dropped and not chunk[1] and not chunk[2]:  # a middle chunk
                dropped.append(w.network.queue.pop(0))  # lost with a connection
                continue
            w.deliver(0)
            if chunk and chunk[2] and os.path.exists(snapshot):  # the last chunk
                db = sqlite3.connect(snapshot)
                try:
                    installs.append(db.execute("PRAGMA integrity_check").fetchone()[0])
                except sqlite3.DatabaseError as e:
                    installs.append(str(e))
                finally:
                    db.close()
    assert dropped and installs
    assert set(installs) == {"ok"}


@patched_and_upstream("snapshot-not-ready-waits")
def test_a_leader_waiting_for_its_snapshot_sends_one_message_not_a_stream(world, patch):
    w = world
    settle(w)
    lead, fol = leader(w), follower(w)
    raft = w.nodes[lead].raft
    raft.forceLogCompaction()
    w.tick(lead)  # being written
    # As after the follower said it lacks everything:
    raft._SyncObj__raftNextIndex[peer(w, lead, fol)] = 1
    sent = []
    original = w.sent

    def count(src: str, dst: str, message: dict) -> None:
        sent.append(message["type"])
        if len(sent) > 1000:
            raise RuntimeError("a stream of messages")
        original(src, dst, message)

    w.sent = count
    raft._SyncObj__forceLogCompaction = False
    raft._SyncObj__serializer._Serializer__pid = -1  # still being written
    raft._SyncObj__sendAppendEntries()
    assert len(sent) <= 2


@patched_and_upstream("snapshot-consistent")
def test_no_snapshot_while_the_journal_is_replayed_behind_the_store(world, patch):
    w = world
    settle(w)
    lead, fol = leader(w), follower(w)
    commit(w, lead, "abcdef")
    w.stop(fol)
    meta = journal_module.MetaStorer(os.path.join(w.nodes[fol].cfg.data_dir, "raft.journal.meta"))
    meta.storeMeta({**meta.getMeta(), "raftCommitIndex": 3})  # as saved a second earlier
    w.start(fol)
    w.nodes[fol].raft.forceLogCompaction()
    w.tick(fol)  # replays up to 3 while state.db is at 8
    w.tick(fol)
    w.tick(fol)  # a snapshot started in the first tick is in place after the third
    snapshot = os.path.join(w.nodes[fol].cfg.data_dir, "raft.snapshot")
    if os.path.exists(snapshot):
        db = sqlite3.connect(snapshot)
        try:
            labelled = pickle.loads(db.execute("SELECT meta FROM raft_snapshot").fetchone()[0])[0][
                1
            ]
            (holds,) = db.execute(
                "SELECT value FROM counters WHERE name = 'last_applied'"
            ).fetchone()
        finally:
            db.close()
        assert holds <= labelled


@patched_and_upstream("request-ids-per-incarnation")
def test_an_answer_meant_for_a_command_sent_before_a_restart_is_not_taken_for_a_later_one(
    world, patch
):
    w = world
    settle(w)
    lead, fol = leader(w), follower(w)
    propose(w, fol, "before")
    w.tick(fol)  # forwarded to the leader
    deliver_to(w, lead)
    w.tick(lead)  # appended; the answer is on its way
    [answer] = queued(w, lead, fol, "apply_command_response")
    w.network.queue.remove(answer)
    w.stop(fol)
    w.start(fol)
    settle(w)  # the restarted follower knows the leader again
    propose(w, fol, "after")
    w.tick(fol)  # forwarded, numbered 1 again upstream
    # The late answer names an entry not applied yet here (as when the follower is behind).
    late = wire_pickle.loads(answer.data)
    late["log_idx"] = last(w, lead) + 1
    w.network.queue.append(Message(answer.src, answer.dst, wire_pickle.dumps(late), answer.kind))
    propose(w, lead, "filler")  # whatever lands at that index
    after = w.proposals[-2]
    deadline = w.now + 10
    while not after.done and w.now < deadline:
        step(w)
    assert after.done
    if after.error == FAIL_REASON.SUCCESS:
        assert after.result == [["after"]]


@patched_and_upstream("votes-counted-once")
def test_a_vote_that_arrives_twice_counts_once(tmp_path, patch):
    with started(tmp_path, nodes=5) as w:
        candidate, voter = list(w.nodes)[:2]
        raft = w.nodes[candidate].raft
        raft._SyncObj__raftElectionDeadline = 0  # its election timeout is up
        w.tick(candidate)
        assert raft.role == "candidate"
        [request] = queued(w, candidate, voter, "request_vote")
        w.deliver(w.network.queue.index(request))
        [vote] = queued(w, voter, candidate, "response_vote")
        w.deliver(w.network.queue.index(vote), keep=True)
        w.deliver(w.network.queue.index(vote))  # the same vote again
        assert raft.role == "candidate"  # two votes of five


def request_a_stale_vote(w, silent_for: float) -> Any:
    """A candidate whose log is behind asks a follower for its vote, after the follower heard
    no leader for `silent_for` seconds; its own election timeout is far off. The voter's raft."""
    settle(w)
    commit(w, leader(w), "a")
    voter = follower(w)
    candidate = next(n for n in w.nodes if n != voter)  # e.g. a node rejoining, log behind
    raft = w.nodes[voter].raft
    w.now += silent_for
    raft._SyncObj__raftElectionDeadline = w.now + 100
    inject(
        w,
        candidate,
        voter,
        {
            "type": "request_vote",
            "term": raft.raftCurrentTerm + 1,
            "last_log_index": 1,
            "last_log_term": 0,
        },
    )
    w.tick(voter)
    return raft


@patched_and_upstream("refusing-voter-stands")
def test_a_voter_ahead_of_the_candidate_stands_at_once_when_the_leader_is_silent(world, patch):
    # Silent for longer than the minimum election timeout.
    assert request_a_stale_vote(world, silent_for=0.5).role == "candidate"


def test_a_voter_that_heard_the_leader_lately_does_not_stand(world):
    assert request_a_stale_vote(world, silent_for=0).role == "follower"


@patched_and_upstream("fail-pending-on-new-term")
def test_a_proposal_pending_when_the_term_moves_on_fails_at_once(world, patch):
    w = world
    settle(w)
    lead = leader(w)
    others = [n for n in w.nodes if n != lead]
    for other in others:
        w.network.cut.add(frozenset((lead, other)))
    w._reconnect()
    propose(w, lead, "a")
    w.tick(lead)  # appended; no majority can answer
    proposal = w.proposals[-1]
    assert not proposal.done
    w.network.cut.clear()
    w._reconnect()
    raft = w.nodes[lead].raft
    inject(
        w,
        others[0],
        lead,
        {
            "type": "request_vote",
            "term": raft.raftCurrentTerm + 1,
            "last_log_index": last(w, lead),
            "last_log_term": 99,
        },
    )
    assert proposal.done and proposal.error == FAIL_REASON.UNKNOWN_OUTCOME


def test_with_fsync_on_a_follower_acknowledges_only_entries_on_its_disk(tmp_path):
    with started(tmp_path, fsync=True, seed=3) as w:
        settle(w)
        lead, fol = leader(w), follower(w)
        propose(w, lead, "a")
        w.tick(lead)
        deliver_to(w, fol)
        assert last(w, fol) > w.synced_last[fol]  # appended, not yet on disk
        assert not [m for m in queued(w, fol, lead, "next_node_idx")]
        w.tick(fol)  # one sync, then the acks
        [ack] = queued(w, fol, lead, "next_node_idx")
        assert w.synced_last[fol] == last(w, fol)


def test_a_node_whose_store_is_ahead_of_its_log_refuses_to_start(world):
    w = world
    settle(w)
    lead, fol = leader(w), follower(w)
    commit(w, lead, "abc")
    w.stop(fol)
    journal = journal_module.FileJournal(os.path.join(w.nodes[fol].cfg.data_dir, "raft.journal"))
    journal.deleteEntriesFrom(len(journal) - 2)  # the journal lost its tail
    journal._destroy()
    w.start(fol)
    assert not w.nodes[fol].alive
    assert "the Raft log ends at" in w.nodes[fol].refused
    assert "move its data directory aside" in w.nodes[fol].refused


@pytest.mark.parametrize(
    "applied, applied_term, snapshot, first, last, problem",
    [
        (0, 0, 1, 1, 1, None),  # a new node
        (40, 3, 1, 1, 45, None),  # replays 41..45
        (40, 3, 30, 29, 45, None),  # after a snapshot at 30
        (45, 3, 1, 1, 45, None),  # everything applied
        (46, 3, 1, 1, 45, "the Raft log ends at 45"),
        (40, 3, 1, 29, 45, "no snapshot covers"),
        (40, 2, 1, 1, 45, "holds an entry of term 3"),
        (40, 0, 1, 1, 45, None),  # a store written before terms were recorded
    ],
)
def test_start_up_check_of_the_store_against_the_log(
    applied, applied_term, snapshot, first, last, problem
):
    found = recovery_problem(applied, applied_term, snapshot, first, last, lambda i: 3)
    if problem is None:
        assert found is None
    else:
        assert problem in found


def test_the_patches_are_for_the_installed_pysyncobj():
    """The copies in node/replication/syncobj are pysyncobj 0.3.17's files plus the patches; another
    release needs them re-done (PATCHES.md says how)."""
    assert importlib.metadata.version("pysyncobj") == patches.UPSTREAM_VERSION
    here = os.path.dirname(pysyncobj.__file__)
    for name, digest in patches.UPSTREAM_SHA256.items():
        with open(os.path.join(here, name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest, name


def test_a_leader_handing_leadership_over_takes_no_new_entries_and_never_stands_again(world):
    w = world
    settle(w)
    lead = leader(w)
    raft = w.nodes[lead].raft
    answers = []
    raft.transfer_leadership(answers.append)
    w.tick(lead)  # runs on the tick: TimeoutNow is sent
    assert answers == [None]
    propose(w, lead, "late")
    w.tick(lead)
    assert w.proposals[-1].done and w.proposals[-1].error == FAIL_REASON.NOT_LEADER
    deadline = w.now + 5
    while raft.role == "leader" and w.now < deadline:
        step(w)
    settle(w)
    assert leader(w) != lead
    for other in w.nodes:  # the new leader goes quiet: it is not the old one
        if other != lead:
            w.network.cut.add(frozenset((lead, other)))
    w._reconnect()
    w.network.cut.clear()
    w._reconnect()
    w.now += 10  # far past every election timeout
    w.tick(lead)
    assert raft.role == "follower"


def test_proposals_queued_together_at_the_leader_share_one_entry(world):
    """The leader appends the proposals waiting in its queue, its own and those its followers
    forwarded, as one entry (SyncObjConf.groupCommands); each proposer still gets the result
    of its own command, and every node applies them all."""
    w = world
    settle(w)
    lead = leader(w)
    fol1, fol2 = [n for n in w.nodes if n != lead]
    before = last(w, lead)
    propose(w, fol1, "one")
    propose(w, fol2, "two")
    w.tick(fol1)
    w.tick(fol2)  # both forwarded to the leader
    deliver_to(w, lead)
    propose(w, lead, "three")
    w.tick(lead)
    assert last(w, lead) == before + 1
    settle(w)
    mine = w.proposals[-3:]
    assert all(p.done and p.error == FAIL_REASON.SUCCESS for p in mine)
    assert {p.node: p.result for p in mine} == {
        fol1: [["one"]],
        fol2: [["two"]],
        lead: [["three"]],
    }
    for node in w.nodes.values():
        assert [node.store.job(j)["status"] for j in ("one", "two", "three")] == ["queued"] * 3


def test_a_snapshot_written_while_entries_are_applied_holds_the_state_it_is_labelled_with(world):
    """The tick thread only pins the state (SQLite read transaction); the copy is written
    later, on another thread, while Raft applies more entries: it holds none of them, and the
    log is trimmed only once it is in place."""
    w = world
    settle(w)
    lead = leader(w)
    commit(w, lead, "abc")
    node = w.nodes[lead]
    raft = node.raft
    raft.forceLogCompaction()
    w.tick(lead)  # pinned
    pinned = raft.last_applied
    assert raft.last_snapshot["index"] == pinned and raft.last_snapshot["seconds"] == -1
    [job] = node.snapshots.jobs
    node.snapshots.jobs.clear()  # the copy is slow: two more entries are applied first
    commit(w, lead, "de")
    assert raft.last_applied > pinned and raft._logIndexes()[0] == 1
    node.snapshots.jobs.append(job)
    node.snapshots.run([job])
    w.tick(lead)  # moved into place, the log trimmed behind it
    db = sqlite3.connect(os.path.join(node.cfg.data_dir, "raft.snapshot"))
    try:
        (holds,) = db.execute("SELECT value FROM counters WHERE name = 'last_applied'").fetchone()
        ids = {row[0] for row in db.execute("SELECT id FROM jobs")}
        labelled = pickle.loads(db.execute("SELECT meta FROM raft_snapshot").fetchone()[0])[0][1]
    finally:
        db.close()
    assert holds == labelled == pinned
    assert {"a", "b", "c"} <= ids and not {"d", "e"} & ids
    assert node.store.job("e")["status"] == "queued"
    assert 1 < raft._logIndexes()[0] <= pinned
    last = raft.last_snapshot
    assert last["seconds"] >= 0 and last["pin_ms"] + last["install_ms"] > 0


def test_a_snapshot_being_written_when_the_leader_installs_a_newer_one_is_dropped(world):
    """A follower's own snapshot, still being copied when it installs one from the leader, must
    not be moved over the newer one afterwards, nor trim the log the install left."""
    w = world
    settle(w)
    lead, fol = leader(w), follower(w)
    commit(w, lead, "ab")
    node = w.nodes[fol]
    node.raft.forceLogCompaction()
    w.tick(fol)  # its own snapshot pinned; the copy is slow
    [stale] = node.snapshots.jobs
    node.snapshots.jobs.clear()
    own = node.raft.last_snapshot["index"]
    w.partition({fol})
    for job in "cdefgh":
        propose(w, lead, job)
        step(w)
    leading = w.nodes[lead].raft
    leading.forceLogCompaction()
    for _ in range(3):  # the leader's log now starts after entries the follower lacks
        step(w)
    assert leading._logIndexes()[0] > node.raft.last_applied + 1
    w.network.cut.clear()
    w._reconnect()
    deadline = w.now + 30
    while node.raft.last_applied < leading.last_applied:  # installs the leader's snapshot
        assert w.now < deadline, "the follower did not catch up"
        step(w)
    node.snapshots.jobs.append(stale)
    w.tick(fol)  # the stale copy completes
    w.tick(fol)
    settle(w)
    db = sqlite3.connect(os.path.join(node.cfg.data_dir, "raft.snapshot"))
    try:
        (holds,) = db.execute("SELECT value FROM counters WHERE name = 'last_applied'").fetchone()
    finally:
        db.close()
    assert holds > own
    assert [node.store.job(j)["status"] for j in "abcdefgh"] == ["queued"] * 8
    w.stop(fol)  # and it restarts from what it holds
    w.start(fol)
    assert w.nodes[fol].alive and not w.violations
