"""The rolling replacement `provision upgrade` runs, driving three local node processes: each
member is stopped with SIGTERM and started again on its data directory, followers first,
while clients keep enqueueing. Every acknowledged job completes with the right result, and a
majority answered /healthz at every moment."""

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from provision.rolling import Probe, RollStopped, roll
from tests.chaos.harness import LoadGenerator


class LocalFleet:
    """The cluster's node processes as a fleet: `version` is what a roll installs; a member
    is current once started with it. `broken` versions start a node that exits at once."""

    def __init__(self, cluster, version: str, broken: bool = False):
        self.cluster = cluster
        self.version = version
        self.broken = broken
        self.running = getattr(cluster, "versions", {f"n{i}": "v1" for i in range(cluster.size)})
        cluster.versions = self.running
        self.replaced: list[str] = []

    def members(self) -> list[str]:
        return [f"n{i}" for i in range(self.cluster.size)]

    def url(self, member: str) -> str:
        return self.cluster.url(int(member[1:]))

    def current(self, member: str) -> bool:
        return self.running[member] == self.version

    def replace(self, member: str) -> None:
        i = int(member[1:])
        if i in self.cluster.procs:
            self.cluster.signal_node(i, signal.SIGTERM).wait(timeout=30)
        options = self.cluster.options
        if self.broken:
            self.cluster.options = {**options, "max_queued": -1}  # refused at start
        try:
            self.cluster.start_node(i)
        finally:
            self.cluster.options = options
        self.running[member] = self.version
        self.replaced.append(member)


def leader_member(cluster) -> str:
    return f"n{cluster.wait_leader()}"


class Watch:
    """Samples every node's /healthz at once, every 50 ms, in the background: the fewest that
    answered 200 in any sample, and when."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.fewest = cluster.size
        self.low: list[tuple[float, list[int]]] = []
        self.samples = 0
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(cluster.size)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _healthy(self, url: str) -> int | tuple[int, str]:
        """200, or the status and why; 0 when nothing answered."""
        try:
            r = requests.get(f"{url}/healthz", timeout=2)
        except requests.RequestException:
            return 0
        return 200 if r.status_code == 200 else (r.status_code, r.text)

    def _run(self) -> None:
        majority = self.cluster.size // 2 + 1
        while not self._stop.is_set():
            answers = list(self._pool.map(self._healthy, self.cluster.urls))
            healthy = answers.count(200)
            self.samples += 1
            self.fewest = min(self.fewest, healthy)
            if healthy < majority:
                self.low.append((time.monotonic(), answers))
            self._stop.wait(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)
        self._pool.shutdown()


def test_a_rolling_upgrade_under_load_loses_nothing_and_keeps_a_majority(make_cluster):
    # A lease whose reply a stopping node never delivered waits out the lease timeout before
    # its job runs again: 5 s here rather than 30.
    cluster = make_cluster(lease_timeout=5)
    for w in range(2):
        cluster.start_worker(f"w{w}")
    probe = Probe(timeout=2)
    leader = leader_member(cluster)
    fleet = LocalFleet(cluster, "v2")
    said = []
    # Four clients enqueueing all the time, each retrying with its key until acknowledged.
    load = LoadGenerator(cluster, seed=17, threads=4, iterations=(1, 10, 50), sizes=(512, 512))
    try:
        with Watch(cluster) as watch:
            load.start().wait_acks(20, 30)
            order = roll(fleet, probe, step_timeout=60, say=lambda *a: said.append(a))
            load.wait_acks(20, 30)
    finally:
        load.stop()
    assert order == fleet.replaced and sorted(order) == ["n0", "n1", "n2"]
    assert order[-1] == leader, "the leader goes last"
    assert [verb for verb, _ in said] == ["replacing", "upgraded"] * 3
    assert watch.samples > 20 and watch.low == [], f"below a majority: {watch.low}"
    acked = {a.job_id: a.digest for a in load.acked.values()}
    assert len(acked) > 60
    i = cluster.wait_leader()
    cluster.wait_completed(i, acked, timeout=120)
    # Nothing new: a second roll replaces nothing.
    assert roll(fleet, probe, step_timeout=60, say=lambda *a: said.append(a)) == []
    assert said[-1][0] == "current" and fleet.replaced == order


def test_a_step_that_never_becomes_healthy_stops_the_roll_with_a_majority_serving(make_cluster):
    cluster = make_cluster()
    probe = Probe(timeout=2)
    leader = leader_member(cluster)
    broken = LocalFleet(cluster, "v2", broken=True)
    with pytest.raises(RollStopped) as stopped:
        roll(broken, probe, step_timeout=8, say=lambda *a: None)
    (first,) = broken.replaced
    assert first != leader
    message = str(stopped.value)
    assert f"manager {first} did not become healthy and caught up within 8s" in message
    assert "(last: unreachable)" in message and "Replaced so far: none" in message
    # The other two still serve, and a roll that refuses to start says why.
    others = [m for m in broken.members() if m != first]
    assert all(probe.health(broken.url(m)) == "ok" for m in others)
    with pytest.raises(RollStopped, match=f"not replacing .*{first} is unreachable"):
        roll(broken, probe, step_timeout=8, say=lambda *a: None)
    # A good version goes on from there: every member, the broken one included.
    fixed = LocalFleet(cluster, "v3")
    order = roll(fixed, probe, step_timeout=60, say=lambda *a: None)
    assert sorted(order) == ["n0", "n1", "n2"] and order[0] == first
    assert all(probe.health(fixed.url(m)) == "ok" for m in fixed.members())
