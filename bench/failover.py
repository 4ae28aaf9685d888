"""`python -m bench failover`: kill -9 the leader under light load; seconds from the kill until
an enqueue is acknowledged again, over several rounds (the killed node rejoins in between).
The nodes run with the product's default election timeouts (0.4-1.4 s)."""
from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import requests

from tests.integration.cluster import Cluster


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def _first_ack_after(cluster: Cluster, nodes: list[int], killed_at: float, limit: float = 30) -> float:
    """Clients keep enqueueing through every surviving node; the first 200 after the kill."""
    found: list[float] = []
    stop = threading.Event()

    def client(i: int) -> None:
        while not stop.is_set() and time.monotonic() - killed_at < limit:
            try:
                r = requests.put(f"{cluster.url(i)}/enqueue?iterations=1", data=b"failover",
                                 timeout=2)
                if r.status_code == 200:
                    found.append(time.monotonic())
                    stop.set()
                    return
            except requests.RequestException:
                pass
            time.sleep(0.01)

    threads = [threading.Thread(target=client, args=(i,)) for i in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if not found:
        raise RuntimeError(f"no enqueue acknowledged within {limit}s of the kill")
    return min(found) - killed_at


def _light_load(cluster: Cluster, stop: threading.Event) -> None:
    """About ten enqueues a second, round robin over the nodes, for the whole run."""
    n = 0
    while not stop.is_set():
        try:
            requests.put(f"{cluster.url(n % 3)}/enqueue?iterations=1", data=b"light load",
                         timeout=2)
        except requests.RequestException:
            pass
        n += 1
        stop.wait(0.1)


def run(args: argparse.Namespace) -> dict:
    rounds = 2 if args.quick else 5
    seconds = []
    with tempfile.TemporaryDirectory(prefix="wq-bench-failover-") as tmp:
        with Cluster(Path(tmp) / "c", max_workers=0, raft_min_timeout=0.4,
                     raft_max_timeout=1.4, request_timeout=5) as cluster:
            stop = threading.Event()
            load = threading.Thread(target=_light_load, args=(cluster, stop))
            load.start()
            try:
                for _ in range(rounds):
                    leader = cluster.wait_leader(timeout=30)
                    time.sleep(1)
                    killed_at = time.monotonic()
                    cluster.kill_node(leader)
                    seconds.append(_first_ack_after(cluster, [i for i in range(3) if i != leader],
                                                    killed_at))
                    cluster.start_node(leader)
                    time.sleep(2)
            finally:
                stop.set()
                load.join()
    return {"rounds": rounds, "seconds": [round(s, 3) for s in seconds],
            "median_s": round(statistics.median(seconds), 3), "max_s": round(max(seconds), 3)}


def print_table(results: dict) -> None:
    print(f"\nkill -9 of the leader, {results['rounds']} rounds: seconds until an enqueue is "
          "acknowledged again")
    print("  " + "  ".join(f"{s:.2f}" for s in results["seconds"]))
    print(f"  median {results['median_s']:.2f} s, max {results['max_s']:.2f} s")


def targets(results: dict) -> list[str]:
    ok = results["median_s"] < 2
    return [("met    " if ok else "MISSED ") + f"median {results['median_s']:.2f} s (target under 2 s)"]
