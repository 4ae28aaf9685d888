"""Scaling rules the policy is compared with, in the policy's own signature."""

from __future__ import annotations

from dataclasses import replace

from node.scaling.policy import Decision, Limits, Snapshot, decide


def ours(s: Snapshot, lim: Limits) -> Decision:
    return decide(s, lim)


def iterations_only(s: Snapshot, lim: Limits) -> Decision:
    """Our policy sizing the pool by iterations alone, blind to each job's overhead."""
    workers = tuple(replace(w, overhead=None) for w in s.workers)
    return decide(replace(s, workers=workers), replace(lim, job_overhead=0.0))


def fixed_60s(s: Snapshot, lim: Limits) -> Decision:
    """One worker per queued or running job, each leaving after 60 s without work."""
    busy = sum(1 for w in s.workers if w.busy)
    want = min(lim.max_workers, s.queued_jobs + busy)
    return Decision(max(0, want - len(s.workers)), 60.0, "one worker per job, 60 s idle")


def ten_minutes(s: Snapshot, lim: Limits) -> Decision:
    """Add a worker whenever the oldest job has waited 15 s; workers leave after 10 minutes."""
    start = 1 if s.oldest_wait >= 15 and len(s.workers) < lim.max_workers else 0
    return Decision(start, 600.0, "oldest waited 15 s, 10 min idle")


POLICIES = {
    "ours": ours,
    "iterations-only": iterations_only,
    "fixed-60s": fixed_60s,
    "10-min/15s": ten_minutes,
}
