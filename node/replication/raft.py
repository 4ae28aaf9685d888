"""The pysyncobj adapter: the Raft group, its snapshot format, its start-up check, and
nothing else.

Raft itself is pysyncobj 0.3.17 with the patches in `node/replication/syncobj` (PATCHES.md there). A
snapshot is a copy of `state.db` made with SQLite's backup API, with pysyncobj's own
bookkeeping (the last two log entries and the member set) stored in a table inside it. The
tick thread only pins the state to copy (a read transaction, between two applies); the copy is
written on a thread of its own while Raft goes on, and the log is trimmed once it is complete.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import pickle
import sqlite3
import time
from collections import deque
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Sequence

from pysyncobj.monotonic import monotonic as _monotonic

from node.config import NodeConfig
from node.replication import commands as c
from node.replication.state_machine import (
    MAX_BATCH,
    MAX_PROPOSAL_ITEMS,
    ApplyError,
    Result,
    StateMachine,
)
from node.replication.syncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated
from node.replication.syncobj import journal as _journal
from node.storage.store import PinnedState

log = logging.getLogger(__name__)

# The clock of pysyncobj's deadlines and response times (untyped there).
monotonic: Callable[[], float] = _monotonic

_ROLES = {0: "follower", 1: "candidate", 2: "leader"}
_FAILURES: dict[int, str] = {
    v: k.lower() for k, v in vars(FAIL_REASON).items() if not k.startswith("_") and k != "SUCCESS"
}


def failure(error: int) -> str | None:
    """None for pysyncobj's success code, else why it failed (its reason, lower case)."""
    if error == FAIL_REASON.SUCCESS:
        return None
    return _FAILURES.get(error, str(error))


class RecoveryError(Exception):
    """The store and the Raft log on disk disagree: starting would diverge from the peers."""


def recovery_problem(
    applied: int,
    applied_term: int,
    snapshot: int,
    first: int,
    last: int,
    term_at: Callable[[int], int | None],
) -> str | None:
    """Why a node cannot start whose store applied entry `applied` (of `applied_term`, 0 if
    unknown), whose snapshot covers entries up to `snapshot` (1: no snapshot) and whose Raft
    log holds entries `first`..`last`; None when it can.

    Raft applies the entries after the snapshot from the log, so the log must hold them all;
    an entry the store applied must be the one the log holds at that index, or a new leader's
    different entry there would be skipped as applied already."""
    if snapshot + 1 < first:
        return (
            f"the Raft log starts at entry {first}, but no snapshot covers the entries "
            f"before it (raft.snapshot is missing or older than the journal)"
        )
    if applied > last:
        return (
            f"state.db has applied Raft entries up to {applied}, but the Raft log ends at "
            f"{last}: the journal lost entries the store had applied (e.g. the machine "
            "lost power while --fsync was off, or raft.journal was replaced)"
        )
    if applied_term and applied >= first and term_at(applied) != applied_term:
        return (
            f"state.db applied entry {applied} of term {applied_term}, but the Raft log "
            f"holds an entry of term {term_at(applied)} there: the log was replaced or "
            "lost entries"
        )
    return None


RECOVERY_ADVICE = (
    "This node cannot rejoin with this data without risking a copy that differs from its "
    "peers. Stop it, move its data directory aside (keep it for analysis) and start it with an "
    "empty one: it rejoins under the same name and installs a snapshot from the leader. With "
    "the data directory moved, the cluster briefly has one replica fewer holding the latest "
    "entries; do it for one node at a time."
)


def raft_password(secret: str) -> str:
    """The Raft encryption password, derived so it differs from the internal bearer token."""
    return hmac.new(secret.encode(), b"raft-transport", hashlib.sha256).hexdigest()


class RaftNode(SyncObj):  # type: ignore[misc]  # SyncObj is untyped (Any)
    """One member of the Raft group. `transport_class` and `auto_tick=False` let the cluster
    simulator run several members in one thread on a simulated network.

    The rest of the node uses only the names defined in this class (is_leader, term,
    apply_batch, compact, close, ...), never pysyncobj's own: the layering test checks it."""

    # What this class reads of SyncObj, typed (annotations only: nothing is defined here).
    raftCurrentTerm: int
    raftCommitIndex: int
    raftLastApplied: int
    _applyingTerm: int  # the term of the entry being applied (node/replication/syncobj)

    if TYPE_CHECKING:

        def _isLeader(self) -> bool: ...

    def __init__(
        self,
        cfg: NodeConfig,
        machine: StateMachine,
        *,
        auto_tick: bool = True,
        transport_class: Any = None,
        snapshot_executor: Executor | None = None,
    ):
        self._machine = machine
        self._fsync = cfg.fsync == "on"
        self._snapshot_file = os.path.join(cfg.data_dir, "raft.snapshot")
        # Snapshots are copied here, off the tick thread (the simulator passes its own).
        self._snapshots = snapshot_executor or ThreadPoolExecutor(1, thread_name_prefix="snapshot")
        self._snapshot: tuple[Future[None], PinnedState] | None = None
        # The last snapshot this node took: Raft index, when, how long the tick thread was
        # held for it (pinning, then moving it into place) and how long until it was in place.
        self.last_snapshot: dict[str, float] | None = None
        heartbeat = min(0.1, cfg.raft_min_timeout / 4)
        conf = SyncObjConf(
            autoTick=auto_tick,
            fsync=cfg.fsync == "on",
            password=raft_password(cfg.secret),
            journalFile=os.path.join(cfg.data_dir, "raft.journal"),
            fullDumpFile=self._snapshot_file,
            serializer=self._dump,
            deserializer=self._load,
            # Send entries as soon as they are proposed: batching them every
            # appendEntriesPeriod instead costs ~150 ms per enqueue here.
            appendEntriesUseBatch=False,
            # pysyncobj splits an entry larger than this into chunks and mislabels the
            # last chunk ("pickle data was truncated"); entries stay far below it.
            appendEntriesBatchSizeBytes=4 << 20,
            commandsWaitLeader=True,
            # The leader appends the proposals queued together (its own and its followers')
            # as one entry: as many as fit the positions an entry has.
            groupCommands=MAX_BATCH // MAX_PROPOSAL_ITEMS,
            logCompactionMinEntries=cfg.log_compaction_entries,
            raftMinTimeout=cfg.raft_min_timeout,
            raftMaxTimeout=cfg.raft_max_timeout,
            # Heartbeats well inside the election timeout (pysyncobj requires 3x at least).
            appendEntriesPeriod=heartbeat,
            # A restarted peer is dialled again within a heartbeat. pysyncobj's default, 5 s,
            # leaves it cut off from the node whose turn it is to connect for longer than an
            # election timeout: it stands for election and deposes a working leader.
            connectionRetryTime=heartbeat,
            onStateChanged=self._state_changed,
        )
        extra = {"transportClass": transport_class} if transport_class is not None else {}
        self._tick_jobs: deque[Callable[[], None]] = deque()
        super().__init__(cfg.raft, [p.raft for p in cfg.peers], conf, **extra)
        self.addOnTickCallback(self._run_tick_jobs)

    def _run_tick_jobs(self) -> None:
        while self._tick_jobs:
            self._tick_jobs.popleft()()

    def transfer_leadership(self, callback: Callable[[str | None], None]) -> None:
        """Ask the most caught-up follower to take leadership over (Raft TimeoutNow).

        Runs on the tick thread, which owns pysyncobj's state and sockets; `callback(None)` is
        called there once the request was sent, `callback(why)` if it was refused. The node then
        stands for election no more (it is stopping): a refusing voter standing at once, or its
        own timeout, would otherwise take leadership back from the successor."""

        def transfer() -> None:
            self._retiring = True
            self.transferLeadership(callback=lambda _, error: callback(failure(error)))

        self._tick_jobs.append(transfer)

    def propose(
        self,
        batch: list[c.Wire],
        callback: Callable[[Sequence[Result | ApplyError] | None, str | None], None],
    ) -> None:
        """Append `batch` to the log; `callback(results, None)` once it is applied here, or
        `callback(None, why)` if it was not committed. Called back on the tick thread."""
        self.apply_batch(batch, callback=lambda result, error: callback(result, failure(error)))

    @replicated  # type: ignore[untyped-decorator]  # adds the keyword `callback`
    def apply_batch(self, batch: list[c.Wire]) -> Sequence[Result | ApplyError] | None:
        # pysyncobj increments raftLastApplied after this returns: this entry's index is +1.
        return self._machine.apply(self.raftLastApplied + 1, batch, self._applyingTerm)

    def _applyGroup(
        self, calls: list[tuple[Any, tuple[list[c.Wire]], dict[str, Any]]]
    ) -> list[Sequence[Result | ApplyError] | None]:
        """Apply a group entry (several proposals, see `groupCommands`) in one transaction:
        the state machine knows an entry by its index, which all of them share."""
        batches = []
        for method, args, _ in calls:
            if getattr(method, "origName", None) != "apply_batch":  # set by @replicated
                raise TypeError(f"a group entry holds a call of {method!r}")
            batches.append(args[0])
        results = self._machine.apply(
            self.raftLastApplied + 1, [w for batch in batches for w in batch], self._applyingTerm
        )
        out: list[Sequence[Result | ApplyError] | None] = []
        at = 0
        for batch in batches:
            out.append(None if results is None else results[at : at + len(batch)])
            at += len(batch)
        return out

    def _doDestroy(self) -> None:
        super()._doDestroy()
        self._snapshots.shutdown(wait=False, cancel_futures=True)
        if self._snapshot is not None and self._snapshot[0].cancelled():
            self._snapshot[1].release()  # never started: its read transaction is still open

    def _canSnapshotAt(self, index: int) -> bool:
        # While the journal is replayed after a restart the store is ahead of Raft's applied
        # index: a snapshot then would hold state beyond the entry it is labelled with.
        return self._machine.counts["last_applied"] <= index

    def _onRecovered(self) -> None:
        """Refuse to start when the store and the recovered Raft log disagree."""
        counts = self._machine.counts
        first, last = self._logIndexes()
        problem = recovery_problem(
            counts["last_applied"],
            counts["last_applied_term"],
            self.raftLastApplied,
            first,
            last,
            self._logTerm,
        )
        if problem is not None:
            self._doDestroy()
            raise RecoveryError(f"{problem}. {RECOVERY_ADVICE}")

    def compact(self) -> None:
        """Write a snapshot and trim the log now, whatever its length."""
        self.forceLogCompaction()

    def close(self) -> None:
        """Leave the group: stop ticking, close connections and the journal."""
        self.destroy()

    # --- status, read without locks from other threads (plain attribute reads) ---------

    def is_leader(self) -> bool:
        return self._isLeader()

    @property
    def term(self) -> int:
        return self.raftCurrentTerm

    @property
    def commit_index(self) -> int:
        return self.raftCommitIndex

    @property
    def last_applied(self) -> int:
        return self.raftLastApplied

    @property
    def role(self) -> str:
        return _ROLES.get(getattr(self, "_SyncObj__raftState", 0), "unknown")

    @property
    def leader(self) -> str | None:
        node = self._getLeader()
        return node.id if node is not None else None

    @property
    def leader_commit_index(self) -> int | None:
        return getattr(self, "_SyncObj__leaderCommitIndex", None)

    def leader_has_majority(self, within: float) -> bool:
        """As leader: did a majority (this node included) answer in the last `within` seconds?

        Reads pysyncobj's per-follower last response times, the same data its own
        leaderFallbackTimeout uses; TCP connection state alone stays "connected" for tens of
        seconds after a network partition."""
        responses = dict(getattr(self, "_SyncObj__lastResponseTime", {}))
        now = monotonic()
        answered = 1 + sum(1 for t in responses.values() if now - t <= within)
        return answered > (len(self.otherNodes) + 1) / 2

    def hears_leader(self) -> bool:
        """As follower: did a heartbeat from the leader arrive within the election timeout?

        pysyncobj starts no election while it is connected to no peer at all, so a follower
        whose peers are all gone keeps naming its last leader; this tells it apart."""
        deadline: float = getattr(self, "_SyncObj__raftElectionDeadline", 0)
        return deadline > monotonic()

    def heard_leader_within(self, seconds: float) -> bool:
        """As follower: did an append-entries message from a leader arrive in the last
        `seconds`? (The leader it came from may since have handed over.)"""
        heard: float = getattr(self, "_SyncObj__lastLeaderContact", 0.0)
        return monotonic() - heard <= seconds

    def _state_changed(self, old: int, new: int) -> None:
        log.info(
            "raft role %s -> %s (term %d)", _ROLES.get(old), _ROLES.get(new), self.raftCurrentTerm
        )

    # --- snapshots ---------------------------------------------------------------------

    def _dump(self, path: str, raft_meta: tuple[Any, ...]) -> Future[None]:
        """Start a snapshot (called on the tick thread, between applies): pin the state as
        of the last applied entry and write it to `path` in the background; the Future
        resolves once the file is complete (and synced, with fsync on)."""
        started = time.perf_counter()
        pinned = self._machine.store.pin()
        future = self._snapshots.submit(self._write_snapshot, path, pinned, raft_meta, started)
        self._snapshot = (future, pinned)
        pin_ms = (time.perf_counter() - started) * 1000
        self.last_snapshot = {
            "index": pinned.applied,
            "at": time.time(),
            "pin_ms": pin_ms,
            "install_ms": 0.0,
            "seconds": -1.0,  # until it is in place
        }
        return future

    def _onSnapshotInstalled(self, seconds: float) -> None:
        last = self.last_snapshot
        if last is None:
            return
        self._snapshots.submit(_remove, self._snapshot_file + ".previous")
        last["install_ms"] = seconds * 1000
        last["seconds"] = time.time() - last["at"]
        log.info(
            "Raft snapshot at applied index %d in place after %.2fs (writing it took %.2fs); "
            "Raft's thread was held for %.1f ms",
            last["index"],
            last["seconds"],
            last.get("write_seconds", 0.0),
            last["pin_ms"] + last["install_ms"],
        )

    def _write_snapshot(
        self, path: str, pinned: PinnedState, raft_meta: tuple[Any, ...], started: float
    ) -> None:
        _remove(path)
        pinned.copy_to(path)
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE raft_snapshot (meta BLOB NOT NULL)")
            db.execute("INSERT INTO raft_snapshot VALUES (?)", (pickle.dumps(raft_meta),))
        db.close()
        if self._fsync:
            # Synced here, so that the sync the tick thread makes before trimming the log
            # (PATCHES.md, fsync) finds nothing left to write.
            fd = os.open(path, os.O_RDONLY)
            try:
                _journal.disk.sync_file(fd, path)
            finally:
                os.close(fd)
        # The tick thread moves this file over the previous snapshot; freeing a large file's
        # blocks there would hold it for tens of milliseconds (40 ms for 150 MB on ext4), so
        # the previous one keeps a second name until it is removed in the background.
        previous = self._snapshot_file + ".previous"
        _remove(previous)
        try:
            os.link(self._snapshot_file, previous)
        except FileNotFoundError:
            pass  # the first snapshot
        last = self.last_snapshot
        if last is not None and last["index"] == pinned.applied:
            last["write_seconds"] = time.perf_counter() - started

    def _load(self, path: str) -> tuple[Any, ...]:
        """Read a snapshot: at start-up (our own) or when the leader installs one.

        The store is replaced only when the snapshot is newer than what it holds, so a restart
        keeps the live database (and its payloads) and replays the journal on top of it."""
        store = self._machine.store
        with sqlite3.connect(path) as db:
            meta: tuple[Any, ...] = pickle.loads(
                db.execute("SELECT meta FROM raft_snapshot").fetchone()[0]
            )
            (snap_applied,) = db.execute(
                "SELECT value FROM counters WHERE name = 'last_applied'"
            ).fetchone()
        db.close()
        live_applied = store.last_applied()
        if snap_applied > live_applied:
            log.info("installing Raft snapshot: applied index %d -> %d", live_applied, snap_applied)
            store.restore_from(path)
            with store.engine.begin() as conn:
                conn.exec_driver_sql("DROP TABLE IF EXISTS raft_snapshot")
            self._machine.reload()
            if self._machine.on_applied is not None:
                self._machine.on_applied(None)
        return meta


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
