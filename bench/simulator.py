"""A virtual-clock model of the cluster's workers, to replay workload traces against a scaling
policy: the real `node.scaling.policy.decide` or a baseline with the same signature.

Every `tick` seconds (the leader's scaling loop runs every second) the policy sees a Snapshot
and answers how many workers to start and the idle timeout. A started worker works after
`boot_delay` seconds at `speed` iterations per second, takes the oldest queued job whenever it
is free and spends `overhead` seconds on each job besides its iterations (leasing it, reading
its payload, reporting its result), and leaves once it has been idle for the idle timeout last
handed out. A worker is billed from launch to exit.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

from node.scaling.policy import Decision, Limits, Snapshot, Worker

Policy = Callable[[Snapshot, Limits], Decision]
ARRIVAL_WINDOW = 1800.0


@dataclass
class SimWorker:
    launched: float
    up_at: float
    job: list | None = None  # [remaining seconds, arrival time]
    idle_since: float | None = None
    exited: float | None = None


@dataclass
class Result:
    launches: int = 0
    worker_seconds: float = 0.0
    waits: list[float] = field(default_factory=list)
    unfinished: int = 0

    def percentile(self, q: float) -> float:
        if not self.waits:
            return 0.0
        ordered = sorted(self.waits)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

    def row(self) -> dict:
        return {
            "launches": self.launches,
            "worker_seconds": round(self.worker_seconds),
            "wait_p50": round(self.percentile(0.50), 1),
            "wait_p95": round(self.percentile(0.95), 1),
            "wait_max": round(max(self.waits, default=0.0), 1),
            "unfinished": self.unfinished,
        }


def simulate(
    trace: Sequence[tuple[float, int]],
    policy: Policy,
    limits: Limits,
    *,
    boot_delay: float,
    speed: float,
    overhead: float = 0.0,
    tick: float = 1.0,
    drain_limit: float = 4 * 3600.0,
) -> Result:
    """Replay `trace` ((arrival time, iterations), sorted by time) and measure the outcome."""
    result = Result()
    queue: deque[list] = deque()  # [iterations, arrival time]
    workers: list[SimWorker] = []
    arrivals: deque[tuple[float, int]] = deque()
    launch_times: deque[float] = deque()
    timeout = limits.max_idle
    end = trace[-1][0] if trace else 0.0
    i, now = 0, 0.0
    while True:
        nxt = now + tick
        # Arrivals of this tick join the queue in time order.
        while i < len(trace) and trace[i][0] < nxt:
            queue.append([trace[i][1], trace[i][0]])
            arrivals.append(trace[i])
            i += 1
        for w in workers:
            if w.exited is None:
                _work(w, queue, now, nxt, speed, overhead, result)
        for w in workers:
            if (
                w.exited is None
                and w.job is None
                and w.idle_since is not None
                and nxt - w.idle_since >= timeout
            ):
                w.exited = w.idle_since + timeout
        now = nxt
        while arrivals and now - arrivals[0][0] > ARRIVAL_WINDOW:
            arrivals.popleft()
        while launch_times and now - launch_times[0] > 60:
            launch_times.popleft()
        live = [w for w in workers if w.exited is None]
        running = sum(max(0.0, w.job[0] - overhead) * speed for w in live if w.job)
        backlog = sum(q[0] for q in queue) + running
        snapshot = Snapshot(
            now=now,
            queued_jobs=len(queue),
            backlog_iterations=int(backlog),
            oldest_wait=(now - queue[0][1]) if queue else 0.0,
            workers=tuple(
                Worker(
                    busy=w.job is not None,
                    booting=now < w.up_at,
                    speed=speed,
                    overhead=overhead,
                )
                for w in live
            ),
            arrivals=tuple(arrivals),
            recent_launches=tuple(launch_times),
        )
        decision = policy(snapshot, limits)
        timeout = decision.idle_timeout
        for _ in range(decision.start):
            workers.append(SimWorker(launched=now, up_at=now + boot_delay))
            launch_times.append(now)
            result.launches += 1
        done = i >= len(trace) and not queue and all(w.job is None for w in live)
        if (done and not live) or now > end + drain_limit:
            break
    result.unfinished = len(queue) + sum(1 for w in workers if w.exited is None and w.job)
    for w in workers:
        result.worker_seconds += (w.exited if w.exited is not None else now) - w.launched
    return result


def _work(
    w: SimWorker,
    queue: deque,
    start: float,
    stop: float,
    speed: float,
    overhead: float,
    result: Result,
) -> None:
    """Advance one worker through [start, stop): finish and take jobs as time allows."""
    cursor = max(start, w.up_at)
    if cursor >= stop:
        return
    if w.idle_since is None and w.job is None:
        w.idle_since = cursor
    while cursor < stop:
        if w.job is None:
            if not queue or queue[0][1] >= stop:
                return
            iterations, arrived = queue.popleft()
            begin = max(cursor, arrived)
            result.waits.append(begin - arrived)
            w.job, w.idle_since = [iterations / speed + overhead, arrived], None
            cursor = begin
        finish = cursor + w.job[0]
        if finish <= stop:
            cursor = finish
            w.job, w.idle_since = None, cursor
        else:
            w.job[0] -= stop - cursor
            cursor = stop


def hindsight_bound(trace: Sequence[tuple[float, int]], speed: float, overhead: float) -> dict:
    """A lower bound no policy can beat: every worker-second spent on jobs, no waiting."""
    return {
        "launches": None,
        "worker_seconds": round(sum(it / speed + overhead for _, it in trace)),
        "wait_p50": 0.0,
        "wait_p95": 0.0,
        "wait_max": 0.0,
        "unfinished": 0,
    }
