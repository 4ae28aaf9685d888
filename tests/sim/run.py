"""Schedules: what happens at each step of a simulated run, drawn from a seed, and the run
itself: the steps, a check after each, then healing and the final checks.

Step i's choices come from its own random source (seed, i), so dropping steps from a schedule
leaves the others as they were: a failing schedule shrinks by removing steps and replaying.
"""

from __future__ import annotations

import gc
import hashlib
import os
import random
import re
import shutil
import tempfile
from dataclasses import dataclass, field

from node.replication import commands as c
from tests.sim.checks import check_healed, check_step, quiescent
from tests.sim.world import World, digest

NODES = (3, 3, 3, 5)  # cluster sizes a seed draws from
HEAL_SECONDS = 120.0  # virtual time allowed to converge once every fault is lifted
MAX_IN_FLIGHT = 300  # beyond this, the oldest messages are delivered first
RETAIN = 1_000_000  # finished jobs kept: none are trimmed in a run


@dataclass
class Outcome:
    seed: int
    steps: list[int]
    violations: list[str] = field(default_factory=list)
    failed_at: int | None = None  # the step after which the first violation was seen
    acknowledged: int = 0
    fingerprint: str = ""  # what was committed and answered, to compare two runs


def world_options(seed: int, fsync: str | None, nodes: int | None) -> tuple[bool, int, int]:
    """Drawn from the seed unless given: fsync on or off, the compaction threshold, and how
    many nodes."""
    r = random.Random(f"{seed}:world")
    drawn = r.random() < 0.5  # drawn even when given, so the draws after it stay put
    on = drawn if fsync is None else fsync == "on"
    compaction = r.choice([10, 12, 16, 24])
    n = r.choice(NODES)
    return on, compaction, n if nodes is None else nodes


def actions(seed: int, i: int, fsync: bool, nodes: int) -> list[tuple]:
    """The actions of step `i`: time passes, maybe a fault, maybe a client, messages move, and
    every live node ticks."""
    r = random.Random(f"{seed}:{i}")
    names = [f"127.0.0.1:{9001 + k}" for k in range(nodes)]
    out: list[tuple] = [("advance", r.choice((0.005, 0.02, 0.05, 0.1, 0.1, 0.2, 0.4)))]
    roll = r.random()
    node = r.choice(names)
    if roll < 0.025:
        out.append(("crash", node))
    elif roll < 0.04 and fsync:
        out.append(("power", node))
    elif roll < 0.10:
        out.append(("restart", node))
    elif roll < 0.11:
        out.append(("cut", node, r.choice([n for n in names if n != node])))
    elif roll < 0.12:
        out.append(("partition", tuple(sorted(r.sample(names, (nodes - 1) // 2)))))
    elif roll < 0.15:
        out.append(("mend",))
    elif roll < 0.20:
        out.append(("compact", node))
    elif roll < 0.22:
        out.append(("crash-in-write", node, r.randint(0, 6)))
    if r.random() < 0.35:
        out.append(("propose", r.choice(names), r.randrange(1 << 30)))
    for _ in range(r.randint(0, 8)):
        op = r.random()
        pos = r.random() ** 3  # mostly old messages; now and then a recent one first
        if op < 0.78:
            out.append(("deliver", pos))
        elif op < 0.84:
            out.append(("drop", pos))
        elif op < 0.90:
            out.append(("duplicate", pos))
        else:
            out.append(("delay", r.random(), r.randint(10, 200)))
    out.append(("tick", tuple(r.sample(names, len(names)))))
    if r.random() < 0.1:
        # An old message arrives again: an ack or vote of an earlier term, a stale append.
        out.insert(-1, ("replay", r.random()))
    return out


def make_batch(world: World, seed: int, token: int) -> list:
    """One proposal, as a node's proposer would make it: 1-3 commands in one entry."""
    r = random.Random(token)
    known = world.job_ids
    batch = []
    for k in range(r.randint(1, 3)):
        kind = r.choice(
            ("enqueue", "enqueue", "enqueue", "lease", "complete", "requeue", "workers")
        )
        if kind == "enqueue" or not known:
            jobs = []
            for j in range(r.randint(1, 3)):
                job_id = f"j{seed}-{token}-{k}-{j}"
                key = f"key{r.randrange(8)}" if r.random() < 0.2 else None
                jobs.append(
                    c.NewJob(
                        job_id,
                        r.randint(1, 1000),
                        r.randint(0, 1 << 16),
                        hashlib.sha256(job_id.encode()).hexdigest(),
                        world.now,
                        key,
                    )
                )
                known.append(job_id)
            cmd: c.Command = c.Enqueue(tuple(jobs))
        elif kind == "lease":
            cmd = c.Lease("w1", tuple(r.sample(known, min(len(known), 3))), world.now)
        elif kind == "complete":
            ids = r.sample(known, min(len(known), 2))
            cmd = c.Complete(
                tuple((i, hashlib.sha512(i.encode()).hexdigest()) for i in ids), world.now, RETAIN
            )
        elif kind == "requeue":
            ids = r.sample(known, min(len(known), 2))
            cmd = c.Requeue(tuple((i, 1) for i in ids), "lease expired", 3, world.now, RETAIN)
        else:
            cmd = c.Workers((("w1", "{}", world.now),))
        batch.append(c.encode(cmd))
    return batch


def perform(world: World, seed: int, action: tuple) -> None:
    if action[0] in ("propose", "deliver", "drop", "duplicate", "delay", "replay", "tick"):
        _traffic(world, seed, action)
    else:
        _fault(world, action)


def _fault(world: World, action: tuple) -> None:
    """Time passing, crashes and restarts, network cuts, compactions."""
    kind = action[0]
    net = world.network
    if kind == "advance":
        world.now += action[1]
    elif kind == "crash":
        world.stop(action[1])
    elif kind == "power":
        world.stop(action[1], power=True)
    elif kind == "restart":
        world.start(action[1])
    elif kind == "cut":
        net.cut.add(frozenset(action[1:]))
        world._reconnect()
    elif kind == "partition":
        world.partition(set(action[1]))
    elif kind == "mend":
        net.cut.clear()
        world._reconnect()
    elif kind == "compact":
        node = world.nodes[action[1]]
        if node.alive:
            node.raft.forceLogCompaction()
    elif kind == "crash-in-write":
        if world.nodes[action[1]].alive:
            world.write_budget[action[1]] = action[2]


def _traffic(world: World, seed: int, action: tuple) -> None:
    """Proposals, and messages delivered, dropped, duplicated, delayed or replayed."""
    kind = action[0]
    net = world.network
    if kind == "propose":
        node = world.nodes[action[1]]
        if node.alive:
            world.propose(action[1], make_batch(world, seed, action[2]))
    elif kind in ("deliver", "drop", "duplicate", "delay"):
        if net.queue:
            i = int(action[1] * len(net.queue))
            if kind == "drop":
                net.queue.pop(i)
            elif kind == "delay":
                net.delayed.append((world.step + action[2], net.queue.pop(i)))
            else:
                world.deliver(i, keep=kind == "duplicate")
    elif kind == "replay":
        if net.history:
            net.queue.append(net.history[int(action[1] * len(net.history))])
    elif kind == "tick":
        while len(net.queue) > MAX_IN_FLIGHT:
            world.deliver(0)
        for name in action[1]:
            world.tick(name)


def heal(world: World) -> bool:
    """Lift every fault, then run a fault-free network until the cluster is quiescent."""
    world.network.cut.clear()
    world.network.release(1 << 62)
    world.write_budget.clear()
    for name in world.nodes:
        world.start(name)
    world._reconnect()
    deadline = world.now + HEAL_SECONDS
    while world.now < deadline:
        world.now += 0.05
        for name in world.nodes:
            world.tick(name)
        while world.network.queue:
            world.deliver(0)
        if quiescent(world):
            return True
    return False


def run(seed: int, steps: list[int], fsync: str | None = None, nodes: int | None = None) -> Outcome:
    """Run the schedule of `seed` restricted to `steps`; stop at the first violation.

    Python's cycle collector is off while a schedule runs (and the heap collected before):
    collections in the middle of a run, freeing objects of earlier runs in the same process,
    changed what a schedule did, so a seed failed only after certain other seeds."""
    on, compaction, n = world_options(seed, fsync, nodes)
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    root = tempfile.mkdtemp(prefix="wq-sim-", dir=shm)
    out = Outcome(seed, steps)
    gc.collect()
    collecting = gc.isenabled()
    gc.disable()
    world = World(root, n, seed, on, compaction)
    try:
        for name in world.nodes:
            world.start(name)
        for i in steps:
            world.step = i
            world.network.release(i)
            for action in actions(seed, i, on, n):
                perform(world, seed, action)
            found = world.violations + check_step(world)
            if found:
                out.violations, out.failed_at = found, i
                return out
        if not heal(world):
            out.violations = [
                "the cluster did not converge within "
                f"{HEAL_SECONDS:.0f} s of virtual time after healing"
            ]
        else:
            out.violations = world.violations + check_step(world) + check_healed(world)
        out.acknowledged = sum(1 for p in world.proposals if p.done and p.error == 0)
        return out
    finally:
        out.fingerprint = digest(
            (
                sorted(world.committed.items()),
                world.now,
                world.step,
                [(p.done, p.error, p.result) for p in world.proposals],
            )
        )
        world.close()
        shutil.rmtree(root, ignore_errors=True)
        if collecting:
            gc.enable()


def kind(violation: str) -> str:
    """A violation without its numbers and names: what shrinking must keep failing with."""
    return re.sub(r"\bn\d\b|\d+", "#", violation)[:60]


def shrink(
    seed: int, steps: list[int], fsync: str | None, nodes: int | None, budget: int = 80
) -> list[int]:
    """The shortest sub-schedule failing the same way that a bounded delta-debugging search
    finds (`budget` replays at most)."""
    failing = steps
    first = run(seed, failing, fsync, nodes)
    if not first.violations:
        return failing
    wanted = kind(first.violations[0])
    if first.failed_at is not None:
        failing = [i for i in failing if i <= first.failed_at]
    chunk = max(1, len(failing) // 2)
    tries = 0
    while chunk >= 1 and tries < budget:
        i, progress = 0, False
        while i < len(failing) and tries < budget:
            candidate = failing[:i] + failing[i + chunk :]
            tries += 1
            result = run(seed, candidate, fsync, nodes)
            if candidate and result.violations and kind(result.violations[0]) == wanted:
                failing = candidate
                if result.failed_at is not None:
                    failing = [s for s in failing if s <= result.failed_at]
                progress = True
            else:
                i += chunk
        if not progress:
            chunk //= 2
    return failing


def describe(seed: int, steps: list[int], fsync: str | None, nodes: int | None) -> list[str]:
    on, _, n = world_options(seed, fsync, nodes)
    names = {f"127.0.0.1:{9001 + k}": f"n{k}" for k in range(n)}

    def show(a: tuple) -> str:
        return " ".join(
            names.get(x, f"{x:.3g}" if isinstance(x, float) else str(x))
            if not isinstance(x, tuple)
            else ",".join(names.get(y, y) for y in x)
            for x in a
        )

    return [f"step {i}: " + "; ".join(show(a) for a in actions(seed, i, on, n)) for i in steps]
