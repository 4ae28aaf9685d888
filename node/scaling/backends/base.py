"""What the scaling loop needs from a place that runs workers. One module per backend:
local.py (subprocesses), ec2.py (EC2 instances through boto3), fake.py (in memory, for tests).

Calls may block (boto3), so the loop runs them off the event loop."""

from __future__ import annotations

from typing import Protocol


class Backend(Protocol):
    name: str
    # Seconds from launch until a worker polls the managers: the policy's start cost.
    start_cost: float

    def launch(self, count: int) -> list[str]:
        """Start `count` workers; returns their worker ids."""

    def running(self) -> dict[str, float]:
        """Workers of this cluster the backend sees alive: worker id -> launch time (epoch s).
        For EC2 this includes instances started by an earlier leader (found by tag)."""

    def terminate(self, worker_ids: list[str]) -> None:
        """Stop workers that never registered or went silent."""

    def boot_log(self, worker_id: str) -> str | None:
        """The last of what a worker's machine printed while it booted, where the backend
        can read it (EC2's console output); None where it cannot."""

    def stop_all(self) -> None:
        """The node is shutting down: stop what must not outlive it."""
