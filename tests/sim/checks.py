"""Raft's safety properties, checked on the simulated world after every step, and what must
hold once the world has healed."""

from __future__ import annotations

import sqlite3
from typing import Any

from node.replication.syncobj import FAIL_REASON
from tests.sim.world import World, digest

STATE_TABLES = ("jobs", "idempotency", "workers", "counters")


def log_entries(raft: Any) -> list[tuple[bytes, int, int]]:
    first, _ = raft._logIndexes()
    return raft._SyncObj__getEntries(first)


def check_step(world: World) -> list[str]:
    """Election safety, a leader's commits held by a majority, and that committed entries are
    never changed or removed."""
    found: list[str] = []
    for name, node in world.nodes.items():
        raft = node.raft
        if raft is None:
            continue
        if raft.role == "leader":
            term = raft.raftCurrentTerm
            leader = world.leaders.setdefault(term, name)
            if leader != name:
                found.append(
                    f"two leaders in term {term}: {world.nodes[leader].name} and {node.name}"
                )
            found += check_quorum(world, name)
        entries = log_entries(raft)
        last = entries[-1][1]
        commit = min(raft.raftCommitIndex, last)
        held = world.held.get(name, 0)
        for command, index, term in entries:
            if index > max(commit, held):
                break  # not known committed here: a lagging node may hold a stale entry
            known = world.committed.setdefault(index, (term, command))
            if known != (term, command):
                found.append(
                    f"{node.name} holds at index {index} an entry (term {term}) other "
                    f"than the committed one (term {known[0]})"
                )
        if last < held:
            found.append(
                f"{node.name} lost committed entries: its log ends at {last}, but it "
                f"held committed entries up to {held}"
            )
        world.held[name] = max(held, commit)
    return found


def check_quorum(world: World, leader: str) -> list[str]:
    """The entry at the leader's commit index is held by a majority of the nodes (checked
    once per new commit index; a node that is down counts as holding it)."""
    raft = world.nodes[leader].raft
    index, key = raft.raftCommitIndex, (raft.raftCurrentTerm, leader)
    if world.quorum_checked.get(key, 0) >= index:
        return []
    world.quorum_checked[key] = index
    entry = raft._SyncObj__getEntries(index, 1)
    if not entry:
        return []
    term = entry[0][2]
    holders = sum(holds(node.raft, index, term) for node in world.nodes.values())
    if 2 * holders > len(world.nodes):
        return []
    return [
        f"{world.nodes[leader].name} counts entry {index} (term {term}) committed, but "
        f"only {holders} of {len(world.nodes)} nodes hold it"
    ]


def holds(raft: Any, index: int, term: int) -> bool:
    if raft is None:
        return True
    first, last = raft._logIndexes()
    if index < first:
        return True  # in its snapshot
    entry = raft._SyncObj__getEntries(index, 1) if index <= last else []
    return bool(entry) and entry[0][2] == term


def quiescent(world: World) -> bool:
    """One leader, every node holding and having applied the leader's whole log."""
    leaders = [n.raft for n in world.nodes.values() if n.alive and n.raft.role == "leader"]
    if len(leaders) != 1 or world.network.queue:
        return False
    leader = leaders[0]
    target = leader._logIndexes()[1]
    if leader.raftCommitIndex != target:
        return False
    return all(
        n.alive
        and n.raft._logIndexes()[1] == target
        and n.raft.raftCommitIndex == target
        and n.raft.raftLastApplied == target
        for n in world.nodes.values()
    )


def dump_state(path: str) -> dict[str, list[tuple]]:
    db = sqlite3.connect(path)
    try:
        return {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall()) for t in STATE_TABLES}
    finally:
        db.close()


def check_healed(world: World) -> list[str]:
    """Every store identical; every acknowledged proposal applied."""
    found: list[str] = []
    dumps = {node.name: dump_state(node.store.state_path) for node in world.nodes.values()}
    names = sorted(dumps)
    for other in names[1:]:
        for table in STATE_TABLES:
            if dumps[other][table] != dumps[names[0]][table]:
                found.append(f"stores differ: table {table} of {other} is not that of {names[0]}")
    jobs = {row[0] for row in dumps[names[0]]["jobs"]}
    for p in world.proposals:
        if p.done and p.error == FAIL_REASON.SUCCESS:
            if not all(digest(wire) in world.applied_commands for wire in p.batch):
                found.append(
                    f"an acknowledged proposal through {world.nodes[p.node].name} was never applied"
                )
            for wire, result in zip(p.batch, p.result or (), strict=False):
                if wire[0] == "enqueue" and isinstance(result, list):
                    for job, job_id in zip(wire[1], result, strict=False):
                        # The job made, or the one its key names; never another command's.
                        if isinstance(job_id, str) and job[5] is None and job_id != job[0]:
                            found.append(
                                f"a proposal through {world.nodes[p.node].name} got the result "
                                f"of another command ({job_id} for job {job[0]})"
                            )
                        if isinstance(job_id, str) and job_id not in jobs:
                            found.append(f"acknowledged job {job_id} is missing from the stores")
    return found
