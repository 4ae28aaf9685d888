"""The patches this copy of pysyncobj 0.3.17 carries, by name (PATCHES.md describes each).

Nodes run with every patch on. Each can be switched off only so that the regression tests and
the cluster simulator (`python -m tests.sim --revert NAME`) can show that they catch its absence.
"""
UPSTREAM_VERSION = "0.3.17"
# The upstream files the copies were made from (checked by the tests against the installed ones).
UPSTREAM_SHA256 = {
    "syncobj.py": "e8bdf06797085d734df86e24ab4802fe87893dff77268565ec036f7ad4a1cfe4",
    "journal.py": "9cf1eaf6acc704581a4cf7d3de330a404403913107adc91c929778b7e3f35edf",
}

ENABLED = {
    # Follower: truncate the log only at a conflicting entry (Raft receiver rule 3), and
    # advance the commit index no further than the last entry the message vouched for.
    "append-conflict-only": True,
    # Leader: acks carry their term; an ack of another term is ignored, and a success ack
    # never moves nextIndex or matchIndex backwards.
    "ack-term-monotonic": True,
    # A snapshot whose last entry the log already holds keeps the log after it, both when a
    # follower installs one and when a node restarts between writing one and trimming.
    "snapshot-keeps-log": True,
    # Snapshot chunks carry their transfer and offset; a follower installs only a snapshot
    # whose chunks all arrived, in order, from one transfer.
    "snapshot-transfer-checked": True,
    # A leader whose snapshot is still being written tries again next tick instead of
    # sending empty snapshot messages in a loop.
    "snapshot-not-ready-waits": True,
    # Journal: compaction writes the kept entries to a new file and renames it into place,
    # so a crash in the middle leaves the old journal or the new one, never a prefix.
    "journal-atomic-rewrite": True,
    # No snapshot while the application's state is ahead of Raft's applied index (replaying
    # the journal after a restart): it would hold state beyond the entry it is labelled with.
    "snapshot-consistent": True,
    # A follower's forwarded commands are numbered per start of the node, so an answer meant
    # for a command sent before a restart is never taken for a later one.
    "request-ids-per-incarnation": True,
    # A candidate counts each voter's vote once, however often its answer arrives.
    "votes-counted-once": True,
    # A voter that refuses a candidate whose log is behind its own stands for election at
    # once, when it has not heard from a leader for an election timeout.
    "refusing-voter-stands": True,
    # Proposals waiting for commit on a node whose term moves on fail at once (outcome
    # unknown), instead of waiting until their index is applied or the caller times out.
    "fail-pending-on-new-term": True,
}


def on(name: str) -> bool:
    return ENABLED[name]
