"""The simulated world: N real Raft nodes (the project's `RaftNode` on the patched pysyncobj,
its `StateMachine` and SQLite `Store`) in one thread, on a simulated network, clock and disk.

Nothing here reimplements Raft: the nodes are the production classes with `autoTick=False`,
ticked by the simulator; pysyncobj's clock and random source are replaced by the world's, and
its transport by `SimTransport`, which hands pickled messages to `Network` instead of sockets.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable

import pysyncobj.pickle as wire_pickle
from pysyncobj.transport import Transport

from node.config import NodeConfig, Peer
from node.replication.raft import RaftNode, RecoveryError
from node.replication.state_machine import StateMachine
from node.replication.syncobj import journal as journal_module
from node.replication.syncobj import syncobj as syncobj_module
from node.storage.store import Store

RAFT_FILES = ("raft.journal", "raft.journal.meta", "raft.snapshot")
SECRET = "simulated-cluster-secret"


class Crash(BaseException):
    """Raised inside a node's journal write to cut its process off at that exact point.

    A BaseException, so that no `except Exception` in the code under test swallows it."""


class Flood(BaseException):
    """Raised when a node sends more messages in one call than any tick should."""


HISTORY = 2000  # sent messages a replay may pick from
FLOOD = 5000  # messages one node may send while handling one tick or message


def digest(value: Any) -> str:
    return hashlib.sha256(repr(value).encode()).hexdigest()[:16]


@dataclass
class Message:
    src: str
    dst: str
    data: bytes  # pickled as pysyncobj's TCP transport would send it
    kind: str


class Network:
    """Messages in flight, in send order. The schedule picks which one moves next; a delayed
    message waits aside until the step it is released at; a replayed one is sent again from
    the history of recent messages, long after it was first delivered."""

    def __init__(self) -> None:
        self.queue: list[Message] = []
        self.delayed: list[tuple[int, Message]] = []
        # Recently sent messages, any of which may arrive again much later (a replay).
        self.history: deque[Message] = deque(maxlen=HISTORY)
        self.cut: set[frozenset[str]] = set()  # links that are down (partitions)

    def release(self, step: int) -> None:
        due = [m for at, m in self.delayed if at <= step]
        self.delayed = [(at, m) for at, m in self.delayed if at > step]
        self.queue.extend(due)

    def linked(self, a: str, b: str) -> bool:
        return frozenset((a, b)) not in self.cut


class SimTransport(Transport):
    """pysyncobj's transport interface over `Network`: always ready, never blocks."""

    def __init__(self, world: World, syncObj: Any, selfNode: Any, otherNodes: Any):
        super().__init__(syncObj, selfNode, otherNodes)
        self.world = world
        self.me = selfNode.id
        self.peers = {n.id: n for n in otherNodes}

    def tryGetReady(self) -> None:
        pass

    @property
    def ready(self) -> bool:
        return True

    def waitReady(self) -> None:
        pass

    def addNode(self, node: Any) -> None:
        self.peers[node.id] = node

    def dropNode(self, node: Any) -> None:
        self.peers.pop(node.id, None)

    def send(self, node: Any, message: Any) -> bool:
        self.world.sent(self.me, node.id, message)
        return True

    def destroy(self) -> None:
        pass


class SimDisk(journal_module.Disk):
    """What survives a power cut: each Raft file's content as of its last sync (a file's own,
    or its directory's after a rename). SQLite files are left to SQLite and kept whole."""

    def __init__(self, world: World):
        self.world = world
        self.durable: dict[str, bytes | None] = {}

    def sync_file(self, fd: int, path: str) -> None:
        path = os.path.abspath(path)
        self._keep(path)
        if path.endswith("raft.journal"):
            self.world.journal_synced(path)

    def sync_dir(self, path: str) -> None:
        # Called after renaming a synced file to `path`: the rename is now durable too.
        self.sync_file(-1, path)

    def _keep(self, path: str) -> None:
        if os.path.basename(path) in RAFT_FILES:
            try:
                with open(path, "rb") as f:
                    self.durable[path] = f.read()
            except FileNotFoundError:
                self.durable[path] = None

    def cut_power(self, data_dir: str) -> None:
        for name in RAFT_FILES:
            path = os.path.abspath(os.path.join(data_dir, name))
            content = self.durable.get(path)
            if content is None:
                if os.path.exists(path):
                    os.remove(path)
            else:
                with open(path, "wb") as f:
                    f.write(content)


class RecordingMachine(StateMachine):
    """The project's state machine, reporting every entry it is handed (replays included)."""

    def __init__(self, store: Store, on_entry: Callable[[int, int, list], None]):
        super().__init__(store)
        self._on_entry = on_entry

    def apply(self, index: int, batch: list, term: int = 0) -> list | None:
        self._on_entry(index, term, batch)
        return super().apply(index, batch, term)


class LaterTick:
    """A node's snapshot thread, simulated: work submitted during one tick runs at the end of
    the node's next tick, after the entries that tick applied, as a copy on a thread of its own
    finishes while Raft goes on. A Crash inside it ends the node's process."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Future, Callable[..., Any], tuple]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future:
        future: Future = Future()
        self.jobs.append((future, fn, args))
        return future

    def run(self, jobs: list[tuple[Future, Callable[..., Any], tuple]]) -> None:
        for job in jobs:
            self.jobs.remove(job)
            future, fn, args = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except Exception as e:
                    future.set_exception(e)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        for future, _, _ in self.jobs:
            future.cancel()
        self.jobs.clear()


@dataclass
class SimNode:
    name: str
    cfg: NodeConfig
    raft: RaftNode | None = None
    store: Store | None = None
    refused: str | None = None  # why the node refused to start, if it did
    snapshots: LaterTick | None = None

    @property
    def alive(self) -> bool:
        return self.raft is not None


@dataclass
class Proposal:
    node: str
    batch: list
    result: Any = None
    error: Any = None
    done: bool = False


class World:
    def __init__(self, root: str, n: int, seed: int, fsync: bool, compaction_entries: int):
        self.root = root
        self.now = 1000.0
        self.fsync = fsync
        self.raft_random = random.Random(seed)
        self.network = Network()
        self.disk = SimDisk(self)
        self.current: str | None = None  # the node whose code is running
        self.sent_in_call = 0
        self.step = 0  # the schedule's step under way
        self.write_budget: dict[str, int] = {}  # journal writes left before a node crashes
        # What the checks accumulate (see checks.py).
        self.applied: dict[int, tuple[int, str, str]] = {}  # index -> (term, digest, first node)
        # Every command applied: an entry may carry several proposals (the leader groups them).
        self.applied_commands: set[str] = set()
        self.committed: dict[int, tuple[int, bytes]] = {}  # index -> (term, command)
        self.held: dict[str, int] = {}  # committed entries each node must still hold
        self.quorum_checked: dict[tuple[int, str], int] = {}  # (term, leader) -> commit index
        self.synced_last: dict[str, int] = {}  # last log index at each node's last journal sync
        self.leaders: dict[int, str] = {}  # term -> leader
        self.proposals: list[Proposal] = []
        self.job_ids: list[str] = []  # every job id proposed so far
        self.violations: list[str] = []
        names = [f"127.0.0.1:{9001 + i}" for i in range(n)]
        self.nodes: dict[str, SimNode] = {}
        for i, name in enumerate(names):
            cfg = NodeConfig(
                node_id=f"n{i}",
                raft=name,
                http=f"127.0.0.1:{8001 + i}",
                peers=tuple(Peer(p, f"http://{p}") for p in names if p != name),
                data_dir=os.path.join(root, f"n{i}"),
                secret=SECRET,
                log_compaction_entries=compaction_entries,
                fsync="on" if fsync else "off",
            )
            self.nodes[name] = SimNode(f"n{i}", cfg)
        self._install()

    # --- pysyncobj's view of the world ---------------------------------------------------

    def _install(self) -> None:
        """Point pysyncobj's clock, random source and disk at this world, and count its
        journal writes (to crash a node in the middle of one); `close` undoes it."""
        self._saved = (
            syncobj_module.monotonicTime,
            syncobj_module.random,
            journal_module.disk,
            journal_module.ResizableFile.write,
        )
        original_write = journal_module.ResizableFile.write
        world = self

        def write(self_file: Any, offset: int, values: bytes) -> None:
            if world.current is not None and world.current in world.write_budget:
                world.write_budget[world.current] -= 1
                if world.write_budget[world.current] < 0:
                    raise Crash(world.current)
            original_write(self_file, offset, values)

        syncobj_module.monotonicTime = lambda: self.now
        syncobj_module.random = self.raft_random
        journal_module.disk = self.disk
        journal_module.ResizableFile.write = write

    def close(self) -> None:
        """Stop every node and give pysyncobj its own clock, random source and disk back."""
        for node in self.nodes.values():
            if node.alive:
                self._destroy(node)
        (
            syncobj_module.monotonicTime,
            syncobj_module.random,
            journal_module.disk,
            journal_module.ResizableFile.write,
        ) = self._saved

    def sent(self, src: str, dst: str, message: dict) -> None:
        self.sent_in_call += 1
        if self.sent_in_call > FLOOD:
            raise Flood(src)
        sent = Message(src, dst, wire_pickle.dumps(message), message["type"])
        self.network.queue.append(sent)
        self.network.history.append(sent)
        serialized = message.get("serialized")
        if serialized and serialized[1]:  # the first chunk of a snapshot transfer
            self._check_snapshot_needed(src, dst)

    def _check_snapshot_needed(self, src: str, dst: str) -> None:
        """A leader sends a snapshot only to a follower it does not know to hold the entries
        after it: installing one it did not need is wasted work at best."""
        raft = self.nodes[src].raft
        match = raft._SyncObj__raftMatchIndex.get(raft._SyncObj__transport.peers[dst], 0)
        first = raft._logIndexes()[0]
        if match >= first:
            self.violations.append(
                f"{self.nodes[src].name} sends {self.nodes[dst].name} a snapshot of entries up "
                f"to {first}, knowing it holds entries up to {match}"
            )

    def journal_synced(self, journal_path: str) -> None:
        for name, node in self.nodes.items():
            if (
                os.path.abspath(os.path.join(node.cfg.data_dir, "raft.journal")) == journal_path
                and node.raft is not None
            ):
                self.synced_last[name] = node.raft._logIndexes()[1]

    # --- nodes -----------------------------------------------------------------------------

    def start(self, name: str) -> None:
        node = self.nodes[name]
        if node.alive:
            return
        os.makedirs(node.cfg.data_dir, exist_ok=True)
        node.store = Store(node.cfg.data_dir)
        machine = RecordingMachine(node.store, lambda i, t, b, n=name: self._entry(n, i, t, b))
        world = self

        class Bound(SimTransport):
            def __init__(self, syncObj: Any, selfNode: Any, otherNodes: Any):
                super().__init__(world, syncObj, selfNode, otherNodes)

        self.current = name
        try:
            node.snapshots = LaterTick()
            node.raft = RaftNode(
                node.cfg,
                machine,
                auto_tick=False,
                transport_class=Bound,
                snapshot_executor=node.snapshots,
            )
        except RecoveryError as e:
            node.store.close()
            node.store = None
            node.refused = str(e)
            self.violations.append(f"{node.name} refused to start: {e}")
            return
        finally:
            self.current = None
        journal = os.path.abspath(os.path.join(node.cfg.data_dir, "raft.journal"))
        with open(journal, "rb") as f:
            if not self.fsync or f.read() == self.disk.durable.get(journal):
                self.synced_last[name] = node.raft._logIndexes()[1]
        self._reconnect()

    def stop(self, name: str, power: bool = False) -> None:
        node = self.nodes[name]
        if not node.alive:
            return
        self._destroy(node)
        if power:
            self.disk.cut_power(node.cfg.data_dir)
            # Only what was synced survives: entries acknowledged since are gone from disk.
            self.held[name] = min(self.held.get(name, 0), self.synced_last.get(name, 0))
        self.write_budget.pop(name, None)
        self.network.queue = [m for m in self.network.queue if m.dst != name]
        self._reconnect()

    def _destroy(self, node: SimNode) -> None:
        raft = node.raft
        node.raft = None
        notifier = getattr(raft, "_SyncObj__pipeNotifier", None)
        raft._doDestroy()
        if notifier is not None:
            for fd in (notifier._PipeNotifier__pipeR, notifier._PipeNotifier__pipeW):
                os.close(fd)
        node.store.close()
        node.store = None

    def partition(self, side: set[str]) -> None:
        """Cut every link between the nodes in `side` and the others."""
        self.network.cut.update(
            frozenset((a, b)) for a in side for b in self.nodes if b not in side
        )
        self._reconnect()

    def _reconnect(self) -> None:
        """Tell every live node which peers it is connected to (as TCP would)."""
        for name, node in self.nodes.items():
            if not node.alive:
                continue
            transport = node.raft._SyncObj__transport
            for peer, peer_node in transport.peers.items():
                up = self.nodes[peer].alive and self.network.linked(name, peer)
                connected = node.raft.isNodeConnected(peer_node)
                if up and not connected:
                    transport._onNodeConnected(peer_node)
                elif not up and connected:
                    transport._onNodeDisconnected(peer_node)

    def run_node(self, name: str, fn: Callable[[], Any]) -> None:
        """Run `fn` as node `name`'s code; a `Crash` raised inside ends the node's process."""
        self.current = name
        self.sent_in_call = 0
        try:
            fn()
        except Crash:
            pass  # the node stops below (also when code under test swallowed it)
        except Flood:
            self.violations.append(
                f"{self.nodes[name].name} sent over {FLOOD} messages in one tick or message"
            )
            self.stop(name)
        finally:
            self.current = None
            if self.write_budget.get(name, 0) < 0:
                self.stop(name)

    def tick(self, name: str) -> None:
        node = self.nodes[name]
        if node.alive:
            assert node.snapshots is not None
            earlier = list(node.snapshots.jobs)  # those of this tick wait for the next
            raft, snapshots = node.raft, node.snapshots

            def tick() -> None:
                raft.doTick()
                snapshots.run(earlier)

            self.run_node(name, tick)

    def deliver(self, i: int, keep: bool = False) -> None:
        if not self.network.queue:
            return
        i %= len(self.network.queue)
        m = self.network.queue[i] if keep else self.network.queue.pop(i)
        dst = self.nodes[m.dst]
        # A message may still arrive after its sender died (or restarted): Raft must cope.
        if not dst.alive or not self.network.linked(m.src, m.dst):
            return
        transport = dst.raft._SyncObj__transport
        sender = transport.peers.get(m.src)
        if sender is None:
            return
        message = wire_pickle.loads(m.data)
        self.run_node(m.dst, lambda: transport._onMessageReceived(sender, message))

    # --- clients ---------------------------------------------------------------------------

    def propose(self, name: str, batch: list) -> None:
        node = self.nodes[name]
        if not node.alive:
            return
        p = Proposal(name, batch)
        self.proposals.append(p)

        def done(result: Any, error: Any) -> None:
            p.result, p.error, p.done = result, error, True

        self.run_node(name, lambda: node.raft.apply_batch(batch, callback=done))

    # --- what the checks observe -----------------------------------------------------------

    def _entry(self, name: str, index: int, term: int, batch: list) -> None:
        d = digest(batch)
        known = self.applied.get(index)
        if known is None:
            self.applied[index] = (term, d, self.nodes[name].name)
            self.applied_commands.update(digest(wire) for wire in batch)
        elif known[:2] != (term, d):
            self.violations.append(
                f"{self.nodes[name].name} applies entry {index} (term {term}, {d}) but "
                f"{known[2]} applied a different one there (term {known[0]}, {known[1]})"
            )
