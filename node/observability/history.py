"""The node's recent history for the dashboard: queue depth, rates and workers, sampled every
few seconds over the last minutes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Awaitable, Callable

log = logging.getLogger(__name__)

SAMPLE_SECONDS = 2.0
HISTORY_SAMPLES = 300  # ten minutes


class History:
    """Queue depth, rates and workers over the last minutes, sampled by this node."""

    def __init__(self, maxlen: int = HISTORY_SAMPLES):
        self.samples: deque[dict[str, float]] = deque(maxlen=maxlen)
        self._last: tuple[float, dict[str, int]] | None = None

    def add(
        self, now: float, counts: dict[str, int], totals: dict[str, int], workers: dict[str, int]
    ) -> None:
        rates = {"enqueued": 0.0, "completed": 0.0}
        if self._last is not None and now > self._last[0]:
            then, before = self._last
            rates = {k: round((totals[k] - before[k]) / (now - then), 2) for k in rates}
        self._last = (now, totals)
        self.samples.append(
            {
                "t": round(now, 3),
                "queued": counts["queued"],
                "running": counts["running"],
                "enqueued_per_s": rates["enqueued"],
                "completed_per_s": rates["completed"],
                "workers": workers.get("busy", 0) + workers.get("idle", 0),
                "busy": workers.get("busy", 0),
            }
        )

    async def sample_forever(
        self,
        counts: Callable[[], dict[str, int]],
        totals: Callable[[], dict[str, int]],
        workers: Callable[[], Awaitable[dict[str, int]]],
    ) -> None:
        """Add a sample every SAMPLE_SECONDS: queue counts, job totals, workers by state."""
        while True:
            try:
                self.add(time.time(), counts(), totals(), await workers())
            except Exception:
                log.exception("history sample failed")
            await asyncio.sleep(SAMPLE_SECONDS)
