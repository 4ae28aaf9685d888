"""Results without polling on a live cluster: a request waiting for a job is answered when the
job finishes on that node; the completion feed is gap-free, the same on every node, and a
consumer resumes it on another node after a kill without a gap or a repeat."""

import threading
import time

import requests

from bench.cluster import expected_digest, wait_until
from bench.waiters import complete, measure, waiting


def test_a_waiting_request_is_answered_when_the_job_completes(make_cluster):
    cluster = make_cluster()
    payload = b"waited for"
    job_id = cluster.enqueue(0, payload, 3).json()["id"]
    answers = []

    def wait_for_it():
        started = time.monotonic()
        r = requests.get(f"{cluster.url(2)}/work/{job_id}", params={"wait": "50"}, timeout=70)
        answers.append((r.status_code, r.json(), time.monotonic() - started))

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    try:
        wait_until(lambda: waiting(cluster, 2) == 1, 20, "the request to wait on node 2")
        assert not answers
        complete(cluster, {job_id: payload}, 3)
    finally:
        waiter.join(timeout=70)
    ((status, job, seconds),) = answers
    assert status == 200 and job["status"] == "completed", job
    assert job["result"] == expected_digest(payload, 3)
    assert seconds < 40  # answered by the completion, not at the end of its wait
    assert waiting(cluster, 2) == 0


def test_a_wait_for_a_job_that_does_not_finish_answers_its_state_after_the_wait(idle_cluster):
    cluster = idle_cluster
    job_id = cluster.enqueue(1, b"stays queued", 1).json()["id"]
    started = time.monotonic()
    r = requests.get(f"{cluster.url(1)}/work/{job_id}", params={"wait": "1.5"}, timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "queued"
    assert time.monotonic() - started >= 1.5
    r = requests.get(f"{cluster.url(1)}/work/{'f' * 32}", params={"wait": "0.5"}, timeout=30)
    assert r.status_code == 404 and r.json()["error"].startswith("id:")


def read_feed(cluster, node: int, after: int, want: int, timeout: float) -> list[dict]:
    """Completions after `after` from one node, until `want` of them, as a consumer would."""
    got: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(got) < want:
        assert time.monotonic() < deadline, f"only {len(got)} of {want} completions"
        r = requests.get(
            f"{cluster.url(node)}/completed",
            params={"after": str(after), "limit": "7", "wait": "5"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        body = r.json()
        got += body["completions"]
        after = body["next"]
    return got


def test_a_feed_consumer_moves_to_another_node_after_a_kill_and_misses_nothing(make_cluster):
    cluster = make_cluster()
    for n in range(2):
        cluster.start_worker(f"w{n}")
    leader = cluster.wait_leader()
    first, second = [i for i in range(3) if i != leader]
    expected = {}
    for n in range(30):
        payload = b"feed %d" % n
        expected[cluster.enqueue(n % 3, payload, 10 + n).json()["id"]] = expected_digest(
            payload, 10 + n
        )
    consumed = read_feed(cluster, first, 0, 12, 60)
    position = consumed[-1]["position"]
    cluster.kill_node(first)
    for n in range(30, 60):
        payload = b"feed %d" % n
        node = (leader, second)[n % 2]
        expected[cluster.enqueue(node, payload, 10 + n).json()["id"]] = expected_digest(
            payload, 10 + n
        )
    consumed += read_feed(cluster, second, position, 60 - len(consumed), 120)
    assert [c["position"] for c in consumed] == list(range(1, 61))
    assert {c["id"]: c["result"] for c in consumed} == expected
    assert all(c["status"] == "completed" for c in consumed)
    # Every node holds the same feed.
    assert read_feed(cluster, leader, 0, 60, 60) == consumed


def test_an_enqueue_answers_a_feed_position_its_completion_comes_after(make_cluster):
    cluster = make_cluster()

    def put():
        return requests.put(
            f"{cluster.url(1)}/enqueue",
            params={"iterations": "2"},
            data=b"marked",
            headers={"Idempotency-Key": "marked-1"},
            timeout=30,
        )

    first = put()
    assert first.status_code == 200, first.text
    job_id, after = first.json()["id"], first.json()["after"]
    complete(cluster, {job_id: b"marked"}, 2)
    (done,) = read_feed(cluster, 2, after, 1, 30)
    assert done["id"] == job_id and done["position"] > after
    # A retry that finds the job finished says where it already is.
    again = put()
    assert again.json()["id"] == job_id and again.json()["after"] == done["position"] - 1


def test_ten_thousand_waiters_on_one_node_are_all_answered_by_the_completions(make_cluster):
    cluster = make_cluster(max_wait=300)
    got = measure(cluster, 1, 10_000)
    assert got["answered"] == 10_000 and got["all_correct"], got
    assert got["answered_early"] == 0, got
    # What a waiting request holds on the node: its connection, request and one future.
    assert got["kb_per_waiter"] < 100, got
