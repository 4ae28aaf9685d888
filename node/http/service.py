"""What the HTTP layer needs from the node: the queue's operations, declared here so that the
handlers depend on this interface alone (node/service.py implements it; tests pass fakes).

Each operation raises a node.errors.QueueError for a refusal the client should see (the error
middleware maps it to its status) and NotLeader from a leader-only operation on a follower
(the internal routes then forward the call to the leader).
"""

from __future__ import annotations

from typing import Any, Protocol


class Service(Protocol):
    # --- public ----------------------------------------------------------------------
    async def enqueue(self, data: bytes, iterations: int, key: str | None) -> dict[str, Any]:
        """Store the payload on a majority, commit the job: {"id": its id (the earlier job's
        id when `key` was used before for the same payload and iterations), "after": a
        completion-feed position its completion comes after, or None}."""

    async def enqueue_batch(
        self, items: list[tuple[bytes, int]], key: str | None
    ) -> dict[str, Any]:
        """Enqueue every (payload, iterations) as one command, all or none: {"ids": in order
        (the earlier batch's ids when `key` was used before for the same parts), "after":
        as for `enqueue`, for all of them}."""

    async def job(self, job_id: str, wait: float = 0.0) -> dict[str, Any] | None:
        """The job as the API shows it, or None when this node holds no such job. With
        `wait`, once this node has applied its completion or failure, or after `wait`
        seconds (a job this node does not hold yet is waited for too)."""

    async def completions(self, after: int, limit: int, wait: float = 0.0) -> dict[str, Any]:
        """The completion feed after position `after`: {"completions": up to `limit` finished
        jobs in order, "next": the position to ask from next, "last": the last position this
        node has given}; with `wait`, once there is one
        or after `wait` seconds. Gone when positions after `after` were dropped by retention."""

    async def completed(self, top: int) -> list[dict[str, Any]]:
        """The `top` most recent completions, newest first."""

    async def status(self) -> dict[str, Any]:
        """This node's view: role, leader, Raft indexes, queue counts, workers, scaling."""

    def health(self) -> tuple[bool, str]:
        """Whether this node can serve writes and reads now, and why not."""

    async def metrics(self) -> tuple[bytes, str]:
        """The Prometheus exposition of this node, and its content type."""

    # --- workers (leader-only ones raise NotLeader elsewhere) ------------------------
    def is_leader(self) -> bool: ...

    def leader_url(self) -> str | None:
        """The HTTP URL of the leader this node knows of."""

    async def lease(
        self, worker: str, info: dict[str, str], max_jobs: int, wait: float, linger: float
    ) -> dict[str, Any]:
        """Leader only: up to `max_jobs` jobs for `worker`, and the timeouts it should keep."""

    async def heartbeat(self, worker: str, info: dict[str, str], jobs: list[str]) -> dict[str, Any]:
        """Leader only: extend the leases `worker` still holds among `jobs`."""

    async def release(self, worker: str, jobs: list[str], reason: str) -> list[str]:
        """Leader only: put the jobs `worker` gives back into the queue; the ids released."""

    async def complete(self, worker: str, results: list[tuple[str, str]]) -> list[str]:
        """Record (job id, result) pairs; the ids whose result this call recorded."""

    # --- payloads between nodes and to workers ----------------------------------------
    async def store_payloads(self, items: list[tuple[str, bytes, str]]) -> None:
        """Keep payload copies a peer sent: (job id, data, digest), digests checked."""

    async def payload(self, job_id: str, digest: str | None, *, local: bool) -> bytes:
        """A queued or running job's payload, from here or (unless `local`, what peers ask
        for) fetched from a peer; JobNotFound says why there is none."""

    async def payloads(self, jobs: list[tuple[str, str]]) -> list[tuple[str, bytes, str]]:
        """(job id, data, digest) of each queued or running job among (job id, digest) whose
        payload this node holds or can fetch from a peer; the others are left out."""

    def compact(self) -> None:
        """Write a Raft snapshot and trim the log now."""

    # --- dashboard ---------------------------------------------------------------------
    async def member_status(self) -> dict[str, Any]:
        """status() with this node's health, as peers show it on their dashboards."""

    def history(self) -> list[dict[str, Any]]:
        """This node's recent samples of queue depth, rates and workers, oldest first."""
