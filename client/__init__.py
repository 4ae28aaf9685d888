"""Client of the replicated work queue: the `wq` command, and a library.

    from client import Client

    with Client(["http://127.0.0.1:8001", "http://127.0.0.1:8002"]) as wq:
        job = wq.submit(b"payload", iterations=1000)
        print(job.result(timeout=60))

`Client` blocks; `AsyncClient` has the same methods as coroutines and async iterators.
"""

from client.aio import AsyncClient, AsyncJob, Completion
from client.errors import (
    FeedPositionGone,
    InvalidRequest,
    JobFailed,
    TimedOut,
    Unavailable,
    UnknownJob,
    WorkQueueError,
)
from client.sync import Client, Job

__all__ = [
    "AsyncClient",
    "AsyncJob",
    "Client",
    "Completion",
    "FeedPositionGone",
    "InvalidRequest",
    "Job",
    "JobFailed",
    "TimedOut",
    "Unavailable",
    "UnknownJob",
    "WorkQueueError",
]
