"""What the client library raises: one hierarchy under `WorkQueueError`."""

from __future__ import annotations


class WorkQueueError(Exception):
    """Base of every error the client library raises."""


class InvalidRequest(WorkQueueError):
    """The cluster refused the request (a 4xx); `message` is the node's own, naming the field
    and what it allows."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class UnknownJob(InvalidRequest):
    """No node knows the job (a wrong id, or one dropped by retention)."""


class FeedPositionGone(InvalidRequest):
    """The completions after the asked position are no longer kept (410)."""


class JobFailed(WorkQueueError):
    """The job failed: it ran out of attempts. `error` says why."""

    def __init__(self, job_id: str, error: str | None):
        super().__init__(f"job {job_id} failed: {error}")
        self.job_id = job_id
        self.error = error


class TimedOut(WorkQueueError, TimeoutError):
    """A wait for results ended before they were all there."""


class Unavailable(WorkQueueError):
    """No node answered (or every one said to retry later) until the call's deadline."""
