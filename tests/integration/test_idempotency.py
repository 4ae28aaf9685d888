"""Idempotency-Key: a retried enqueue gets the first job's id on any node, across leader changes."""

import uuid

import requests

from bench.cluster import expected_digest


def put(cluster, i, payload, iterations, key):
    return requests.put(
        f"{cluster.url(i)}/enqueue",
        params={"iterations": iterations},
        data=payload,
        headers={"Idempotency-Key": key},
        timeout=10,
    )


def key(name: str) -> str:
    """A key no other test of the session uses (they share a cluster)."""
    return f"{name}-{uuid.uuid4().hex}"


def test_a_retry_with_the_same_key_returns_the_same_id_on_every_node(idle_cluster):
    cluster = idle_cluster
    queued = cluster.status(2)["queue"]["queued"]
    order = key("order-17")
    first = put(cluster, 0, b"once", 10, order)
    assert first.status_code == 200
    for i in (0, 1, 2):
        r = put(cluster, i, b"once", 10, order)
        assert r.status_code == 200 and r.json()["id"] == first.json()["id"]
    assert cluster.status(2)["queue"]["queued"] == queued + 1


def test_a_key_reused_for_another_payload_is_refused(idle_cluster):
    cluster = idle_cluster
    k1 = key("k-1")
    assert put(cluster, 1, b"one", 10, k1).status_code == 200
    for payload, iterations in ((b"two", 10), (b"one", 11)):
        r = put(cluster, 2, payload, iterations, k1)
        assert r.status_code == 422 and r.json()["error"].startswith("Idempotency-Key:")


def test_the_key_survives_a_leader_change(make_cluster):
    cluster = make_cluster()
    leader = cluster.wait_leader()
    first = put(cluster, leader, b"durable", 100, "abc")
    assert first.status_code == 200
    cluster.kill_node(leader)
    cluster.wait_leader()
    survivor = cluster.alive()[0]
    r = put(cluster, survivor, b"durable", 100, "abc")
    assert r.json()["id"] == first.json()["id"]
    cluster.start_worker("w")  # no adoption grace to wait out, unlike a leader's local worker
    cluster.wait_completed(survivor, {first.json()["id"]: expected_digest(b"durable", 100)})


def test_concurrent_requests_with_one_key_make_one_job(idle_cluster):
    from concurrent.futures import ThreadPoolExecutor

    cluster = idle_cluster
    queued = cluster.status(0)["queue"]["queued"]
    same = key("same-key")
    with ThreadPoolExecutor(9) as pool:
        replies = list(pool.map(lambda i: put(cluster, i % 3, b"race", 5, same), range(9)))
    assert {r.status_code for r in replies} == {200}
    assert len({r.json()["id"] for r in replies}) == 1
    assert cluster.status(0)["queue"]["queued"] == queued + 1


def test_a_malformed_key_is_refused(idle_cluster):
    cluster = idle_cluster
    for bad in ("", "x" * 256, "tab\there"):
        r = put(cluster, 0, b"p", 1, bad)
        assert r.status_code == 400 and r.json()["error"].startswith("Idempotency-Key:")
