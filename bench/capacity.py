"""`python -m bench capacity`: a store holding a million jobs, completed and (a second
cluster) queued: each node's resident memory, the latency of `pullCompleted?top=1000` and
`/work/{id}`, a snapshot of the leader's store (how long it held Raft's thread, how long it
took to write, and whether any election followed), and a node's restart-to-healthy time.

The jobs go in through the public API (16-byte payloads, one iteration), so filling a store
takes most of the run: about 20 minutes per million jobs on a 2-core machine."""

from __future__ import annotations

import argparse
import math
import os
import random
import signal
import tempfile
import time
from pathlib import Path

import requests

from bench.cluster import AUTH, Cluster, wait_until
from bench.load import enqueue_many

VARIANTS = ("completed", "queued")
PROBES = 1000  # sequential requests per latency figure


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--jobs", type=int, help="jobs each store holds [default: 1,000,000; --quick: 1,000]"
    )
    p.add_argument(
        "--capacity-variants",
        default=",".join(VARIANTS),
        help="which stores to fill: completed jobs, queued jobs or both [default: both]",
    )


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return round(kb / 1024, 1)


def percentiles(seconds: list[float]) -> dict[str, float]:
    seconds = sorted(seconds)
    return {
        "p50_ms": round(seconds[len(seconds) // 2] * 1000, 2),
        "p99_ms": round(seconds[math.ceil(0.99 * len(seconds)) - 1] * 1000, 2),
    }


def timed(session: requests.Session, method: str, urls: list[str], check) -> dict[str, float]:
    """Sequential requests, one per URL; their latency percentiles."""
    latencies = []
    for url in urls:
        t = time.perf_counter()
        r = session.request(method, url, timeout=30)
        latencies.append(time.perf_counter() - t)
        check(r)
    return percentiles(latencies)


def snapshot(cluster: Cluster) -> dict:
    """Compact the leader's log now and wait for the snapshot: how long it held Raft's thread
    on the leader, how long it took, and whether the term moved (an election) meanwhile."""
    leader = cluster.wait_leader()
    before = cluster.status(leader)["raft"]
    terms = [cluster.status(i)["raft"]["term"] for i in range(cluster.size)]
    previous = (before["last_snapshot"] or {}).get("at")
    requests.post(cluster.internal_url(leader) + "/internal/compact", headers=AUTH, timeout=10)

    def written():
        last = cluster.status(leader)["raft"]["last_snapshot"]
        if last and last["at"] != previous and last["seconds"] is not None:
            return last
        return None

    last = wait_until(written, 600, "the leader's snapshot", interval=0.2)
    after = [cluster.status(i)["raft"]["term"] for i in range(cluster.size)]
    return {
        "index": last["index"],
        "raft_paused_ms": last["raft_paused_ms"],
        "pin_ms": last["pin_ms"],
        "install_ms": last["install_ms"],
        "seconds": last["seconds"],
        "elections": max(a - b for a, b in zip(after, terms, strict=True)),
        "bytes": os.path.getsize(cluster.root / f"n{leader}" / "raft.snapshot"),
    }


def fill(cluster: Cluster, jobs: int, completed: bool) -> tuple[list[str], float]:
    started = time.monotonic()
    if completed:
        for n in range(os.cpu_count() or 2):
            cluster.start_worker(f"w{n}")
    ids = enqueue_many(cluster.urls, jobs, body_bytes=16, iterations=1)
    state = "completed" if completed else "queued"
    wait_until(
        lambda: all(cluster.status(i)["queue"][state] >= jobs for i in range(cluster.size)),
        7200,
        f"{jobs} {state} jobs on every node",
        interval=1,
    )
    for proc in cluster.workers:
        proc.terminate()
    return ids, time.monotonic() - started


def measure(root: Path, jobs: int, completed: bool) -> dict:
    with Cluster(root, max_workers=0, request_timeout=10, max_queued=10**8) as cluster:
        ids, seconds = fill(cluster, jobs, completed)
        result: dict = {"jobs": jobs, "fill_s": round(seconds, 1)}
        result["rss_mb"] = [rss_mb(cluster.procs[i].pid) for i in range(cluster.size)]
        session = requests.Session()
        if completed:

            def full_page(r: requests.Response) -> None:
                assert r.status_code == 200 and len(r.json()) == min(1000, jobs), r.text[:200]

            result["pull_top1000"] = timed(
                session,
                "POST",
                [f"{cluster.url(n % 3)}/pullCompleted?top=1000" for n in range(PROBES)],
                full_page,
            )
        rng = random.Random(1)
        state = "completed" if completed else "queued"

        def known(r: requests.Response) -> None:
            assert r.status_code == 200 and r.json()["status"] == state, r.text[:200]

        result["work_by_id"] = timed(
            session,
            "GET",
            [f"{cluster.url(n % 3)}/work/{rng.choice(ids)}" for n in range(PROBES)],
            known,
        )
        result["snapshot"] = snapshot(cluster)
        cluster.kill_node(0, signal.SIGTERM)
        t = time.monotonic()
        cluster.start_node(0)
        wait_until(
            lambda: requests.get(cluster.url(0) + "/healthz", timeout=2).ok,
            300,
            "the restarted node to be healthy",
            interval=0.05,
        )
        result["restart_to_healthy_s"] = round(time.monotonic() - t, 2)
    return result


def run(args: argparse.Namespace) -> dict:
    jobs = args.jobs or (1_000 if args.quick else 1_000_000)
    variants = [v for v in args.capacity_variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(
            f"--capacity-variants: {', '.join(sorted(unknown))} is not one of {VARIANTS}"
        )
    with tempfile.TemporaryDirectory(prefix="wq-bench-capacity-") as tmp:
        return {v: measure(Path(tmp) / v, jobs, completed=v == "completed") for v in variants}


def print_table(results: dict) -> None:
    for variant, r in results.items():
        how = "enqueued and completed" if variant == "completed" else "enqueued"
        print(f"\n{r['jobs']:,} {variant} jobs ({how} in {r['fill_s']} s)")
        print(f"  node RSS: {', '.join(f'{m} MB' for m in r['rss_mb'])}")
        for label, key in (
            ("pullCompleted?top=1000", "pull_top1000"),
            ("/work/{id}", "work_by_id"),
        ):
            if key in r:
                p = r[key]
                print(
                    f"  {label}: p50 {p['p50_ms']} ms, p99 {p['p99_ms']} ms "
                    f"({PROBES:,} sequential requests)"
                )
        s = r["snapshot"]
        print(
            f"  leader's snapshot at entry {s['index']:,}: {s['bytes'] / 1e6:.0f} MB written in "
            f"{s['seconds']} s, Raft's thread held {s['raft_paused_ms']} ms "
            f"(pinning {s['pin_ms']}, moving into place {s['install_ms']}), "
            f"{s['elections']} elections meanwhile"
        )
        print(f"  restart to healthy: {r['restart_to_healthy_s']} s")


def targets(results: dict) -> list[str]:
    checks = []
    for variant, r in results.items():
        s = r["snapshot"]
        checks += [
            (
                max(r["rss_mb"]) < 400,
                f"{variant}: RSS at most {max(r['rss_mb'])} MB (target under 400)",
            ),
            (
                r["restart_to_healthy_s"] < 30,
                f"{variant}: restart to healthy {r['restart_to_healthy_s']} s (target under 30)",
            ),
            (
                s["raft_paused_ms"] < 50 and s["elections"] == 0,
                f"{variant}: a snapshot held Raft {s['raft_paused_ms']} ms, "
                f"{s['elections']} elections (target under 50 ms, none)",
            ),
        ]
        if "pull_top1000" in r:
            p99 = r["pull_top1000"]["p99_ms"]
            checks.append(
                (p99 < 50, f"{variant}: pullCompleted?top=1000 p99 {p99} ms (target under 50)")
            )
    note = [
        f"(with {r['jobs']:,} jobs; the targets are for 1,000,000)"
        for r in list(results.values())[:1]
        if r["jobs"] < 1_000_000
    ]
    return [("met    " if ok else "MISSED ") + text for ok, text in checks] + note
