"""An in-memory backend for tests: records launches and terminations, runs nothing."""

from __future__ import annotations

import itertools
from typing import Callable


class FakeBackend:
    name = "fake"

    def __init__(self, start_cost: float = 1.0, clock: Callable[[], float] | None = None):
        import time

        self.start_cost = start_cost
        self._clock = clock or time.time
        self._ids = itertools.count(1)
        self.alive: dict[str, float] = {}
        self.launched: list[str] = []
        self.terminated: list[str] = []
        self.logs: dict[str, str] = {}  # what boot_log answers, set by a test

    def launch(self, count: int) -> list[str]:
        ids = [f"fake-{next(self._ids)}" for _ in range(count)]
        for worker_id in ids:
            self.alive[worker_id] = self._clock()
        self.launched += ids
        return ids

    def running(self) -> dict[str, float]:
        return dict(self.alive)

    def terminate(self, worker_ids: list[str]) -> None:
        for worker_id in worker_ids:
            self.alive.pop(worker_id, None)
            self.terminated.append(worker_id)

    def boot_log(self, worker_id: str) -> str | None:
        return self.logs.get(worker_id)

    def stop_all(self) -> None:
        self.alive.clear()
