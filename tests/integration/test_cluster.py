"""A real three-node cluster with workers: correct results everywhere, nothing lost on failures."""

import json
import os
import random
import signal
import threading
import time

import pytest
import requests

from bench.cluster import AUTH, expected_digest, processes_mentioning, wait_until


def enqueue_many(
    cluster, count, sizes=(16 * 1024, 256 * 1024), iterations=(1, 10, 100, 1000, 5000), seed=1
):
    """Enqueue `count` random payloads round-robin over the live nodes; id -> expected digest."""
    rng = random.Random(seed)
    expected = {}
    nodes = cluster.alive()
    for n in range(count):
        payload = rng.randbytes(rng.randint(*sizes))
        its = rng.choice(iterations)
        r = cluster.enqueue(nodes[n % len(nodes)], payload, its)
        assert r.status_code == 200, r.text
        expected[r.json()["id"]] = expected_digest(payload, its)
    return expected


def local_workers(cluster):
    """What the command line of a local worker of this cluster contains."""
    return "-m worker --managers " + ",".join(sorted(cluster.urls))


def test_results_match_independent_digests_on_every_node(working_cluster):
    cluster = working_cluster
    before = cluster.status(0)["queue"]  # the same on every node (the fixture waits for that)
    expected = enqueue_many(cluster, 50)
    for i in range(3):
        cluster.wait_completed(i, expected, timeout=120)
    for i in range(3):
        # Newest first: this test's jobs are the latest 50 completions.
        pulled = {j["id"]: j["result"] for j in cluster.completed(i, top=50)}
        assert pulled == expected
        assert cluster.status(i)["queue"] == {
            "queued": 0,
            "running": 0,
            "completed": before["completed"] + 50,
            "failed": before["failed"],
        }


def test_an_empty_payload_is_work_like_any_other(working_cluster):
    cluster = working_cluster
    r = requests.put(f"{cluster.url(1)}/enqueue", params={"iterations": "7"}, timeout=10)
    assert r.status_code == 200, r.text
    job_id = r.json()["id"]
    cluster.wait_completed(2, {job_id: expected_digest(b"", 7)})
    assert cluster.job(0, job_id)["size"] == 0


def test_pull_completed_lists_newest_first_with_the_contract_fields(working_cluster):
    cluster = working_cluster
    ids = []
    for n in range(3):
        r = cluster.enqueue(0, b"job %d" % n, 1)
        ids.append(r.json()["id"])
        cluster.wait_completed(0, {r.json()["id"]: expected_digest(b"job %d" % n, 1)})
    listed = cluster.completed(1, top=2)
    assert [j["id"] for j in listed] == ids[::-1][:2]
    assert set(listed[0]) == {"id", "result", "iterations", "completed_at"}
    job = cluster.job(2, ids[0])
    assert job["status"] == "completed" and job["size"] == 5 and job["iterations"] == 1


def test_enqueue_through_a_follower_is_visible_there_at_once(idle_cluster):
    cluster = idle_cluster
    follower = next(i for i in range(3) if i != cluster.wait_leader())
    r = cluster.enqueue(follower, b"hello", 3)
    assert r.status_code == 200
    job = cluster.job(follower, r.json()["id"])
    assert job["status"] == "queued" and job["size"] == 5 and job["iterations"] == 3


def test_every_acknowledged_enqueue_survives_killing_the_leader(make_cluster):
    # A lease the killed leader committed but never answered is the worker's only when its
    # lease expires: 5 s here, not the default 30.
    cluster = make_cluster(lease_timeout=5)
    # Workers of their own, polling every node (a new leader launches local ones only after
    # its adoption grace), computing while the leader dies.
    for n in range(2):
        cluster.start_worker(f"w{n}")
    leader = cluster.wait_leader()
    acked: dict[str, str] = {}
    stop = threading.Event()

    def client(seed):
        rng = random.Random(seed)
        while not stop.is_set():
            payload = rng.randbytes(16 * 1024)
            its = rng.choice((1, 100, 1000))
            node = rng.choice(cluster.alive())
            try:
                r = cluster.enqueue(node, payload, its, timeout=10)
            except requests.RequestException:
                continue
            if r.status_code == 200:
                acked[r.json()["id"]] = expected_digest(payload, its)
            else:
                assert r.status_code == 503, r.text

    threads = [threading.Thread(target=client, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(acked) >= 40, 60, "40 acknowledged enqueues")
        before = len(acked)
        cluster.kill_node(leader)
        wait_until(lambda: len(acked) >= before + 40, 60, "enqueues acknowledged after the kill")
    finally:
        stop.set()
        for t in threads:
            t.join()
    survivors = cluster.alive()
    for i in survivors:
        cluster.wait_completed(i, acked, timeout=120)
    # The killed node comes back and catches up with everything.
    cluster.start_node(leader)
    cluster.wait_completed(leader, acked, timeout=60)


def test_a_leader_stopped_with_sigterm_hands_over_before_it_goes(make_cluster):
    cluster = make_cluster()
    leader = cluster.wait_leader()
    others = [i for i in range(3) if i != leader]
    proc = cluster.signal_node(leader, signal.SIGTERM)

    def successor_acknowledges():
        # Only through a node that names another leader: an enqueue the stopping leader
        # commits before it hands over proves nothing about its successor.
        for i in others:
            if cluster.status(i)["leader"] in (None, cluster.raft_addr(leader)):
                continue
            r = cluster.enqueue(i, b"after SIGTERM", 1, timeout=1)
            if r.status_code == 200:
                return r.json()["id"]
        return None

    # An election timeout alone is 0.3-0.9 s here, and the node takes a second or more to
    # close before the others would even start counting it.
    job_id = wait_until(
        successor_acknowledges, 3, "a successor acknowledging an enqueue", interval=0.01
    )
    assert proc.wait(timeout=20) == 0
    successor = cluster.wait_leader(timeout=10)
    assert successor in others
    assert cluster.job(successor, job_id)["status"] == "queued"
    log = (cluster.root / f"n{leader}.log").read_text()
    assert f"handed Raft leadership over to {cluster.raft_addr(successor)}" in log


def test_a_job_whose_worker_dies_completes_on_another_worker(make_cluster):
    cluster = make_cluster(lease_timeout=2)
    payload = os.urandom(20000)
    iterations = 4_000_000  # several seconds of work
    job_id = cluster.enqueue(0, payload, iterations).json()["id"]
    first = cluster.start_worker("doomed")
    wait_until(lambda: cluster.job(1, job_id).get("worker") == "doomed", 30, "the job leased")
    first.kill()
    first.wait()
    cluster.start_worker("rescuer")
    cluster.wait_completed(2, {job_id: expected_digest(payload, iterations)}, timeout=90)
    job = cluster.job(0, job_id)
    assert job["attempts"] == 2


def test_a_job_is_failed_once_its_leases_run_out(make_cluster):
    cluster = make_cluster(lease_timeout=1, max_attempts=2)
    job_id = cluster.enqueue(1, b"abandoned", 1).json()["id"]
    for attempt in (1, 2):
        # A worker that leases and then says nothing again.
        r = requests.post(
            cluster.url(0) + "/internal/lease",
            headers=AUTH,
            timeout=30,
            json={"worker": "silent", "wait": 10},
        )
        assert r.status_code == 200 and [j["id"] for j in r.json()["jobs"]] == [job_id]
        assert r.json()["jobs"][0]["attempt"] == attempt
    job = wait_until(
        lambda: (j := cluster.job(2, job_id))["status"] == "failed" and j, 30, "the job failed"
    )
    assert "lease expired" in job["error"] and "2 attempts" in job["error"]
    # Counted on the replica that showed the failure (another may not have applied it yet),
    # whose counters follow its store a moment after the store has the job failed.
    wait_until(
        lambda: cluster.status(2)["queue"]["failed"] == 1, 5, "the failure counted on node 2"
    )


def test_a_second_completion_does_not_change_the_result(working_cluster):
    cluster = working_cluster
    payload = b"twice"
    job_id = cluster.enqueue(0, payload, 2).json()["id"]
    cluster.wait_completed(0, {job_id: expected_digest(payload, 2)})
    r = requests.post(
        cluster.url(1) + "/internal/complete",
        headers=AUTH,
        timeout=10,
        json={"worker": "late", "results": [{"id": job_id, "result": "0" * 128}]},
    )
    assert r.status_code == 200 and r.json()["accepted"] == []
    for i in range(3):
        assert cluster.job(i, job_id)["result"] == expected_digest(payload, 2)


def test_a_worker_fails_over_when_its_first_manager_is_down(make_cluster):
    cluster = make_cluster()
    dead = "http://127.0.0.1:9"  # discard port: nothing listens
    cluster.start_worker("failover", [dead] + cluster.urls)
    payload = b"failover"
    job_id = cluster.enqueue(2, payload, 50).json()["id"]
    cluster.wait_completed(2, {job_id: expected_digest(payload, 50)})


def test_a_restarted_node_catches_up_after_log_compaction(make_cluster):
    cluster = make_cluster(log_compaction_entries=20)
    cluster.start_worker("w")  # no adoption grace to wait out, unlike a leader's local worker
    expected = enqueue_many(cluster, 15, sizes=(100, 2000), iterations=(1, 10))
    for i in range(3):
        cluster.wait_completed(i, expected)
    victim = next(i for i in range(3) if i != cluster.wait_leader())
    cluster.kill_node(victim)
    more = enqueue_many(cluster, 30, sizes=(100, 2000), iterations=(1, 10), seed=2)
    expected.update(more)
    survivors = cluster.alive()
    for i in survivors:
        cluster.wait_completed(i, expected)
        r = requests.post(cluster.url(i) + "/internal/compact", headers=AUTH, timeout=10)
        assert r.status_code == 200
    for i in survivors:
        snapshot = cluster.root / f"n{i}" / "raft.snapshot"
        wait_until(snapshot.exists, 20, "a snapshot")
    cluster.start_node(victim)
    cluster.wait_completed(victim, expected, timeout=60)
    reference = cluster.completed(survivors[0])
    assert cluster.completed(victim) == reference
    assert cluster.status(victim)["queue"] == cluster.status(survivors[0])["queue"]


def test_nothing_acknowledged_is_lost_when_all_nodes_die_and_restart(make_cluster):
    cluster = make_cluster(log_compaction_entries=30)
    cluster.start_worker("before")  # no adoption grace to wait out, unlike a local worker
    done = enqueue_many(cluster, 10, sizes=(1000, 20000), iterations=(1, 100))
    for i in range(3):
        cluster.wait_completed(i, done)
    requests.post(cluster.url(0) + "/internal/compact", headers=AUTH, timeout=10)
    for i in range(3):
        cluster.kill_node(i)
    # Workers outlive their managers; kill those too, so queued work waits for the restart.
    for pgid in cluster.groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for i in range(3):
        cluster.start_node(i)
    cluster.wait_leader()
    for i in range(3):
        cluster.wait_completed(i, done)
    cluster.start_worker("after")
    cluster2_pending = enqueue_many(cluster, 10, sizes=(1000, 20000), iterations=(1, 100), seed=3)
    for i in range(3):
        cluster.wait_completed(i, {**done, **cluster2_pending})


def test_stopping_the_nodes_stops_their_workers(make_cluster):
    cluster = make_cluster(max_workers=2, min_workers=2)
    pattern = local_workers(cluster)
    wait_until(lambda: len(processes_mentioning(pattern)) == 2, 30, "the minimum of two workers")
    for i in cluster.alive():
        cluster.kill_node(i, signal.SIGTERM)
    wait_until(lambda: not processes_mentioning(pattern), 20, "no worker left")


def test_a_released_job_goes_back_to_the_queue_at_once(make_cluster):
    cluster = make_cluster()
    job_id = cluster.enqueue(0, b"give it back", 1).json()["id"]
    r = requests.post(
        cluster.url(1) + "/internal/lease",
        headers=AUTH,
        timeout=30,
        json={"worker": "w1", "wait": 5},
    )
    assert [j["id"] for j in r.json()["jobs"]] == [job_id]
    r = requests.post(
        cluster.url(2) + "/internal/release",
        headers=AUTH,
        timeout=10,
        json={"worker": "w1", "jobs": [job_id], "reason": "stopping"},
    )
    assert r.status_code == 200 and r.json()["released"] == [job_id]
    job = wait_until(
        lambda: (j := cluster.job(0, job_id))["status"] == "queued" and j,
        10,
        "the job queued again",
    )
    assert job["attempts"] == 1


def test_a_node_serves_a_payload_it_lacks_by_fetching_it_from_a_peer(idle_cluster):
    import hashlib

    cluster = idle_cluster
    payload = os.urandom(5000)
    digest = hashlib.sha256(payload).hexdigest()
    job_id = os.urandom(16).hex()  # no job has it: the payload alone is stored
    manifest = json.dumps([{"id": job_id, "size": len(payload), "digest": digest}]).encode()
    r = requests.post(
        f"{cluster.url(0)}/internal/payloads",
        data=manifest + b"\n" + payload,
        timeout=10,
        headers=AUTH,
    )
    assert r.status_code == 200 and r.json() == {"stored": 1}
    r = requests.get(
        f"{cluster.url(1)}/internal/payloads/{job_id}",
        params={"digest": digest},
        headers=AUTH,
        timeout=10,
    )
    assert r.status_code == 200 and r.content == payload
    r = requests.get(f"{cluster.url(2)}/internal/payloads/{job_id}", headers=AUTH, timeout=10)
    assert r.status_code == 404 and "digest" in r.json()["error"]
    wrong = hashlib.sha256(b"other").hexdigest()
    r = requests.get(
        f"{cluster.url(2)}/internal/payloads/{job_id}",
        params={"digest": wrong},
        headers=AUTH,
        timeout=10,
    )
    assert r.status_code == 404


def test_a_worker_reads_the_payloads_of_its_lease_in_one_call(idle_cluster):
    import hashlib

    cluster = idle_cluster
    payloads = [os.urandom(3000 + n) for n in range(3)]
    ids = [cluster.enqueue(n, p, 5).json()["id"] for n, p in enumerate(payloads)]
    digests = [hashlib.sha256(p).hexdigest() for p in payloads]
    unknown = {"id": os.urandom(16).hex(), "digest": "0" * 64}
    jobs = [{"id": i, "digest": d} for i, d in zip(ids, digests, strict=True)]
    wait_until(
        lambda: all(cluster.job(1, i).get("status") == "queued" for i in ids),
        10,
        "the jobs on node 1",
    )
    r = requests.post(
        f"{cluster.url(1)}/internal/payloads/read",
        json={"jobs": [unknown, *jobs]},
        headers=AUTH,
        timeout=10,
    )
    assert r.status_code == 200
    # Read independently of the node's code: a JSON manifest line, then the bytes in order.
    head, rest = r.content.split(b"\n", 1)
    manifest = json.loads(head)
    assert [(m["id"], m["size"], m["digest"]) for m in manifest] == [
        (i, len(p), d) for i, p, d in zip(ids, payloads, digests, strict=True)
    ]
    assert rest == b"".join(payloads)
    r = requests.post(
        f"{cluster.url(1)}/internal/payloads/read",
        json={"jobs": [unknown]},
        headers=AUTH,
        timeout=10,
    )
    assert r.status_code == 200 and r.content == b""
    for bad in ({"jobs": []}, {"jobs": [{"id": ids[0]}]}, {"jobs": [unknown] * 65}, {}):
        r = requests.post(
            f"{cluster.url(1)}/internal/payloads/read", json=bad, headers=AUTH, timeout=10
        )
        assert r.status_code == 400 and r.json()["error"].startswith("jobs:")


def test_a_worker_stopped_mid_job_gives_the_job_back_at_once(make_cluster):
    cluster = make_cluster(lease_timeout=60)
    payload = b"interrupted"
    job_id = cluster.enqueue(0, payload, 9_000_000).json()["id"]  # ~13 s of work
    worker = cluster.start_worker("stopping")
    wait_until(lambda: cluster.job(1, job_id).get("worker") == "stopping", 30, "the job leased")
    started = time.monotonic()
    worker.terminate()
    assert worker.wait(timeout=10) == 0
    wait_until(lambda: cluster.job(2, job_id)["status"] == "queued", 10, "the job queued again")
    assert time.monotonic() - started < 10  # not the 60 s lease timeout


def test_a_full_queue_answers_429_with_retry_after(make_cluster):
    cluster = make_cluster(max_queued=2)
    for n in range(2):
        assert cluster.enqueue(n, b"fill %d" % n, 1).status_code == 200
    wait_until(
        lambda: all(cluster.status(i)["queue"]["queued"] == 2 for i in range(3)),
        10,
        "every node to have applied both",
    )
    r = cluster.enqueue(2, b"one too many", 1)
    assert r.status_code == 429
    assert r.headers["Retry-After"] and r.json()["error"].startswith("queue:")


def test_a_worker_leasing_several_jobs_keeps_all_their_leases_alive(make_cluster):
    cluster = make_cluster(lease_timeout=2)
    jobs = {}
    for n in range(4):
        payload = b"batch %d" % n
        jobs[cluster.enqueue(n % 3, payload, 1_000_000).json()["id"]] = payload
    cluster.start_worker("batcher", None, "--max-jobs", "4")
    expected = {job_id: expected_digest(p, 1_000_000) for job_id, p in jobs.items()}
    cluster.wait_completed(0, expected, timeout=60)
    # Each job was leased once: the later ones' leases did not expire while they waited.
    assert [cluster.job(1, job_id)["attempts"] for job_id in jobs] == [1, 1, 1, 1]


@pytest.mark.parametrize("survivor_role", ["leader", "follower"])
def test_a_node_left_alone_says_so_and_refuses_writes_at_once(make_cluster, survivor_role):
    """With both peers dead, the survivor must not claim health: a follower connected to no
    one never starts an election in pysyncobj, so it would keep naming the dead leader."""
    cluster = make_cluster()
    leader = cluster.wait_leader()
    survivor = leader if survivor_role == "leader" else (leader + 1) % 3
    for i in range(3):
        if i != survivor:
            cluster.kill_node(i)
    url = cluster.url(survivor)
    wait_until(
        lambda: requests.get(url + "/healthz", timeout=5).status_code == 503,
        10,
        "the survivor to report itself unhealthy",
    )
    started = time.monotonic()
    r = cluster.enqueue(survivor, b"alone", 1)
    assert r.status_code == 503 and "majority" in r.json()["error"]
    assert time.monotonic() - started < 2  # refused, not waited out
