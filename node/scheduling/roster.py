"""The leader's list of live workers: who polled or sent a heartbeat recently.

Published to the Raft log when it changes, so every node can show it and a new leader starts
from it (adopting workers the old leader knew) instead of from nothing.
"""

from __future__ import annotations

import json
from typing import Any

from node.replication import commands as c


class Roster:
    def __init__(self, ttl: float):
        self.ttl = ttl
        self._seen: dict[str, tuple[float, dict[str, Any]]] = {}  # worker -> last seen, info
        self._published: frozenset[str] | None = None

    def touch(self, worker: str, info: dict[str, Any], now: float) -> None:
        self._seen[worker] = (now, info)

    def forget(self, worker: str) -> None:
        """Drop a worker known to be gone (its process exited) without waiting for the ttl."""
        self._seen.pop(worker, None)

    def adopt(self, rows: list[dict[str, Any]], now: float) -> None:
        """Start from the replicated list: each worker gets a full ttl to show up again."""
        for row in rows:
            info = {k: v for k, v in row.items() if k not in ("id", "last_seen")}
            self._seen.setdefault(row["id"], (now, info))
        self._published = None

    def live(self, now: float) -> dict[str, dict[str, Any]]:
        for worker in [w for w, (seen, _) in self._seen.items() if now - seen > self.ttl]:
            del self._seen[worker]
        return {w: info for w, (_, info) in self._seen.items()}

    def changes(self, now: float) -> c.Workers | None:
        """A Workers command when the set of live workers changed since the last one."""
        live = self.live(now)
        if self._published == frozenset(live):
            return None
        self._published = frozenset(live)
        return c.Workers(
            tuple(
                (w, json.dumps(info, sort_keys=True), self._seen[w][0])
                for w, info in sorted(live.items())
            )
        )

    def clear(self) -> None:
        self._seen.clear()
        self._published = None
