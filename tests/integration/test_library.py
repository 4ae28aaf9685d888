"""The Python client library against live three-node clusters: every method of Client and
AsyncClient, results checked with hashlib, a retried submit making one job, the feed followed
across a node kill, and each error of the hierarchy."""

import asyncio
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from bench.cluster import AUTH, expected_digest, wait_until
from client import (
    AsyncClient,
    Client,
    InvalidRequest,
    JobFailed,
    TimedOut,
    Unavailable,
    UnknownJob,
    WorkQueueError,
)


def test_the_sync_client_submits_and_waits_on_the_server(working_cluster):
    with Client(working_cluster.urls) as wq:
        job = wq.submit(b"library", 250)
        assert job.result(timeout=60) == expected_digest(b"library", 250)
        assert job.status()["status"] == "completed"
        empty = wq.submit(b"", 3)
        assert empty.result(timeout=60) == expected_digest(b"", 3)
        items = [(os.urandom(50 + n), 1 + n) for n in range(30)]
        jobs = wq.submit_many(items)
        assert len({j.id for j in jobs}) == 30
        finished = {job.id: job.result() for job in wq.as_completed(jobs, timeout=90)}
        assert finished == {
            job.id: expected_digest(data, its) for job, (data, its) in zip(jobs, items, strict=True)
        }
        payloads = [os.urandom(40 + n) for n in range(50)]
        mapped = dict(wq.map(payloads, 7, window=16))
        assert mapped == {p: expected_digest(p, 7) for p in payloads}
        # The feed from the batch's position holds the batch's completions, in order.
        after = min(j.after for j in jobs)
        seen = {}
        for completion in wq.completions(after):
            seen[completion.id] = completion
            if set(finished) <= set(seen):
                break
        positions = [c.position for c in seen.values()]
        assert positions == sorted(positions) == list(range(after + 1, after + 1 + len(seen)))
        assert {i: seen[i].result for i in finished} == finished


def test_the_async_client_has_the_same_methods(working_cluster):
    async def main():
        async with AsyncClient(working_cluster.urls) as wq:
            job = await wq.submit(b"async", 20)
            assert await job.result(timeout=60) == expected_digest(b"async", 20)
            assert (await job.status())["status"] == "completed"
            items = [(b"a%d" % n, 5) for n in range(10)]
            jobs = await wq.submit_many(items)
            done = [j async for j in wq.as_completed(jobs, timeout=60)]
            assert {j.id for j in done} == {j.id for j in jobs}
            for j, (data, its) in zip(jobs, items, strict=True):
                assert await j.result() == expected_digest(data, its)
            mapped = {d: r async for d, r in wq.map([b"m1", b"m2", b""], 4)}
            assert mapped == {d: expected_digest(d, 4) for d in (b"m1", b"m2", b"")}
            async for completion in wq.completions(jobs[0].after):
                assert completion.status == "completed" and completion.result
                break

    asyncio.run(main())


class LossyNode(BaseHTTPRequestHandler):
    """Forwards an enqueue to a real node, then drops the connection: the job is made, and
    the client never hears so."""

    target = ""
    forwarded: list[int] = []

    def do_PUT(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        r = requests.put(
            self.target + self.path,
            data=body,
            headers={"Idempotency-Key": self.headers["Idempotency-Key"]},
            timeout=30,
        )
        self.forwarded.append(r.status_code)
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, *args):
        pass


def test_a_submit_retried_through_another_node_makes_one_job(idle_cluster):
    cluster = idle_cluster
    LossyNode.target, LossyNode.forwarded = cluster.url(0), []
    server = ThreadingHTTPServer(("127.0.0.1", 0), LossyNode)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    queued = cluster.status(1)["queue"]["queued"]
    try:
        with Client([f"http://127.0.0.1:{server.server_port}", cluster.url(1)]) as wq:
            job = wq.submit(b"exactly once", 9)
    finally:
        server.shutdown()
    assert LossyNode.forwarded and set(LossyNode.forwarded) == {200}  # it made the job
    wait_until(lambda: cluster.status(2)["queue"]["queued"] == queued + 1, 10, "node 2 to apply it")
    assert cluster.status(1)["queue"]["queued"] == queued + 1
    assert cluster.job(2, job.id)["status"] == "queued"


def test_each_error_is_one_of_the_hierarchy(make_cluster):
    cluster = make_cluster(lease_timeout=1, max_attempts=1)
    with Client(cluster.urls, deadline=20) as wq:
        with pytest.raises(InvalidRequest) as refused:
            wq.submit(b"x", 0)
        assert refused.value.status == 400 and refused.value.message.startswith("iterations:")
        queued = wq.submit(b"never leased", 1)
        with pytest.raises(TimedOut):
            queued.result(timeout=1)
        with pytest.raises(UnknownJob):
            wq.job("f" * 32).status()
        doomed = wq.submit(b"abandoned", 1)
        # A worker that leases the first job and then says nothing: it fails, out of attempts.
        r = requests.post(
            cluster.url(0) + "/internal/lease",
            headers=AUTH,
            json={"worker": "silent", "wait": 10, "max_jobs": 2},
            timeout=30,
        )
        assert {j["id"] for j in r.json()["jobs"]} == {queued.id, doomed.id}
        with pytest.raises(JobFailed) as failed:
            doomed.result(timeout=60)
        assert failed.value.job_id == doomed.id and "lease expired" in failed.value.error
        assert isinstance(failed.value, WorkQueueError)
    with Client(["http://127.0.0.1:9"], deadline=1) as nowhere:
        with pytest.raises(Unavailable) as unavailable:
            nowhere.submit(b"x", 1)
        assert "127.0.0.1:9" in str(unavailable.value)


def test_the_feed_is_followed_across_a_node_kill_without_gap_or_repeat(make_cluster):
    cluster = make_cluster()
    for n in range(2):
        cluster.start_worker(f"w{n}")
    leader = cluster.wait_leader()
    first, second = [i for i in range(3) if i != leader]
    expected = {}
    with Client([cluster.url(first), cluster.url(second), cluster.url(leader)]) as wq:
        items = [(b"before %d" % n, 5) for n in range(20)]
        for job, (data, its) in zip(wq.submit_many(items), items, strict=True):
            expected[job.id] = expected_digest(data, its)
        feed = wq.completions(0)
        seen = [next(feed) for _ in range(10)]
        cluster.kill_node(first)  # the node the feed was read from
        items = [(b"after %d" % n, 5) for n in range(20)]
        for job, (data, its) in zip(wq.submit_many(items), items, strict=True):
            expected[job.id] = expected_digest(data, its)
        while len(seen) < 40:
            seen.append(next(feed))
        feed.close()
    assert [c.position for c in seen] == list(range(1, 41))
    assert {c.id: c.result for c in seen} == expected


def readme_example() -> str:
    """The Python example of the README, as written there."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text.split("\n## Python\n", 1)[1]
    return section.split("```python\n", 1)[1].split("\n```", 1)[0]


def test_the_readme_example_runs_as_written(working_cluster, tmp_path):
    script = tmp_path / "example.py"
    script.write_text(readme_example())
    r = subprocess.run(
        [sys.executable, str(script)],
        env={**os.environ, "WQ_URLS": ",".join(working_cluster.urls)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    job_id, result = lines[0].split()
    assert result == expected_digest(b"hello", 1000)
    assert working_cluster.job(0, job_id)["result"] == result
    batch = [line.split() for line in lines[1:101]]
    assert len({job for job, _ in batch}) == 100
    assert all(len(result) == 128 for _, result in batch)
    assert [int(line.split()[0]) for line in lines[101:]] == list(range(1, 11))
