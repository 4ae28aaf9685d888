"""`python -m bench capacity`: a store holding many completed jobs: each node's resident
memory, the latency of `pullCompleted?top=100`, and a node's restart-to-healthy time."""

from __future__ import annotations

import argparse
import math
import os
import signal
import tempfile
import time
from pathlib import Path

import requests

from bench.cluster import Cluster, wait_until
from bench.load import enqueue_many


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--jobs", type=int, help="completed jobs to hold [default: 100,000; --quick: 1,000]"
    )


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return round(kb / 1024, 1)


def run(args: argparse.Namespace) -> dict:
    jobs = args.jobs or (1_000 if args.quick else 100_000)
    pulls = 200 if args.quick else 1000  # sequential pullCompleted?top=100 requests
    with tempfile.TemporaryDirectory(prefix="wq-bench-capacity-") as tmp:
        with Cluster(
            Path(tmp) / "c", max_workers=0, request_timeout=10, max_queued=10**8
        ) as cluster:
            for n in range(os.cpu_count() or 2):
                cluster.start_worker(f"w{n}")
            started = time.monotonic()
            enqueue_many(cluster.urls, jobs, body_bytes=16, iterations=1)
            wait_until(
                lambda: all(cluster.status(i)["queue"]["completed"] >= jobs for i in range(3)),
                3600,
                f"{jobs} completed jobs",
                interval=1,
            )
            fill = time.monotonic() - started
            rss = [rss_mb(cluster.procs[i].pid) for i in range(3)]
            session = requests.Session()
            latencies = []
            for n in range(pulls):
                t = time.perf_counter()
                r = session.post(f"{cluster.url(n % 3)}/pullCompleted?top=100", timeout=10)
                latencies.append(time.perf_counter() - t)
                assert r.status_code == 200 and len(r.json()) == 100
            latencies.sort()
            cluster.kill_node(0, signal.SIGTERM)
            t = time.monotonic()
            cluster.start_node(0)
            wait_until(
                lambda: requests.get(cluster.url(0) + "/healthz", timeout=2).ok,
                120,
                "the restarted node to be healthy",
                interval=0.05,
            )
            restart = time.monotonic() - t
    return {
        "jobs": jobs,
        "fill_s": round(fill, 1),
        "rss_mb": rss,
        "pulls": pulls,
        "pull_top100_p50_ms": round(latencies[pulls // 2] * 1000, 2),
        "pull_top100_p99_ms": round(latencies[math.ceil(0.99 * pulls) - 1] * 1000, 2),
        "restart_to_healthy_s": round(restart, 2),
    }


def print_table(results: dict) -> None:
    print(f"\n{results['jobs']:,} completed jobs (enqueued and completed in {results['fill_s']} s)")
    print(f"  node RSS: {', '.join(f'{m} MB' for m in results['rss_mb'])}")
    print(
        f"  pullCompleted?top=100: p50 {results['pull_top100_p50_ms']} ms, "
        f"p99 {results['pull_top100_p99_ms']} ms ({results['pulls']:,} sequential requests)"
    )
    print(f"  restart to healthy: {results['restart_to_healthy_s']} s")


def targets(results: dict) -> list[str]:
    checks = [
        (
            max(results["rss_mb"]) < 300,
            f"RSS at most {max(results['rss_mb'])} MB (target under 300)",
        ),
        (
            results["pull_top100_p99_ms"] < 20,
            f"pullCompleted p99 {results['pull_top100_p99_ms']} ms (target under 20)",
        ),
        (
            results["restart_to_healthy_s"] < 10,
            f"restart to healthy {results['restart_to_healthy_s']} s (target under 10)",
        ),
    ]
    note = (
        []
        if results["jobs"] >= 100_000
        else [f"(with {results['jobs']:,} jobs; the targets are for 100,000)"]
    )
    return [("met    " if ok else "MISSED ") + text for ok, text in checks] + note
