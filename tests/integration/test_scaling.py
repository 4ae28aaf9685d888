"""Scaling on a real local cluster: workers follow the work, leave when idle, and survive a
leader change without being orphaned or doubled."""

import threading
import time

import requests

from bench.cluster import expected_digest, processes_mentioning, wait_until


def local_workers(cluster):
    return processes_mentioning("-m worker --managers " + ",".join(sorted(cluster.urls)))


def burst(cluster, count, iterations):
    """Enqueue `count` jobs as fast as possible; returns id -> payload."""
    ids = {}
    for n in range(count):
        payload = b"burst %d" % n
        r = cluster.enqueue(n % cluster.size, payload, iterations)
        assert r.status_code == 200
        ids[r.json()["id"]] = payload
    return ids


def digests(jobs, iterations):
    return {job_id: expected_digest(payload, iterations) for job_id, payload in jobs.items()}


def test_a_burst_raises_workers_to_the_max_and_idle_ones_leave(make_cluster):
    cluster = make_cluster(max_workers=3, scale_target_seconds=1)
    assert local_workers(cluster) == []
    jobs = burst(cluster, 12, 600_000)
    wait_until(lambda: len(local_workers(cluster)) == 3, 30, "three workers")
    leader = cluster.wait_leader()
    wait_until(lambda: len(cluster.status(leader)["workers"]) == 3, 30, "/status to list three")
    expected = digests(jobs, 600_000)
    for i in range(3):
        cluster.wait_completed(i, expected, timeout=120)
    scaling = cluster.status(leader)["scaling"]
    assert scaling["backend"] == "local" and scaling["launches"] == 3
    wait_until(lambda: not local_workers(cluster), 60, "idle workers to leave")
    wait_until(lambda: cluster.status(leader)["workers"] == [], 60, "/status to show none")


def test_the_minimum_stays_and_is_told_no_idle_timeout(make_cluster):
    cluster = make_cluster(max_workers=2, min_workers=1)
    wait_until(lambda: len(local_workers(cluster)) == 1, 30, "the minimum of one worker")
    time.sleep(8)  # longer than the local idle timeout
    assert len(local_workers(cluster)) == 1


def test_a_new_leader_neither_orphans_nor_doubles_the_workers(make_cluster):
    cluster = make_cluster(max_workers=3, scale_target_seconds=1, lease_timeout=5)
    jobs = burst(cluster, 15, 1_500_000)
    wait_until(lambda: len(local_workers(cluster)) == 3, 30, "three workers")
    peak = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            peak.append(len(local_workers(cluster)))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        leader = cluster.wait_leader()
        cluster.kill_node(leader)  # its workers live on and poll the others
        cluster.wait_leader()
        survivor = cluster.alive()[0]
        cluster.wait_completed(survivor, digests(jobs, 1_500_000), timeout=180)
    finally:
        stop.set()
        watcher.join()
    assert max(peak) <= 3, f"more workers than the maximum: {max(peak)}"
    # Orphans are not left behind: once idle they leave, wherever they were started.
    wait_until(lambda: not local_workers(cluster), 60, "every worker to leave when idle")


def test_workers_that_never_register_pause_launches_and_status_says_why(make_cluster, tmp_path):
    # A worker package that starts but never reaches the managers (as a broken image would):
    # it shadows the real one for the workers the leader starts, not for the nodes.
    broken = tmp_path / "broken" / "worker"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("")
    (broken / "__main__.py").write_text("import time\ntime.sleep(600)\n")
    cluster = make_cluster(
        max_workers=1,
        boot_timeout=10,
        extra_env={"PYTHONPATH": str(broken.parent), "PYTHONSAFEPATH": "1"},
    )
    leader = cluster.wait_leader()
    cluster.enqueue(0, b"waits for a worker", 1)
    wait_until(lambda: len(local_workers(cluster)) == 1, 30, "a worker to be started")
    scaling = wait_until(
        lambda: (s := cluster.status(leader)["scaling"])["boot_failures"]["in_a_row"] == 1 and s,
        60,
        "the worker to be terminated for never registering",
    )
    assert local_workers(cluster) == []
    reason = scaling["boot_failures"]["reason"]
    assert reason.startswith("1 worker never registered; next try in"), reason
    assert 0 < scaling["boot_failures"]["next_launch_in"] <= 60
    # No second launch while the wait lasts, and the scaling decision says why.
    status = cluster.status(leader)["scaling"]
    assert status["launches"] == 1
    assert status["last_decision"]["reason"].startswith("1 worker never registered")
    metrics = requests.get(cluster.url(leader) + "/metrics", timeout=10).text
    assert "wq_worker_boot_failures 1.0" in metrics.splitlines()
