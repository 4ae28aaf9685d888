"""POST /enqueue/batch on a live cluster: every part becomes a job, all or none; a retry with
the same Idempotency-Key, on any node, makes the jobs once."""

import os

import requests

from bench.cluster import expected_digest, wait_until


def post_batch(cluster, node, parts, query="", key=None):
    """parts: (data, X-Iterations or None), sent as requests sends `curl -F` files."""
    files = [
        (
            "p",
            (
                f"f{n}.bin",
                data,
                "application/octet-stream",
                {} if its is None else {"X-Iterations": str(its)},
            ),
        )
        for n, (data, its) in enumerate(parts)
    ]
    headers = {} if key is None else {"Idempotency-Key": key}
    return requests.post(
        f"{cluster.url(node)}/enqueue/batch{query}", files=files, headers=headers, timeout=30
    )


def test_every_part_of_a_batch_becomes_a_job_with_its_own_result(working_cluster):
    cluster = working_cluster
    parts = [(os.urandom(100 + n), None) for n in range(20)] + [(b"", 3), (b"own count", 9)]
    r = post_batch(cluster, 1, parts, "?iterations=40")
    assert r.status_code == 200, r.text
    ids = r.json()["ids"]
    assert len(ids) == len(set(ids)) == 22
    expected = {
        job_id: expected_digest(data, 40 if its is None else its)
        for job_id, (data, its) in zip(ids, parts, strict=True)
    }
    cluster.wait_completed(2, expected)


def test_a_batch_with_one_bad_part_is_refused_whole(idle_cluster):
    cluster = idle_cluster
    before = cluster.status(0)["queue"]
    good = [(b"fine", None)] * 5
    for parts, status, field in [
        (good + [(b"bad count", 0)], 400, "part 6"),
        (good + [(b"x" * (1 << 20) + b"x", None)], 413, "part 6"),
    ]:
        r = post_batch(cluster, 0, parts, "?iterations=2")
        assert r.status_code == status and r.json()["error"].startswith(field), r.text
    assert cluster.status(0)["queue"] == before


def test_a_batch_retried_through_another_node_makes_its_jobs_once(idle_cluster):
    cluster = idle_cluster
    parts = [(b"retried %d" % n, None) for n in range(4)]
    key = "batch-" + os.urandom(8).hex()
    first = post_batch(cluster, 0, parts, "?iterations=5", key)
    assert first.status_code == 200, first.text
    queued = cluster.status(0)["queue"]["queued"]
    again = post_batch(cluster, 2, parts, "?iterations=5", key)
    assert again.status_code == 200 and again.json()["ids"] == first.json()["ids"]
    wait_until(
        lambda: cluster.status(2)["queue"]["queued"] == queued, 10, "node 2 to apply the batch"
    )
    assert cluster.status(0)["queue"]["queued"] == queued
    # The same key with other parts, or fewer of them, is another request.
    for other in (parts[:3], parts[:3] + [(b"changed", None)]):
        r = post_batch(cluster, 1, other, "?iterations=5", key)
        assert r.status_code == 422 and r.json()["error"].startswith("Idempotency-Key:"), r.text
