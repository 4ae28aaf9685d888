"""`python -m bench waiters`: what requests waiting for results cost a node. Many concurrent
`GET /work/{id}?wait=S` on one node, spread over a few queued jobs; the node's memory before
they arrive and while they all wait; then the jobs are completed in one call and every
waiter's answer is timed from that call's acknowledgement (the wake-up latency)."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import aiohttp
import requests

from bench.capacity import percentiles, rss_mb
from bench.cluster import AUTH, Cluster, expected_digest, wait_until
from protocol.wire import MAX_LEASE_JOBS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--waiters", type=int, help="concurrent waiting requests [default: 10,000; --quick: 500]"
    )


def waiting(cluster: Cluster, node: int) -> float:
    text = requests.get(cluster.url(node) + "/metrics", timeout=10).text
    return float(
        next(
            line.split()[1] for line in text.splitlines() if line.startswith("wq_waiting_requests ")
        )
    )


def measure(cluster: Cluster, node: int, waiters: int, jobs: int = MAX_LEASE_JOBS) -> dict:
    """Hold `waiters` requests on `node` waiting for `jobs` queued jobs, complete the jobs
    (as a worker would, results from hashlib), and time every answer. The cluster must have
    no workers, and a --max-wait of at least 300 s."""
    payloads = {}
    for n in range(jobs):
        payload = b"waited %d" % n
        r = cluster.enqueue(n % cluster.size, payload, 3)
        r.raise_for_status()
        payloads[r.json()["id"]] = payload
    ids = list(payloads)
    pid = cluster.procs[node].pid
    before = rss_mb(pid)
    answers: list[tuple[float, str, str | None]] = []  # (monotonic time, status, result)

    async def main() -> dict:
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=600)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def wait_for(job_id: str) -> None:
                for _ in range(5):  # a connection the node's accept queue dropped is retried
                    try:
                        async with session.get(
                            f"{cluster.url(node)}/work/{job_id}", params={"wait": "300"}
                        ) as resp:
                            job = await resp.json()
                            status = job["status"] if resp.status == 200 else str(job)
                            answers.append((time.monotonic(), status, job.get("result")))
                            return
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.5)

            tasks = [asyncio.create_task(wait_for(ids[n % jobs])) for n in range(waiters)]
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(
                None,
                lambda: wait_until(
                    lambda: waiting(cluster, node) >= waiters, 300, f"{waiters} waiting requests"
                ),
            )
            held = rss_mb(pid)
            early = len(answers)
            acked = await loop.run_in_executor(None, complete, cluster, payloads)
            await asyncio.gather(*tasks)
            return {"held_rss_mb": held, "answered_early": early, "acked": acked}

    got = asyncio.run(main())
    latencies = sorted(at - got["acked"] for at, _, _ in answers)
    spread = percentiles(latencies)
    correct = all(
        status == "completed" and result in {expected_digest(p, 3) for p in payloads.values()}
        for _, status, result in answers
    )
    return {
        "waiters": waiters,
        "jobs": jobs,
        "answered": len(answers),
        "answered_early": got["answered_early"],
        "all_correct": correct,
        "rss_before_mb": round(before, 1),
        "rss_waiting_mb": round(got["held_rss_mb"], 1),
        "kb_per_waiter": round((got["held_rss_mb"] - before) * 1024 / waiters, 2),
        "wake_p50_ms": spread["p50_ms"],
        "wake_p99_ms": spread["p99_ms"],
        "wake_max_ms": round(latencies[-1] * 1000, 1),
    }


def complete(cluster: Cluster, payloads: dict[str, bytes], iterations: int = 3) -> float:
    """Lease and complete every job (job id -> payload, all of `iterations`) in one call each,
    as a worker, the results from hashlib; when the completion was acknowledged
    (monotonic)."""
    r = requests.post(
        cluster.url(0) + "/internal/lease",
        headers=AUTH,
        json={"worker": "bench-waiters", "max_jobs": len(payloads), "wait": 5},
        timeout=30,
    )
    assert {j["id"] for j in r.json()["jobs"]} == set(payloads), r.text
    results = [{"id": i, "result": expected_digest(p, iterations)} for i, p in payloads.items()]
    r = requests.post(
        cluster.url(0) + "/internal/complete",
        headers=AUTH,
        json={"worker": "bench-waiters", "results": results},
        timeout=30,
    )
    assert r.status_code == 200 and len(r.json()["accepted"]) == len(payloads), r.text
    return time.monotonic()


def run(args: argparse.Namespace) -> dict:
    waiters = args.waiters or (500 if args.quick else 10_000)
    with tempfile.TemporaryDirectory(prefix="wq-bench-waiters-") as tmp:
        with Cluster(Path(tmp) / "c", max_workers=0, max_wait=300) as cluster:
            return measure(cluster, 2, waiters)


def print_table(results: dict) -> None:
    print(
        f"\n{results['waiters']:,} requests waiting on one node for {results['jobs']} jobs: "
        f"node RSS {results['rss_before_mb']} MB before, {results['rss_waiting_mb']} MB while "
        f"they wait ({results['kb_per_waiter']} KB each); after the completion was "
        f"acknowledged, answers in p50 {results['wake_p50_ms']} ms, p99 "
        f"{results['wake_p99_ms']} ms, last {results['wake_max_ms']} ms; "
        f"{results['answered']:,} answered, all correct: {results['all_correct']}"
    )


def targets(results: dict) -> list[str]:
    return [
        ("met    " if results["kb_per_waiter"] <= 50 else "MISSED ")
        + f"a waiting request costs the node {results['kb_per_waiter']} KB (target at most 50)",
        (
            "met    "
            if results["answered"] == results["waiters"] and results["all_correct"]
            else "MISSED "
        )
        + f"every waiter answered with the right result ({results['answered']:,} of "
        f"{results['waiters']:,}; {results['answered_early']} before the completion)",
    ]
