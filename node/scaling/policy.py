"""The worker-count rule, as pure functions of what the leader sees.

Simple on purpose: one worker per job that is queued or running, between the configured
minimum and maximum. Workers leave on their own after an idle timeout, except that the
minimum is never asked to leave.
"""
from __future__ import annotations


def desired_workers(queued: int, running: int, min_workers: int, max_workers: int) -> int:
    """How many workers should exist for this backlog."""
    return max(min_workers, min(max_workers, queued + running))


def workers_to_start(desired: int, live: int, starting: int) -> int:
    """New workers to launch, counting the ones already starting so it never overshoots."""
    return max(0, desired - live - starting)


def idle_timeout_for(live: int, min_workers: int, idle_timeout: float) -> float | None:
    """The idle timeout handed to workers; None (stay) while the pool is at its minimum."""
    return None if 0 < min_workers and live <= min_workers else idle_timeout
