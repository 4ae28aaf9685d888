"""Fault injection helpers: a load generator that records what was acknowledged, a timeline,
and a checker run after the cluster is healed and drained.

The checker's rules, after every node has drained its queue and the nodes are stopped:
- every acknowledged job is in every node's store, completed, with the digest computed here;
- every job in a store was acknowledged, or was created by a request that got no 200
  ("recovered": the cluster committed it after the client gave up), never anything else;
- every idempotency key names one job, and all nodes' stores are identical.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import threading
import time
from dataclasses import dataclass, field

import requests

from bench.cluster import Cluster, expected_digest, wait_until


class Timeline:
    def __init__(self, name: str, seed: int):
        self.name = name
        self.seed = seed
        self.t0 = time.monotonic()
        self.events: list[str] = []

    def __call__(self, message: str) -> None:
        line = f"[{self.name} seed={self.seed} +{time.monotonic() - self.t0:6.2f}s] {message}"
        self.events.append(line)
        print(line, flush=True)


@dataclass
class Attempt:
    digest: str
    statuses: list = field(default_factory=list)
    job_id: str | None = None  # set once a 200 came back


class LoadGenerator:
    """Client threads enqueuing random payloads with Idempotency-Keys, retrying on any error
    with the same key on a random live node, recording every answer."""

    def __init__(
        self,
        cluster: Cluster,
        seed: int,
        threads: int = 3,
        iterations=(1, 10, 100, 1000),
        sizes=(512, 16 * 1024),
        timeout: float = 6.0,
        pace: float = 0.02,
    ):
        self.cluster = cluster
        self.seed = seed
        self.threads = threads
        self.iterations = iterations
        self.sizes = sizes
        self.timeout = timeout
        self.pace = pace  # seconds each thread rests between jobs
        self.attempts: dict[str, Attempt] = {}
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.unexpected: list[tuple] = []  # answers other than 200, 429 and 503

    def start(self) -> LoadGenerator:
        for n in range(self.threads):
            t = threading.Thread(target=self._run, args=(n,), daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(timeout=60)

    @property
    def acked(self) -> dict[str, Attempt]:
        with self._lock:
            return {k: a for k, a in self.attempts.items() if a.job_id is not None}

    def wait_acks(self, more: int, timeout: float = 60) -> None:
        target = len(self.acked) + more
        wait_until(lambda: len(self.acked) >= target, timeout, f"{more} more acknowledged enqueues")

    def send_once(self, node: int, key: str, timeout: float) -> threading.Thread:
        """One enqueue to `node` in the background, waiting up to `timeout` for its answer
        (e.g. to a paused node: the answer comes after it resumes). Recorded like the rest."""
        payload = f"one-off {key}".encode()
        attempt = Attempt(expected_digest(payload, 7))
        with self._lock:
            self.attempts[key] = attempt

        def send():
            try:
                r = requests.put(
                    f"{self.cluster.url(node)}/enqueue",
                    params={"iterations": 7},
                    data=payload,
                    headers={"Idempotency-Key": key},
                    timeout=timeout,
                )
            except requests.RequestException as e:
                attempt.statuses.append(type(e).__name__)
                return
            attempt.statuses.append(r.status_code)
            if r.status_code == 200:
                attempt.job_id = r.json()["id"]
            elif r.status_code != 503:
                self.unexpected.append((key, r.status_code, r.text[:200]))

        t = threading.Thread(target=send, daemon=True)
        t.start()
        self._workers.append(t)
        return t

    def _run(self, thread: int) -> None:
        rng = random.Random(self.seed * 1000 + thread)
        avoid: dict[int, float] = {}
        n = 0
        while not self._stop.wait(self.pace):
            key = f"s{self.seed}-t{thread}-{n}"
            n += 1
            payload = rng.randbytes(rng.randint(*self.sizes))
            iterations = rng.choice(self.iterations)
            attempt = Attempt(expected_digest(payload, iterations))
            with self._lock:
                self.attempts[key] = attempt
            # Retry until acknowledged; a key left unacknowledged when the load stops is
            # what the checker may find "recovered".
            while not self._stop.is_set():
                alive = self.cluster.alive()
                if not alive:
                    time.sleep(0.2)
                    continue
                # Like any client with failover: avoid a node that just timed out for a while.
                now = time.monotonic()
                trusted = [i for i in alive if avoid.get(i, 0) <= now]
                node = rng.choice(trusted or alive)
                try:
                    r = requests.put(
                        f"{self.cluster.url(node)}/enqueue",
                        params={"iterations": iterations},
                        data=payload,
                        headers={"Idempotency-Key": key},
                        timeout=self.timeout,
                    )
                except requests.RequestException as e:
                    attempt.statuses.append(type(e).__name__)
                    avoid[node] = time.monotonic() + 5
                    time.sleep(0.1)
                    continue
                attempt.statuses.append(r.status_code)
                if r.status_code == 200:
                    attempt.job_id = r.json()["id"]
                    break
                if r.status_code not in (429, 503):
                    self.unexpected.append((key, r.status_code, r.text[:200]))
                    break
                time.sleep(0.1)


def drain(cluster: Cluster, timeout: float = 180) -> None:
    """Wait until every node is healthy, has nothing queued or running, and agrees on the counts."""

    def drained():
        statuses = [cluster.status(i) for i in range(cluster.size)]
        queues = [s["queue"] for s in statuses]
        if any(q["queued"] or q["running"] for q in queues):
            return False
        if any(q != queues[0] for q in queues):
            return False
        return all(
            requests.get(cluster.url(i) + "/healthz", timeout=2).status_code == 200
            for i in range(cluster.size)
        )

    wait_until(drained, timeout, "every node drained and in agreement", interval=0.5)


def read_store(path) -> tuple[dict, dict]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        db.row_factory = sqlite3.Row
        jobs = {r["id"]: dict(r) for r in db.execute("SELECT * FROM jobs")}
        keys = {r["key"]: r["job_id"] for r in db.execute("SELECT key, job_id FROM idempotency")}
        return jobs, keys
    finally:
        db.close()


def check(cluster: Cluster, load: LoadGenerator, timeline: Timeline) -> dict:
    """Heal-and-drain check; returns the counts it found, raises AssertionError on any anomaly."""
    for i in range(cluster.size):
        if i not in cluster.procs:
            timeline(f"restart n{i} for the check")
            cluster.start_node(i)
    cluster.wait_leader(60)
    drain(cluster)
    timeline("drained; stopping the nodes to read their stores")
    for i in list(cluster.procs):
        cluster.kill_node(i, signal.SIGTERM)
    stores = [read_store(cluster.root / f"n{i}" / "state.db") for i in range(cluster.size)]
    jobs, keys = stores[0]
    for i, (other_jobs, other_keys) in enumerate(stores[1:], 1):
        assert other_jobs == jobs, f"n{i}'s jobs differ from n0's"
        assert other_keys == keys, f"n{i}'s idempotency keys differ from n0's"

    attempts = dict(load.attempts)
    lost, wrong, recovered, phantom = [], [], [], []
    acked_ids = set()
    for key, attempt in attempts.items():
        job_id = attempt.job_id or keys.get(key)
        if job_id is None:
            continue
        job = jobs.get(job_id)
        if attempt.job_id is not None:
            acked_ids.add(job_id)
            if job is None or keys.get(key) != job_id:
                lost.append(key)
                continue
        else:
            recovered.append(key)
        if job["status"] != "completed" or job["result"] != attempt.digest:
            wrong.append((key, job["status"], job["result"]))
    known = {attempts[k].job_id or keys.get(k) for k in attempts}
    phantom = [j for j in jobs if j not in known]
    done_seqs = [j["done_seq"] for j in jobs.values()]
    result = {
        "attempted": len(attempts),
        "acknowledged": len(acked_ids),
        "recovered": len(recovered),
        "lost": len(lost),
        "wrong": len(wrong),
        "phantom": len(phantom),
        "jobs_in_store": len(jobs),
    }
    timeline(f"check: {result}")
    assert not load.unexpected, f"unexpected answers: {load.unexpected[:5]}"
    assert not lost, f"acknowledged jobs missing: {lost[:5]}"
    assert not wrong, f"jobs not completed with the right digest: {wrong[:5]}"
    assert not phantom, f"jobs nobody enqueued: {phantom[:5]}"
    assert len(set(done_seqs)) == len(done_seqs), "a completion recorded twice"
    assert len(acked_ids) > 0, "the load generator got nothing acknowledged"
    return result
