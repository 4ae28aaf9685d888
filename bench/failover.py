"""`python -m bench failover`: stop the leader under light load; seconds from the signal until an
enqueue is acknowledged again, over many rounds (the stopped node rejoins in between).

Two round sets: `kill -9` (a crash: the others notice after an election timeout) and SIGTERM
(a shutdown: the leader hands over to a follower first). After SIGTERM only enqueues through a
node that already names another leader count, so the figure is the successor's, not an
acknowledgement the stopping leader gave on its way out. The nodes run with the product's
default election timeouts (0.4-1.4 s)."""

from __future__ import annotations

import argparse
import math
import signal
import statistics
import tempfile
import threading
import time
from pathlib import Path

import requests

from bench.cluster import Cluster

ROUNDS, QUICK_ROUNDS = 20, 1
HANDED_OVER = "handed Raft leadership over to"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--failover-rounds",
        type=int,
        help=f"rounds of each kind, kill -9 and "
        f"SIGTERM [default: {ROUNDS}; --quick: {QUICK_ROUNDS}]",
    )


def _first_ack_after(
    cluster: Cluster,
    nodes: list[int],
    since: float,
    not_led_by: str | None = None,
    limit: float = 30,
) -> float:
    """Clients keep enqueueing through every surviving node; the first 200 after `since`.
    With `not_led_by`, a client enqueues only once its node names another leader."""
    found: list[float] = []
    stop = threading.Event()

    def client(i: int) -> None:
        while not stop.is_set() and time.monotonic() - since < limit:
            try:
                if not_led_by is None or cluster.status(i)["leader"] not in (None, not_led_by):
                    r = requests.put(
                        f"{cluster.url(i)}/enqueue?iterations=1", data=b"failover", timeout=2
                    )
                    if r.status_code == 200:
                        found.append(time.monotonic())
                        stop.set()
                        return
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.01)

    threads = [threading.Thread(target=client, args=(i,)) for i in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if not found:
        raise RuntimeError(f"no enqueue acknowledged within {limit}s of stopping the leader")
    return min(found) - since


def _light_load(cluster: Cluster, stop: threading.Event) -> None:
    """About ten enqueues a second, round robin over the nodes, for the whole run."""
    n = 0
    while not stop.is_set():
        try:
            requests.put(
                f"{cluster.url(n % 3)}/enqueue?iterations=1", data=b"light load", timeout=2
            )
        except requests.RequestException:
            pass
        n += 1
        stop.wait(0.1)


def _round(cluster: Cluster, sig: int) -> tuple[float, bool]:
    """Stop the leader with `sig`: seconds to the next acknowledged enqueue, and whether the
    stopped node logged a hand-over."""
    leader = cluster.wait_leader(timeout=30)
    log = cluster.root / f"n{leader}.log"
    handovers = log.read_text(errors="replace").count(HANDED_OVER)
    time.sleep(1)  # a second of load on this leader before it goes
    others = [i for i in range(3) if i != leader]
    stopped_at = time.monotonic()
    proc = cluster.signal_node(leader, sig)
    seconds = _first_ack_after(
        cluster, others, stopped_at, None if sig == signal.SIGKILL else cluster.raft_addr(leader)
    )
    proc.wait(timeout=30)
    handed_over = log.read_text(errors="replace").count(HANDED_OVER) > handovers
    cluster.start_node(leader)  # the next round's wait_leader waits until it is healthy
    return seconds, handed_over


def _summary(seconds: list[float]) -> dict:
    ordered = sorted(seconds)
    return {
        "rounds": len(seconds),
        "seconds": [round(s, 3) for s in seconds],
        "median_s": round(statistics.median(seconds), 3),
        "p95_s": round(ordered[math.ceil(0.95 * len(ordered)) - 1], 3),
        "max_s": round(ordered[-1], 3),
    }


def run(args: argparse.Namespace) -> dict:
    rounds = args.failover_rounds or (QUICK_ROUNDS if args.quick else ROUNDS)
    results = {}
    with tempfile.TemporaryDirectory(prefix="wq-bench-failover-") as tmp:
        with Cluster(
            Path(tmp) / "c",
            max_workers=0,
            raft_min_timeout=0.4,
            raft_max_timeout=1.4,
            request_timeout=5,
        ) as cluster:
            stop = threading.Event()
            load = threading.Thread(target=_light_load, args=(cluster, stop))
            load.start()
            try:
                for name, sig in (("kill9", signal.SIGKILL), ("sigterm", signal.SIGTERM)):
                    measured = [_round(cluster, sig) for _ in range(rounds)]
                    results[name] = _summary([s for s, _ in measured])
                    results[name]["handed_over"] = sum(h for _, h in measured)
            finally:
                stop.set()
                load.join()
    return results


def print_table(results: dict) -> None:
    for name, title in (("kill9", "kill -9"), ("sigterm", "SIGTERM")):
        r = results[name]
        print(
            f"\n{title} of the leader, {r['rounds']} rounds: seconds until an enqueue is "
            "acknowledged again" + (" by the successor" if name == "sigterm" else "")
        )
        print("  " + "  ".join(f"{s:.2f}" for s in r["seconds"]))
        print(f"  median {r['median_s']:.2f} s, p95 {r['p95_s']:.2f} s, max {r['max_s']:.2f} s")
        if name == "sigterm":
            print(
                f"  the stopping leader logged a hand-over in {r['handed_over']} of "
                f"{r['rounds']} rounds"
            )


def targets(results: dict) -> list[str]:
    kill, term = results["kill9"], results["sigterm"]
    checks = [
        (kill["p95_s"] < 1.5, f"kill -9: p95 {kill['p95_s']:.2f} s (target under 1.5 s)"),
        (
            term["p95_s"] < 0.5,
            f"SIGTERM: successor acknowledging, p95 {term['p95_s']:.2f} s (target under 0.5 s)",
        ),
    ]
    return [("met    " if ok else "MISSED ") + text for ok, text in checks]
