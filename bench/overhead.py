"""`python -m bench overhead`: what a job costs a worker besides its iterations. One-iteration
jobs of 16 bytes are queued first, then drained by one worker and, in a second round, by two;
the time per job with one worker is the per-job overhead the scaling policy assumes
(node/scaling/policy.py, JOB_OVERHEAD), and the two-worker round shows whether more workers
finish such a backlog sooner."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.cluster import Cluster, wait_until
from bench.load import enqueue_many
from node.scaling.policy import JOB_OVERHEAD


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--overhead-jobs", type=int, help="jobs per round [default: 20,000; --quick: 1,000]"
    )


def drain(cluster: Cluster, workers: int, jobs: int, done_before: int) -> float:
    """Seconds `workers` new workers take to finish `jobs` queued jobs."""
    started = time.monotonic()
    for n in range(workers):
        cluster.start_worker(f"drain{done_before}-{n}")
    wait_until(
        lambda: cluster.status(0)["queue"]["completed"] >= done_before + jobs,
        1800,
        f"{jobs} one-iteration jobs",
        interval=0.2,
    )
    return time.monotonic() - started


def run(args: argparse.Namespace) -> dict:
    jobs = args.overhead_jobs or (1_000 if args.quick else 20_000)
    rounds = {}
    with tempfile.TemporaryDirectory(prefix="wq-bench-overhead-") as tmp:
        with Cluster(Path(tmp) / "c", max_workers=0, request_timeout=10, max_queued=10**8) as c:
            done = 0
            for workers in (1, 2):
                enqueue_many(c.urls, jobs, body_bytes=16, iterations=1)
                seconds = drain(c, workers, jobs, done)
                done += jobs
                for proc in c.workers:
                    proc.terminate()
                rounds[workers] = {"seconds": round(seconds, 2), "jobs_per_second": jobs / seconds}
    one, two = rounds[1], rounds[2]
    return {
        "jobs": jobs,
        "one_worker_s": one["seconds"],
        "two_workers_s": two["seconds"],
        "overhead_ms": round(one["seconds"] / jobs * 1000, 3),
        "speedup_two": round(one["seconds"] / two["seconds"], 2),
        "policy_ms": JOB_OVERHEAD * 1000,
    }


def print_table(results: dict) -> None:
    print(
        f"\n{results['jobs']:,} one-iteration jobs queued, then drained: one worker "
        f"{results['one_worker_s']} s ({results['overhead_ms']} ms per job), two workers "
        f"{results['two_workers_s']} s ({results['speedup_two']}x as fast); the policy "
        f"assumes {results['policy_ms']:g} ms per job until workers report their own"
    )


def targets(results: dict) -> list[str]:
    ratio = results["overhead_ms"] / results["policy_ms"]
    return [
        ("met    " if 0.5 <= ratio <= 2 else "MISSED ")
        + f"the policy's assumed per-job overhead is {1 / ratio:.2f}x the measured one "
        "(target within 2x)",
        ("met    " if results["speedup_two"] > 1.2 else "MISSED ")
        + f"two workers drain tiny jobs {results['speedup_two']}x as fast as one "
        "(more workers must finish sooner for the policy to start them; target above 1.2x)",
    ]
