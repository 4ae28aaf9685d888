"""The scaling policy: pure functions of a snapshot of the cluster and `now`.

Scale-up follows AWS's guidance for queue-driven scaling: compare the backlog per worker with
what a worker can drain within the acceptable latency. Here the backlog is measured in work,
not jobs, because jobs differ in size by orders of magnitude. A job costs a worker its
iterations at the worker's speed plus a fixed overhead (leasing it, reading its payload,
reporting its result), so many tiny jobs are work too:

    work_seconds = backlog_iterations / speed + queued_jobs * job_overhead
    needed = ceil(work_seconds / target_drain_seconds)

Workers measure both their speed and their overhead per job and report them with every poll;
the limits' defaults stand in for a worker that has not measured yet.

Workers that are still booting count as capacity already on its way, so the policy never
launches twice for the same backlog. A launch only helps if the backlog would still be there
when the new worker is up: when the current workers drain it before a new one could finish
booting, nothing is started (this is what keeps slow-booting EC2 workers from being launched
for short bursts). Launches are bounded by `max_workers` across the cluster and by a launch
rate limit.

The idle timeout (how long a worker with no work waits before it exits) is a ski-rental
decision. Keeping an idle worker for `t` seconds costs `t`
worker-seconds; letting it go and starting another later costs its boot time again, plus the
queue wait while it boots. Break-even is `idle_cost_ratio * start_cost` seconds. If recent
arrivals come in bursts whose gaps are shorter than what keeping a worker costs, workers wait
out the typical gap (so the next burst finds them); if gaps are longer, or arrivals are steady
(no gaps worth bridging), workers leave after the break-even time, which is short for local
processes and long for EC2.

One idle timeout, three stages: a worker starts with `--worker-idle-timeout` (the backends pass
it on); once the leader has decided, `adaptive_idle_timeout` gives the policy's value; and what
a worker is told (`idle_timeout_told`) is that value, or none while the pool is at its
minimum, so the minimum never leaves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Worker:
    busy: bool
    booting: bool = False
    speed: float | None = None  # measured iterations per second; None until measured
    overhead: float | None = None  # measured seconds per job besides computing; None until then


@dataclass(frozen=True)
class Snapshot:
    now: float
    queued_jobs: int
    backlog_iterations: int  # remaining iterations of queued and running jobs
    oldest_wait: float  # seconds the oldest queued job has waited
    workers: tuple[Worker, ...]  # live and booting workers, cluster-wide
    arrivals: tuple[tuple[float, int], ...]  # (enqueue time, iterations) in the recent window
    recent_launches: tuple[float, ...] = ()  # launch times within the last minute


# A local worker's time per job besides computing, measured with 20,000 one-iteration jobs
# queued for one worker (`python -m bench overhead`).
JOB_OVERHEAD = 0.0006


@dataclass(frozen=True)
class Limits:
    min_workers: int = 0
    max_workers: int = 4
    target_drain_seconds: float = 30.0  # acceptable time to drain the backlog
    start_cost: float = 1.0  # seconds from launch to a working worker
    default_speed: float = 500_000.0  # iterations/s assumed for an unmeasured worker
    # Seconds a worker spends on a job besides its iterations, assumed until workers measure
    # it (`python -m bench overhead` measures it on this machine).
    job_overhead: float = JOB_OVERHEAD
    max_launches_per_minute: int = 20
    idle_cost_ratio: float = 2.0  # break-even idle time, in units of start_cost
    min_idle: float = 5.0
    max_idle: float = 1800.0
    burst_gap: float = 2.0  # arrivals closer than this belong to one burst
    rate_window: float = 20.0  # seconds of arrivals that set the arrival rate


# Acceptable drain time when none is configured: short where a worker starts in a moment,
# about a boot time where it takes tens of seconds (a shorter target would only buy launches
# that arrive after the backlog is gone).
DEFAULT_TARGET = {"local": 5.0, "ec2": 30.0}


@dataclass(frozen=True)
class Decision:
    start: int
    idle_timeout: float
    reason: str


def fleet_speed(workers: tuple[Worker, ...], default_speed: float) -> tuple[float, int]:
    """(iterations/s of the workers that are up, number of workers that are up)."""
    up = [w for w in workers if not w.booting]
    return sum(w.speed or default_speed for w in up), len(up)


def job_overhead(workers: tuple[Worker, ...], default: float) -> float:
    """Seconds per job besides computing: the mean the workers measured, else `default`."""
    measured = [w.overhead for w in workers if w.overhead is not None and not w.booting]
    return sum(measured) / len(measured) if measured else default


def workers_needed(s: Snapshot, lim: Limits) -> int:
    """Workers that drain the backlog within the target and keep up with the arrival rate
    (before the bounds)."""
    if s.backlog_iterations <= 0 and s.queued_jobs == 0:
        return 0
    overhead = job_overhead(s.workers, lim.job_overhead)
    backlog = s.backlog_iterations / lim.default_speed + s.queued_jobs * overhead
    for_backlog = math.ceil(backlog / lim.target_drain_seconds)
    recent = [it for t, it in s.arrivals if s.now - t <= lim.rate_window]
    arriving = sum(recent) / lim.default_speed + len(recent) * overhead  # work-s per window
    for_rate = math.ceil(arriving / lim.rate_window)
    needed = max(for_backlog, for_rate)
    # Never more workers than jobs to run, never none while jobs wait.
    return max(1, min(needed, s.queued_jobs + sum(1 for w in s.workers if w.busy)))


def launches(s: Snapshot, lim: Limits) -> tuple[int, str]:
    total = len(s.workers)
    booting = sum(1 for w in s.workers if w.booting)
    if total < lim.min_workers:
        return _bounded(lim.min_workers - total, s, lim), f"below the minimum of {lim.min_workers}"
    if s.queued_jobs == 0:
        return 0, "nothing queued"
    needed = workers_needed(s, lim)
    if total >= needed:
        return 0, f"{total} workers ({booting} booting) cover the backlog"
    speed, up = fleet_speed(s.workers, lim.default_speed)
    overhead = job_overhead(s.workers, lim.job_overhead)
    drain = s.backlog_iterations / speed + s.queued_jobs * overhead / up if up else math.inf
    if up and booting == 0 and drain <= lim.start_cost:
        return 0, f"the {up} workers drain the backlog in {drain:.1f}s, before a new one boots"
    return (
        _bounded(needed - total, s, lim),
        f"backlog needs {needed} workers (drain {drain:.0f}s with {up} up, target "
        f"{lim.target_drain_seconds:.0f}s)",
    )


def _bounded(want: int, s: Snapshot, lim: Limits) -> int:
    room = lim.max_workers - len(s.workers)
    budget = lim.max_launches_per_minute - sum(1 for t in s.recent_launches if s.now - t < 60)
    return max(0, min(want, room, budget))


def burst_gaps(arrivals: tuple[tuple[float, int], ...], burst_gap: float) -> list[float]:
    """The quiet gaps between bursts of arrivals (gaps shorter than burst_gap are in-burst)."""
    times = [t for t, _ in arrivals]
    return [b - a for a, b in zip(times, times[1:], strict=False) if b - a > burst_gap]


def adaptive_idle_timeout(s: Snapshot, lim: Limits) -> float:
    """How long a worker may wait for work before it leaves (see the module docstring)."""
    break_even = lim.idle_cost_ratio * lim.start_cost
    gaps = sorted(burst_gaps(s.arrivals, lim.burst_gap))
    timeout = break_even
    if len(gaps) >= 2:
        typical = gaps[min(len(gaps) - 1, int(0.9 * len(gaps)))]  # 90th percentile gap
        # Bridge the gap if waiting it out costs less than a relaunch and its queue wait.
        if typical <= break_even + lim.start_cost * (1 + lim.idle_cost_ratio):
            timeout = max(timeout, typical * 1.1)
    return min(lim.max_idle, max(lim.min_idle, timeout))


def decide(s: Snapshot, lim: Limits) -> Decision:
    start, reason = launches(s, lim)
    return Decision(start, adaptive_idle_timeout(s, lim), reason)


def idle_timeout_told(live: int, min_workers: int, idle: float) -> float | None:
    """The idle timeout handed to a worker; None (stay) while the pool is at its minimum."""
    return None if 0 < min_workers and live <= min_workers else idle
