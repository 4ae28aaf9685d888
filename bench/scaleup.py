"""`python -m bench scale-up`: a burst lands on an idle cluster (local backend, no worker
running); seconds from the first acknowledged enqueue to the first result computed by a worker
the leader started for it, and to the pool reaching its maximum."""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import requests

from bench.cluster import Cluster, wait_until
from bench.load import enqueue_many
from worker import compute

ADOPTION_GRACE = 5.0  # a new leader launches nothing for this long (node/scaling/loop.py)


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> dict:
    max_workers = os.cpu_count() or 2
    # A backlog far beyond the 5 s drain target even for two workers, of jobs that take a
    # worker well under a second each: what is measured is the reaction, not the job.
    jobs, iterations = (128, 1_000_000) if args.quick else (512, 1_000_000)
    with tempfile.TemporaryDirectory(prefix="wq-bench-scaleup-") as tmp:
        with Cluster(Path(tmp) / "c", max_workers=max_workers, request_timeout=10) as cluster:
            leader = cluster.wait_leader()
            time.sleep(ADOPTION_GRACE + 1)  # idle, past the new leader's grace
            assert cluster.status(leader)["workers"] == []
            marks: dict[str, float] = {}
            done = threading.Event()

            def watch() -> None:
                while not done.is_set():
                    try:
                        status = cluster.status(leader)
                    except requests.RequestException:
                        continue
                    now = time.monotonic()
                    if status["queue"]["completed"] > 0:
                        marks.setdefault("first_result", now)
                    if len(status["workers"]) >= max_workers:
                        marks.setdefault("max_workers", now)
                    if len(marks) == 2:
                        return
                    time.sleep(0.02)

            first = requests.put(
                f"{cluster.url(leader)}/enqueue?iterations={iterations}",
                data=b"burst 0",
                timeout=10,
            )
            start = time.monotonic()
            assert first.status_code == 200, first.text
            watcher = threading.Thread(target=watch)
            watcher.start()
            enqueue_many(cluster.urls, jobs - 1, iterations=iterations, concurrency=16)
            watcher.join(timeout=120)
            done.set()
            wait_until(lambda: len(marks) == 2, 5, "the scale-up marks")
    return {
        "jobs": jobs,
        "iterations": iterations,
        "max_workers": max_workers,
        "kernel": compute.KERNEL,
        "lanes": compute.LANES,
        "first_result_s": round(marks["first_result"] - start, 2),
        "max_workers_s": round(marks["max_workers"] - start, 2),
    }


def print_table(results: dict) -> None:
    print(
        f"\nburst of {results['jobs']} jobs x {results['iterations']:,} iterations on an idle "
        f"cluster, local backend, at most {results['max_workers']} workers; kernel "
        f"{results['kernel']}, {results['lanes']} jobs computed together per worker"
    )
    print(
        f"  first result after {results['first_result_s']:.2f} s; "
        f"{results['max_workers']} workers after {results['max_workers_s']:.2f} s"
    )


def targets(results: dict) -> list[str]:
    ok = results["first_result_s"] < 2
    return [
        ("met    " if ok else "MISSED ")
        + f"first result {results['first_result_s']:.2f} s after the burst (target under 2 s)"
    ]
