"""The asynchronous client library: `AsyncClient` and the `AsyncJob` handles it gives.

Every call goes to any node and fails over to the next with the retry rules the `wq` command
and the workers use (protocol.failover). Submissions carry an Idempotency-Key that every retry
reuses, so a retry never makes a second job. Waiting costs no polling: one job's result is a
request the node answers when it applies the job's completion (`GET /work/{id}?wait=S`), and
many jobs' results are read from the completion feed (`GET /completed`), from the position
each enqueue answered, whatever the number of jobs outstanding.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterable, Mapping

from client.errors import (
    FeedPositionGone,
    InvalidRequest,
    JobFailed,
    TimedOut,
    Unavailable,
    UnknownJob,
    WorkQueueError,
)
from client.nodes import Answer, Nodes, NoNodeAnswers, default_urls

# A job a node does not know yet (just submitted through another node) is reported unknown
# only once every answer said so for this long.
UNKNOWN_AFTER = 10.0
FEED_PAGE = 1000
FINISHED = ("completed", "failed")


@dataclass(frozen=True)
class Completion:
    """One entry of the completion feed: a job that completed (`result`) or failed (`error`)."""

    position: int
    id: str
    status: str
    iterations: int
    finished_at: float
    result: str | None = None
    error: str | None = None

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> Completion:
        return cls(
            position=int(entry["position"]),
            id=str(entry["id"]),
            status=str(entry["status"]),
            iterations=int(entry["iterations"]),
            finished_at=float(entry["finished_at"]),
            result=entry.get("result"),
            error=entry.get("error"),
        )


class AsyncJob:
    """A submitted job. `after` is a completion-feed position its completion comes after
    (None when not known: the job was named by id, or finished before the feed existed)."""

    def __init__(self, client: AsyncClient, job_id: str, after: int | None = None):
        self.id = job_id
        self.after = after
        self._client = client
        self._finished: Mapping[str, Any] | None = None  # the job once known finished

    def __repr__(self) -> str:
        return f"AsyncJob({self.id!r})"

    async def status(self) -> dict[str, Any]:
        """The job as a node shows it: status, iterations, attempts, result or error..."""
        answer = await self._client._get_job(self.id, 0.0)
        if answer is None:
            raise UnknownJob(404, f"id: no job {self.id} on any node")
        return answer

    async def result(self, timeout: float | None = None) -> str:
        """The job's result once it completed, waiting on the server (no polling). Raises
        JobFailed if it failed, TimedOut after `timeout` seconds, UnknownJob for an id no
        node knows."""
        if self._finished is not None:
            return _outcome(self.id, self._finished)
        end = None if timeout is None else time.monotonic() + timeout
        unknown_since: float | None = None
        while True:
            left = self._client.max_wait if end is None else end - time.monotonic()
            job = await self._client._get_job(self.id, max(0.0, min(left, self._client.max_wait)))
            now = time.monotonic()
            if job is None:
                unknown_since = unknown_since or now
                if now - unknown_since >= UNKNOWN_AFTER:
                    raise UnknownJob(404, f"id: no job {self.id} on any node")
            elif job["status"] in FINISHED:
                return _outcome(self.id, job)
            if end is not None and now >= end:
                raise TimedOut(f"job {self.id} not finished after {timeout:g}s")

    def _finish(self, job: Mapping[str, Any]) -> None:
        """Known finished: `job` holds its status, and its result or error."""
        self._finished = job


def _outcome(job_id: str, job: Mapping[str, Any]) -> str:
    """A finished job's result; JobFailed for a failed one, UnknownJob for one no node
    knows."""
    if job["status"] == "completed":
        return str(job["result"])
    if job["status"] == "unknown":
        raise UnknownJob(404, f"id: no job {job_id} on any node")
    raise JobFailed(job_id, job.get("error"))


class AsyncClient:
    """A connection to the cluster. `urls`: the nodes' base URLs (default: WQ_URLS, else the
    three nodes of ./run_local.sh); `api_key`: default WQ_API_KEY; `cacert`: the PEM file of
    the CA that signed the nodes' certificates, default WQ_CACERT. `timeout` bounds each HTTP
    request (plus its wait), `deadline` each call's failing over and retrying. `max_wait`
    (at most the nodes' --max-wait) is how long one request waits on the server."""

    def __init__(
        self,
        urls: Iterable[str] | str | None = None,
        *,
        api_key: str | None = None,
        cacert: str | None = None,
        timeout: float = 30.0,
        deadline: float = 120.0,
        concurrency: int = 8,
        max_wait: float = 30.0,
        batch_size: int = 100,
        batch_bytes: int = 16 << 20,
    ):
        if isinstance(urls, str):
            urls = urls.split(",")
        chosen = [u.strip() for u in urls or () if u.strip()] or default_urls()
        key = os.environ.get("WQ_API_KEY", "") if api_key is None else api_key
        if batch_size < 1 or batch_bytes < 1 or max_wait < 0:
            raise ValueError("batch_size and batch_bytes must be positive, max_wait at least 0")
        self.max_wait = max_wait
        self.batch_size = batch_size
        self.batch_bytes = batch_bytes
        self._nodes = Nodes(chosen, key, timeout, deadline, concurrency, cacert)
        self._open = False

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._open:
            self._open = False
            await self._nodes.__aexit__(None, None, None)

    # --- submitting ----------------------------------------------------------------------

    async def submit(self, data: bytes, iterations: int, *, key: str | None = None) -> AsyncJob:
        """Enqueue one payload. `key` (an Idempotency-Key, generated when not given) is sent
        with every retry, so the job is made once."""
        body = await self._call(
            "PUT",
            "/enqueue",
            data=bytes(data),
            params={"iterations": str(iterations)},
            headers={"Idempotency-Key": key or uuid.uuid4().hex},
        )
        return AsyncJob(self, body["id"], body.get("after"))

    async def submit_many(
        self, items: Iterable[tuple[bytes, int]], *, key: str | None = None
    ) -> list[AsyncJob]:
        """Enqueue many (payload, iterations) with the batch route, `batch_size` payloads (and
        at most `batch_bytes`) per request; each request is all or nothing and carries its own
        Idempotency-Key (`key` and the request's number, when `key` is given)."""
        jobs: list[AsyncJob] = []
        for n, chunk in enumerate(self._chunks(items)):
            body, content_type = multipart_body(chunk)
            answer = await self._call(
                "POST",
                "/enqueue/batch",
                data=body,
                headers={
                    "Content-Type": content_type,
                    "Idempotency-Key": f"{key}/{n}" if key else uuid.uuid4().hex,
                },
            )
            jobs += [AsyncJob(self, job_id, answer.get("after")) for job_id in answer["ids"]]
        return jobs

    def _chunks(self, items: Iterable[tuple[bytes, int]]) -> Iterable[list[tuple[bytes, int]]]:
        chunk: list[tuple[bytes, int]] = []
        size = 0
        for data, iterations in items:
            if chunk and (len(chunk) == self.batch_size or size + len(data) > self.batch_bytes):
                yield chunk
                chunk, size = [], 0
            chunk.append((bytes(data), int(iterations)))
            size += len(data)
        if chunk:
            yield chunk

    def job(self, job_id: str) -> AsyncJob:
        """A handle on a job known by its id."""
        return AsyncJob(self, job_id)

    # --- waiting for many ----------------------------------------------------------------

    async def as_completed(
        self, jobs: Iterable[AsyncJob], timeout: float | None = None
    ) -> AsyncIterator[AsyncJob]:
        """Yield each job once it completed or failed (then `await job.result()` answers at
        once, or raises JobFailed; or UnknownJob for an id no node knows), reading the
        completion feed: a few requests however many jobs there are. Raises TimedOut after
        `timeout` seconds."""
        pending = {job.id: job for job in jobs}
        end = None if timeout is None else time.monotonic() + timeout
        after: int | None = None
        while pending:
            if after is None:
                after, done = await self._start_feed(pending.values())
                for job in done:
                    del pending[job.id]
                    yield job
                continue
            left = self.max_wait if end is None else end - time.monotonic()
            if left <= 0:
                raise TimedOut(f"{len(pending)} jobs not finished after {timeout:g}s")
            try:
                page = await self._feed(after, FEED_PAGE, min(left, self.max_wait))
            except FeedPositionGone:
                # Positions dropped by retention: ask for the pending jobs themselves.
                for job in pending.values():
                    job.after = None
                after = None
                continue
            after = page["next"]
            for entry in page["completions"]:
                finished = pending.pop(entry["id"], None)
                if finished is not None:
                    finished._finish(entry)
                    yield finished

    async def _start_feed(self, jobs: Iterable[AsyncJob]) -> tuple[int, list[AsyncJob]]:
        """Where to read the feed from for these jobs, and those of them already finished.
        Jobs with a position (from their enqueue) need no request; the others are asked for
        once each, after the feed's end was read, so none can finish unseen in between."""
        marked = [job.after for job in jobs if job.after is not None]
        unmarked = [job for job in jobs if job.after is None]
        if not unmarked:
            return min(marked), []
        last = (await self._feed(0, 1, 0.0))["last"]
        gate = asyncio.Semaphore(self._nodes.concurrency)

        async def check(job: AsyncJob) -> AsyncJob | None:
            async with gate:
                state = await self._get_job(job.id, 0.0)
            if state is None:  # maybe not applied on that node yet: give it a while
                state = await self._get_job(job.id, min(UNKNOWN_AFTER, self.max_wait))
            if state is None:
                job._finish({"status": "unknown"})
                return job
            if state["status"] in FINISHED:
                job._finish(state)
                return job
            return None

        done = [job for job in await asyncio.gather(*map(check, unmarked)) if job is not None]
        return min([last, *marked]), done

    async def map(
        self, items: Iterable[bytes], iterations: int, *, window: int = 1000
    ) -> AsyncIterator[tuple[bytes, str]]:
        """Submit each payload and yield (payload, result) as the jobs finish, with at most
        `window` jobs submitted and unfinished at a time. Raises JobFailed for a job that
        failed (the others keep running)."""
        if window < 1:
            raise ValueError("window must be at least 1")
        it = iter(items)
        pending: dict[str, bytes] = {}
        after: int | None = None
        exhausted = False
        while True:
            while not exhausted and len(pending) < window:
                chunk = list(itertools.islice(it, min(self.batch_size, window - len(pending))))
                if not chunk:
                    exhausted = True
                    break
                jobs = await self.submit_many([(data, iterations) for data in chunk])
                for job, data in zip(jobs, chunk, strict=True):
                    if job.after is None:
                        # A key found a job that finished before the feed: ask for it.
                        yield data, await job.result()
                        continue
                    pending[job.id] = data
                    after = job.after if after is None else min(after, job.after)
            if after is None:  # nothing pending: every item was answered above
                return
            page = await self._feed(after, FEED_PAGE, self.max_wait)
            after = page["next"]
            for entry in page["completions"]:
                payload = pending.pop(entry["id"], None)
                if payload is not None:
                    yield payload, _outcome(entry["id"], entry)
            if not pending and exhausted:
                return

    async def completions(
        self, after: int = 0, *, limit: int = FEED_PAGE
    ) -> AsyncIterator[Completion]:
        """Every completion and failure after position `after`, in order, forever: store the
        `position` of the last one handled and resume from it, on any node."""
        while True:
            page = await self._feed(after, limit, self.max_wait)
            for entry in page["completions"]:
                yield Completion.from_json(entry)
            after = page["next"]

    # --- requests ------------------------------------------------------------------------

    async def _feed(self, after: int, limit: int, wait: float) -> dict[str, Any]:
        return await self._call(  # type: ignore[no-any-return]
            "GET",
            "/completed",
            params={"after": str(after), "limit": str(limit), "wait": f"{wait:g}"},
            timeout=wait + self._nodes.timeout,
        )

    async def _get_job(self, job_id: str, wait: float) -> dict[str, Any] | None:
        """The job as a node shows it, None when that node does not know it."""
        try:
            return await self._call(  # type: ignore[no-any-return]
                "GET",
                f"/work/{job_id}",
                params={"wait": f"{wait:g}"} if wait else None,
                timeout=wait + self._nodes.timeout,
            )
        except UnknownJob:
            return None

    async def _call(
        self,
        method: str,
        path: str,
        *,
        data: bytes | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        if not self._open:
            await self._nodes.__aenter__()
            self._open = True
        try:
            answer = await self._nodes.request(
                method, path, data=data, params=params, headers=headers, timeout=timeout
            )
        except NoNodeAnswers as e:
            raise Unavailable(str(e)) from None
        if answer.status == 200:
            return answer.body
        raise _error(answer)


def _error(answer: Answer) -> WorkQueueError:
    if answer.status == 404:
        return UnknownJob(404, answer.error())
    if answer.status == 410:
        return FeedPositionGone(410, answer.error())
    if 400 <= answer.status < 500:
        return InvalidRequest(answer.status, answer.error())
    return WorkQueueError(str(answer))


def multipart_body(items: list[tuple[bytes, int]]) -> tuple[bytes, str]:
    """A multipart/form-data body, one part per payload with its X-Iterations; the boundary
    is random, so no payload holds it."""
    boundary = uuid.uuid4().hex
    parts: list[bytes] = []
    for n, (data, iterations) in enumerate(items):
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="p"; filename="{n}"\r\n'
            f"Content-Type: application/octet-stream\r\nX-Iterations: {iterations}\r\n\r\n"
        )
        parts += [head.encode(), data, b"\r\n"]
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
