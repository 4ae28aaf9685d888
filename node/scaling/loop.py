"""The leader's scaling loop: gather a snapshot, ask the policy, drive the backend.

Workers are counted cluster-wide: every worker that polled the leader recently (the roster,
which a new leader inherits through the Raft log), plus every worker the backend sees running
that has not registered yet (booting). A worker the backend runs that is neither registered
nor younger than the boot timeout (it never came up, or it stopped polling) is terminated, so
nothing is left running and billing.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections import Counter, deque
from typing import Any, Awaitable, Callable, TypedDict

from node.scaling.backends.base import Backend
from node.scaling.policy import Decision, Limits, Snapshot, Worker, decide
from node.scheduling.roster import Roster

log = logging.getLogger(__name__)

ARRIVAL_WINDOW = 1800.0
# After a leader change, workers of the previous leader re-register within a few seconds (all
# their long-polls break with it); the new leader launches and terminates nothing before then.
ADOPTION_GRACE = 5.0
# After workers in a row never registered (a broken image or package, no route to the
# managers), launches wait BOOT_BACKOFF * 2**(failures - 1), at most BOOT_BACKOFF_CAP; the
# first worker that registers ends the wait.
BOOT_BACKOFF = 60.0
BOOT_BACKOFF_CAP = 1800.0
# Of the workers terminated at once for never registering, this many have their boot log read.
BOOT_LOGS_READ = 3
STEP_INTERVAL = 1.0
SCALE_SOON_INTERVAL = 0.2


class ScalingStep(TypedDict):
    """A scaling step the dashboard lists: when, what it started, what it saw and why."""

    at: float
    started: int
    queued: int
    live: int
    booting: int
    reason: str
    idle_timeout: float


class Scaler:
    def __init__(self, backend: Backend, roster: Roster, limits: Limits, boot_timeout: float):
        self.backend = backend
        self.roster = roster
        self.limits = limits
        self.boot_timeout = boot_timeout
        self.arrivals: deque[tuple[float, int]] = deque(maxlen=100_000)
        self.launch_times: deque[float] = deque()
        self.decision: Decision | None = None
        self.launches = 0
        self.booting = 0
        self.actions: Counter[str] = Counter()  # scaling steps by what they did
        # Decisions that started workers or changed kind, newest last (for the dashboard).
        self.recent: deque[ScalingStep] = deque(maxlen=20)
        self._seen_running: set[str] = set()
        self._grace_until = 0.0
        self._registered: set[str] = set()  # running workers seen live at least once
        self.boot_failures = 0  # workers in a row that never registered
        self.retry_at = 0.0  # no launch before this, after boot failures

    def became_leader(self, now: float) -> None:
        self._grace_until = now + ADOPTION_GRACE
        self.launch_times.clear()

    def jobs_arrived(self, jobs: list[tuple[float, int]], now: float) -> bool:
        """Record (enqueue time, iterations) of newly committed jobs. True when no worker is
        up or booting to take them: then a step is worth running now, not at the next tick."""
        self.arrivals.extend(jobs)
        return self.booting == 0 and not self.roster.live(now)

    def current_idle_timeout(self, default: float) -> float:
        """The last decision's idle timeout; `default` until there is one."""
        return self.decision.idle_timeout if self.decision is not None else default

    def step(
        self,
        now: float,
        queued: int,
        backlog_iterations: int,
        oldest_queued_at: float | None,
        busy: set[str],
    ) -> Decision:
        """One pass. Blocking (backend calls): run it off the event loop."""
        while self.arrivals and now - self.arrivals[0][0] > ARRIVAL_WINDOW:
            self.arrivals.popleft()
        while self.launch_times and now - self.launch_times[0] > 60:
            self.launch_times.popleft()
        running = self.backend.running()
        for gone in self._seen_running - set(running):
            self.roster.forget(gone)  # exited or terminated: no need to wait out its ttl
        self._seen_running = set(running)
        # Workers holding a lease in the replicated state are live even before they report here.
        live = self.roster.live(now)
        live.update({w: {} for w in busy if w not in live})
        self._registered &= set(running)
        for w in running:
            if w in live and w not in self._registered:
                self._registered.add(w)
                self.boot_failures, self.retry_at = 0, 0.0
        booting = [
            w
            for w, launched in running.items()
            if w not in live and now - launched <= self.boot_timeout
        ]
        silent = [
            w
            for w, launched in running.items()
            if w not in live and now - launched > self.boot_timeout
        ]
        self.booting = len(booting)
        adopting = now < self._grace_until
        if silent and not adopting:
            for w in [w for w in silent if w not in self._registered][:BOOT_LOGS_READ]:
                said = self.backend.boot_log(w)
                if said:
                    log.warning(
                        "scaling: worker %s never registered; the last lines its machine "
                        "printed:\n%s",
                        w,
                        said,
                        extra={"workers": [w]},
                    )
            log.warning(
                "scaling: terminating %d %s workers that never registered or stopped polling: %s",
                len(silent),
                self.backend.name,
                ", ".join(silent),
                extra={"workers": silent},
            )
            self.backend.terminate(silent)
            self.actions["terminate"] += 1
            never = [w for w in silent if w not in self._registered]
            if never:
                self.boot_failures += len(never)
                wait = min(BOOT_BACKOFF_CAP, BOOT_BACKOFF * 2 ** (self.boot_failures - 1))
                self.retry_at = now + wait
                log.warning("scaling: %s", self.backoff_reason(now))
        workers = tuple(
            Worker(
                busy=w in busy,
                speed=_measured(info, "speed"),
                overhead=_measured(info, "overhead"),
            )
            for w, info in live.items()
        )
        workers += tuple(Worker(busy=False, booting=True) for _ in booting)
        snapshot = Snapshot(
            now=now,
            queued_jobs=queued,
            backlog_iterations=backlog_iterations,
            oldest_wait=max(0.0, now - oldest_queued_at) if oldest_queued_at else 0.0,
            workers=workers,
            arrivals=tuple(self.arrivals),
            recent_launches=tuple(self.launch_times),
        )
        decision = decide(snapshot, self.limits)
        if adopting and decision.start:
            decision = Decision(
                0,
                decision.idle_timeout,
                "new leader: waiting for the previous leader's workers to report",
            )
        if decision.start and now < self.retry_at:
            decision = Decision(0, decision.idle_timeout, self.backoff_reason(now))
        started: list[str] = []
        if decision.start:
            started = self.backend.launch(decision.start)
            self.booting += len(started)
            self.launch_times.extend([now] * len(started))
            self.launches += len(started)
            log.info(
                "scaling: %d queued (%d iterations), %d live and %d booting workers: "
                "starting %d on %s (%s); idle timeout %.0fs",
                queued,
                backlog_iterations,
                len(live),
                len(booting),
                len(started),
                self.backend.name,
                decision.reason,
                decision.idle_timeout,
                extra={"workers": started},
            )
        changed = self.decision is None or _kind(decision.reason) != _kind(self.decision.reason)
        if changed and not started:
            log.info("scaling: %s; idle timeout %.0fs", decision.reason, decision.idle_timeout)
        self.actions["launch" if started else "hold"] += 1
        if started or changed:
            self.recent.append(
                {
                    "at": now,
                    "started": len(started),
                    "queued": queued,
                    "live": len(live),
                    "booting": len(booting),
                    "reason": decision.reason,
                    "idle_timeout": decision.idle_timeout,
                }
            )
        self.decision = decision
        return decision

    def backoff_reason(self, now: float) -> str:
        """Why launches wait after boot failures, e.g. "3 workers in a row never registered;
        next try in 4 min"."""
        left = max(0.0, self.retry_at - now)
        when = f"{left / 60:.0f} min" if left >= 90 else f"{left:.0f} s"
        workers = "worker" if self.boot_failures == 1 else "workers in a row"
        return f"{self.boot_failures} {workers} never registered; next try in {when}"


def _kind(reason: str) -> str:
    """A decision's reason without its figures: the same kind of decision, told once."""
    return re.sub(r"\d+(\.\d+)?", "#", reason)


def _measured(info: dict[str, Any], key: str) -> float | None:
    """A figure a worker measured and reported (speed, overhead); None if absent or bad."""
    try:
        value = float(info.get(key, 0))
    except (TypeError, ValueError):
        return None
    return value if 0 < value < math.inf else None


class ScalingLoop:
    """The scaler driven as a task of its own, so a slow cloud API does not hold up lease
    expiry. A step runs every STEP_INTERVAL while this node leads, and as soon as jobs arrive
    to a pool with no worker up or booting (at most every SCALE_SOON_INTERVAL): a burst on an
    idle cluster starts workers at once instead of up to a second later."""

    def __init__(
        self,
        scaler: Scaler,
        is_leader: Callable[[], bool],
        counts: Callable[[], dict[str, int]],
        oldest_queued_at: Callable[[], Awaitable[float | None]],
        busy_workers: Callable[[], set[str]],
    ):
        self.scaler = scaler
        self._is_leader = is_leader
        self._counts = counts
        self._oldest_queued_at = oldest_queued_at
        self._busy_workers = busy_workers
        self._soon = asyncio.Event()

    def jobs_arrived(self, jobs: list[tuple[float, int]]) -> None:
        """Newly committed (enqueue time, iterations); call on the event loop."""
        if self.scaler.jobs_arrived(jobs, time.time()):
            self._soon.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        was_leader = False
        last = 0.0
        while True:
            try:
                await asyncio.wait_for(self._soon.wait(), STEP_INTERVAL)
                await asyncio.sleep(max(0.0, last + SCALE_SOON_INTERVAL - loop.time()))
            except TimeoutError:
                pass
            self._soon.clear()
            last = loop.time()
            leader = self._is_leader()
            if leader and not was_leader:
                self.scaler.became_leader(time.time())
            was_leader = leader
            if not leader:
                continue
            try:
                counts = self._counts()
                oldest = await self._oldest_queued_at()
                await loop.run_in_executor(
                    None,
                    self.scaler.step,
                    time.time(),
                    counts["queued"],
                    counts["backlog_iterations"],
                    oldest,
                    self._busy_workers(),
                )
            except Exception:
                log.exception("scaling step failed; retrying")
