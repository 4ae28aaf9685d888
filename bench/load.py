"""A closed-loop HTTP load generator: N clients, each sending its next request when the last
one is answered, for a fixed time; latencies of the answered requests in the measured window,
and the CPU time the serving processes spent in it per answered request."""

from __future__ import annotations

import asyncio
import os
import statistics
import time

import aiohttp

from bench.cpu import cpu_seconds
from client.aio import multipart_body


async def _run(
    urls: list[str],
    body_bytes: int,
    clients: int,
    seconds: float,
    warmup: float,
    headers: dict[str, str],
    pids: list[int],
    batch: int,
) -> dict:
    payload = os.urandom(body_bytes)
    if batch > 1:  # POST /enqueue/batch: `batch` payloads of `body_bytes` per request
        payload, content_type = multipart_body([(os.urandom(body_bytes), 1) for _ in range(batch)])
        headers = {**headers, "Content-Type": content_type}
    latencies: list[float] = []
    errors: dict[str, int] = {}
    start = time.perf_counter()
    measure_from, measure_to = start + warmup, start + warmup + seconds
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=30)

    async def client(n: int, session: aiohttp.ClientSession) -> None:
        if batch > 1:
            method, url = "POST", f"{urls[n % len(urls)]}/enqueue/batch"
        else:
            method, url = "PUT", f"{urls[n % len(urls)]}/enqueue?iterations=1"
        while (sent := time.perf_counter()) < measure_to:
            try:
                async with session.request(method, url, data=payload, headers=headers) as r:
                    await r.read()
                    status = str(r.status)
            except (TimeoutError, aiohttp.ClientError) as e:
                status = type(e).__name__
            done = time.perf_counter()
            if measure_from <= sent and done <= measure_to:
                if status == "200":
                    latencies.append(done - sent)
                else:
                    errors[status] = errors.get(status, 0) + 1

    cpu: list[float] = []

    async def sample_cpu() -> None:
        for at in (measure_from, measure_to):
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            cpu.append(cpu_seconds(pids))

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(sample_cpu(), *(client(n, session) for n in range(clients)))
    latencies.sort()
    count = len(latencies) * batch  # jobs acknowledged

    def pct(p: float) -> float | None:
        n = len(latencies)
        return round(latencies[min(n - 1, int(p * n))] * 1000, 1) if n else None

    return {
        "acknowledged": count,
        "jobs_per_request": batch,
        "per_second": round(count / seconds, 1),
        "mb_per_second": round(count * body_bytes / seconds / 1e6, 1),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 1) if count else None,
        "errors": errors,
        # Latencies are per request; the rest per job. CPU milliseconds the serving processes
        # spent per acknowledged job, all together.
        "cpu_ms_per_ack": round((cpu[1] - cpu[0]) / count * 1000, 3) if pids and count else None,
        "cpu_cores": round((cpu[1] - cpu[0]) / seconds, 2) if pids else None,
    }


def run_load(
    urls: list[str],
    *,
    body_bytes: int,
    clients: int = 64,
    seconds: float = 10.0,
    warmup: float = 2.0,
    headers: dict[str, str] | None = None,
    pids: list[int] | None = None,
    batch: int = 1,
) -> dict:
    """The load's figures; `pids` are the serving processes whose CPU time is measured. With
    `batch` above 1, each request is a POST /enqueue/batch of that many payloads."""
    return asyncio.run(
        _run(urls, body_bytes, clients, seconds, warmup, headers or {}, pids or [], batch)
    )


async def _enqueue_many(
    urls: list[str], count: int, body_bytes: int, iterations: int, concurrency: int
) -> list[str]:
    payload = os.urandom(body_bytes)
    ids: list[str] = []
    todo = iter(range(count))

    async def client(n: int, session: aiohttp.ClientSession) -> None:
        for _ in todo:
            while True:
                url = f"{urls[n % len(urls)]}/enqueue?iterations={iterations}"
                async with session.put(url, data=payload) as r:
                    if r.status == 200:
                        ids.append((await r.json())["id"])
                        break
                await asyncio.sleep(0.1)  # 503/429: retry

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(client(n, session) for n in range(concurrency)))
    return ids


def enqueue_many(
    urls: list[str], count: int, *, body_bytes: int = 16, iterations: int = 1, concurrency: int = 64
) -> list[str]:
    """Enqueue `count` jobs as fast as `concurrency` clients can; their ids."""
    return asyncio.run(_enqueue_many(urls, count, body_bytes, iterations, concurrency))
