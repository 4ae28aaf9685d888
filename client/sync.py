"""The synchronous client library: `Client` has the methods of `AsyncClient`, blocking.

It runs an `AsyncClient` on an event loop of its own, in a daemon thread, so that it works the
same from plain scripts, threads and programs that run an event loop of their own.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, AsyncIterator, Awaitable, Iterable, Iterator, TypeVar

from client.aio import AsyncClient, AsyncJob, Completion

T = TypeVar("T")


class _Loop:
    """An event loop in a daemon thread; runs coroutines for the calling thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="wq-client", daemon=True)
        self.thread.start()

    def run(self, coro: Awaitable[T]) -> T:
        async def call() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result()

    def iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        try:
            while True:
                try:
                    yield self.run(agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                self.run(aclose())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class Job:
    """A submitted job (see AsyncJob)."""

    def __init__(self, job: AsyncJob, loop: _Loop):
        self._job = job
        self._loop = loop

    @property
    def id(self) -> str:
        return self._job.id

    @property
    def after(self) -> int | None:
        return self._job.after

    def __repr__(self) -> str:
        return f"Job({self.id!r})"

    def status(self) -> dict[str, Any]:
        """The job as a node shows it: status, iterations, attempts, result or error..."""
        return self._loop.run(self._job.status())

    def result(self, timeout: float | None = None) -> str:
        """The job's result once it completed, waiting on the server (no polling). Raises
        JobFailed if it failed, TimedOut after `timeout` seconds, UnknownJob for an id no
        node knows."""
        return self._loop.run(self._job.result(timeout))


class Client:
    """A connection to the cluster; the arguments are AsyncClient's. Use it as a context
    manager, or call `close()`."""

    def __init__(self, urls: Iterable[str] | str | None = None, **options: Any):
        self._loop = _Loop()
        self._client = AsyncClient(urls, **options)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.thread.is_alive():
            self._loop.run(self._client.close())
            self._loop.close()

    def _job(self, job: AsyncJob) -> Job:
        return Job(job, self._loop)

    def submit(self, data: bytes, iterations: int, *, key: str | None = None) -> Job:
        """Enqueue one payload; see AsyncClient.submit."""
        return self._job(self._loop.run(self._client.submit(data, iterations, key=key)))

    def submit_many(
        self, items: Iterable[tuple[bytes, int]], *, key: str | None = None
    ) -> list[Job]:
        """Enqueue many (payload, iterations); see AsyncClient.submit_many."""
        jobs = self._loop.run(self._client.submit_many(items, key=key))
        return [self._job(job) for job in jobs]

    def job(self, job_id: str) -> Job:
        """A handle on a job known by its id."""
        return self._job(self._client.job(job_id))

    def as_completed(self, jobs: Iterable[Job], timeout: float | None = None) -> Iterator[Job]:
        """Yield each job once it finished; see AsyncClient.as_completed."""
        by_id = {job.id: job for job in jobs}
        finished = self._client.as_completed([job._job for job in by_id.values()], timeout)
        for job in self._loop.iterate(finished):
            yield by_id[job.id]

    def map(
        self, items: Iterable[bytes], iterations: int, *, window: int = 1000
    ) -> Iterator[tuple[bytes, str]]:
        """Submit each payload; yield (payload, result) as jobs finish; see AsyncClient.map."""
        return self._loop.iterate(self._client.map(items, iterations, window=window))

    def completions(self, after: int = 0, *, limit: int = 1000) -> Iterator[Completion]:
        """The completion feed after `after`, forever; see AsyncClient.completions."""
        return self._loop.iterate(self._client.completions(after, limit=limit))
