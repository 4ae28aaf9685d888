"""Fault injection under load. Each scenario has a seed and prints its timeline; the checker
(harness.check) then heals the cluster, drains it and compares every store with what the
clients were told.

The default run takes the quick variant of each scenario; `./run_tests.sh -m chaos` runs the
full ones (more rounds, longer load)."""

import os
import random
import signal
import time

import pytest
import requests

from bench.cluster import AUTH, processes_mentioning, wait_until
from tests.chaos.harness import LoadGenerator, Timeline, check
from tests.chaos.netns import Network, unavailable_reason

QUICK = {"rounds": 1, "acks": 15}
FULL = {"rounds": 4, "acks": 60}
MODES = [pytest.param(QUICK, id="quick"), pytest.param(FULL, id="full", marks=pytest.mark.chaos)]
OPTIONS = dict(max_workers=2, lease_timeout=3, max_attempts=20, request_timeout=5)


def seed_for(name: str) -> int:
    return int(os.environ.get("CHAOS_SEED", sum(map(ord, name))))


def start(make_cluster, name, **options):
    seed = seed_for(name)
    timeline = Timeline(name, seed)
    cluster = make_cluster(**{**OPTIONS, **options})
    timeline(f"cluster up, leader n{cluster.wait_leader()}")
    load = LoadGenerator(cluster, seed).start()
    return cluster, load, timeline, random.Random(seed)


def finish(cluster, load, timeline):
    timeline("stopping the load")
    load.stop()
    return check(cluster, load, timeline)


@pytest.mark.parametrize("mode", MODES)
def test_killing_the_leader_repeatedly_loses_nothing(make_cluster, mode):
    cluster, load, timeline, _ = start(make_cluster, "kill-leader")
    for _ in range(mode["rounds"]):
        load.wait_acks(mode["acks"])
        leader = cluster.wait_leader()
        timeline(f"kill -9 leader n{leader}")
        cluster.kill_node(leader)
        timeline(f"new leader n{cluster.wait_leader()}")
        load.wait_acks(mode["acks"])
        timeline(f"restart n{leader}")
        cluster.start_node(leader)
    finish(cluster, load, timeline)


@pytest.mark.parametrize("mode", MODES)
def test_killing_a_follower_loses_nothing(make_cluster, mode):
    cluster, load, timeline, rng = start(make_cluster, "kill-follower")
    for _ in range(mode["rounds"]):
        load.wait_acks(mode["acks"])
        leader = cluster.wait_leader()
        victim = rng.choice([i for i in cluster.alive() if i != leader])
        timeline(f"kill -9 follower n{victim}")
        cluster.kill_node(victim)
        load.wait_acks(mode["acks"])
        timeline(f"restart n{victim}")
        cluster.start_node(victim)
        cluster.wait_leader()
    finish(cluster, load, timeline)


@pytest.mark.parametrize("mode", MODES)
def test_a_paused_leader_acknowledges_nothing_stale(make_cluster, mode):
    cluster, load, timeline, _ = start(make_cluster, "pause-leader")
    for round_ in range(mode["rounds"]):
        load.wait_acks(mode["acks"])
        leader = cluster.wait_leader()
        proc = cluster.procs[leader]
        timeline(f"SIGSTOP leader n{leader}")
        proc.send_signal(signal.SIGSTOP)
        # Requests that reach the paused leader are answered only after it resumes, by a
        # node that still believes it leads: they must fail, or be committed by the new term.
        stale = [load.send_once(leader, f"stale-{round_}-{n}", timeout=120) for n in range(3)]
        paused = dict(cluster.procs)
        paused.pop(leader)
        # Wait for the others to elect a new leader, then some more work through them.
        wait_until(
            lambda others=paused: any(cluster.status(i)["role"] == "leader" for i in others),
            30,
            "a new leader among the others",
        )
        timeline("new leader elected while the old one is paused")
        load.wait_acks(mode["acks"])
        time.sleep(3 * OPTIONS.get("raft_max_timeout", 0.9))
        timeline(f"SIGCONT n{leader}")
        proc.send_signal(signal.SIGCONT)
        timeline(f"leader after resume: n{cluster.wait_leader()}")
        for t in stale:
            t.join(timeout=60)
        answers = [load.attempts[f"stale-{round_}-{n}"].statuses for n in range(3)]
        timeline(f"answers the paused leader gave after resuming: {answers}")
    finish(cluster, load, timeline)


@pytest.mark.parametrize("mode", MODES)
def test_killing_workers_mid_job_loses_nothing(make_cluster, mode):
    cluster, load, timeline, rng = start(make_cluster, "kill-workers")
    load.iterations = (20_000, 100_000, 300_000)
    load.pace = 0.3
    pattern = "-m worker --managers " + ",".join(sorted(cluster.urls))
    for _ in range(mode["rounds"] * 3):
        load.wait_acks(max(5, mode["acks"] // 3))
        workers = wait_until(lambda: processes_mentioning(pattern), 30, "a local worker")
        victim = rng.choice(workers)
        timeline(f"kill -9 worker pid {victim}")
        os.kill(victim, signal.SIGKILL)
    finish(cluster, load, timeline)


@pytest.mark.parametrize("mode", MODES)
def test_killing_every_node_and_restarting_loses_nothing(make_cluster, mode):
    cluster, load, timeline, _ = start(make_cluster, "kill-all")
    for _ in range(mode["rounds"]):
        load.wait_acks(mode["acks"])
        for i in cluster.alive():
            timeline(f"kill -9 n{i}")
            cluster.kill_node(i)
        time.sleep(1)
        for i in range(cluster.size):
            timeline(f"restart n{i}")
            cluster.start_node(i)
        timeline(f"leader n{cluster.wait_leader(60)}")
    load.wait_acks(mode["acks"])
    finish(cluster, load, timeline)


@pytest.mark.parametrize("mode", MODES)
def test_a_node_restarted_after_log_compaction_catches_up(make_cluster, mode):
    cluster, load, timeline, rng = start(make_cluster, "compaction", log_compaction_entries=50)
    for _ in range(mode["rounds"]):
        load.wait_acks(mode["acks"])
        victim = rng.choice(cluster.alive())
        timeline(f"kill -9 n{victim}")
        cluster.kill_node(victim)
        load.wait_acks(mode["acks"])
        for i in cluster.alive():
            requests.post(cluster.url(i) + "/internal/compact", headers=AUTH, timeout=5)
        timeline("forced log compaction on the others")
        load.wait_acks(mode["acks"])
        timeline(f"restart n{victim}")
        cluster.start_node(victim)
        cluster.wait_leader(60)
        log = cluster.root / f"n{victim}.log"
        wait_until(
            lambda log=log: "installing Raft snapshot" in log.read_text(),
            30,
            f"n{victim} to install a snapshot from the leader",
        )
        timeline(f"n{victim} installed the leader's snapshot")
    finish(cluster, load, timeline)


@pytest.fixture
def network():
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"real network partitions need network namespaces: {reason}")
    net = Network(3).up()
    try:
        yield net
    finally:
        net.down()


@pytest.mark.parametrize("mode", MODES)
def test_a_partitioned_leader_acknowledges_nothing_it_cannot_commit(network, make_cluster, mode):
    cluster, load, timeline, _ = start(make_cluster, "partition", network=network)
    for round_ in range(mode["rounds"]):
        load.wait_acks(mode["acks"])
        leader = cluster.wait_leader()
        majority = [i for i in range(cluster.size) if i != leader]
        timeline(
            f"partition: leader n{leader} cut off from n{majority[0]} and n{majority[1]}; "
            "clients still reach every node"
        )
        network.isolate(leader)
        stale = [load.send_once(leader, f"minority-{round_}-{n}", timeout=30) for n in range(3)]
        wait_until(
            lambda m=majority: any(cluster.status(i)["role"] == "leader" for i in m),
            30,
            "a new leader in the majority",
        )
        timeline("the majority elected a leader")
        load.wait_acks(mode["acks"])
        # The minority still answers reads from its own replica, and says it is not healthy.
        assert requests.get(cluster.url(leader) + "/status", timeout=5).status_code == 200
        assert requests.post(cluster.url(leader) + "/pullCompleted", timeout=5).status_code == 200
        wait_until(
            lambda i=leader: (
                requests.get(cluster.url(i) + "/healthz", timeout=5).status_code == 503
            ),
            15,
            "the cut-off node to report itself unhealthy",
        )
        for t in stale:
            t.join(timeout=30)
        answers = [load.attempts[f"minority-{round_}-{n}"].statuses for n in range(3)]
        timeline(f"the cut-off node answered writes with {answers}")
        assert all(a == [503] for a in answers), "the minority acknowledged a write"
        timeline("heal the partition")
        network.heal()
        timeline(f"leader after healing: n{cluster.wait_leader(60)}")
    finish(cluster, load, timeline)
