"""The `wq` client end to end against real local clusters (run as a real process)."""

import json
import os
import subprocess
import sys
import time

from bench.cluster import expected_digest, wait_until


def wq(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "client", "--no-progress", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_files(root, count: int, size) -> dict[str, bytes]:
    root.mkdir()
    files = {}
    for n in range(count):
        path = str(root / f"f{n:03}.bin")
        data = os.urandom(size(n))
        with open(path, "wb") as f:
            f.write(data)
        files[path] = data
    return files


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_submit_200_files_wait_verify_pull_and_status(working_cluster, tmp_path):
    cluster = working_cluster
    done = cluster.status(0)["queue"]["completed"]  # the same on every node, nothing queued
    urls = ",".join(cluster.urls)
    files = write_files(tmp_path / "in", 200, lambda n: 1 + 37 * n)
    r = wq("--url", urls, "submit", *files, "--iterations", "300")
    assert r.returncode == 0, r.stderr
    submitted = json_lines(r.stdout)
    assert sorted(s["file"] for s in submitted) == sorted(files)
    assert len({s["id"] for s in submitted}) == 200
    ids = tmp_path / "ids.jsonl"
    ids.write_text(r.stdout)

    r = wq("--url", urls, "wait", str(ids), "--verify", "--wait-timeout", "150")
    assert r.returncode == 0, r.stderr
    results = {x["id"]: x for x in json_lines(r.stdout)}
    assert len(results) == 200
    for s in submitted:
        x = results[s["id"]]
        assert x["status"] == "completed" and x["verified"] is True
        assert x["result"] == expected_digest(files[s["file"]], 300)

    # The feed holds every one of them, at consecutive positions.
    first = min(s["after"] for s in submitted)
    r = wq("--url", cluster.url(1), "follow", "--after", str(first), "--count", "200")
    assert r.returncode == 0, r.stderr
    followed = json_lines(r.stdout)
    assert [x["position"] for x in followed] == list(range(first + 1, first + 201))
    assert {x["id"]: x["result"] for x in followed} == {x: y["result"] for x, y in results.items()}

    r = wq("--url", cluster.url(2), "pull", "--top", "1000")
    assert r.returncode == 0, r.stderr
    assert {s["id"] for s in submitted} <= {x["id"] for x in json_lines(r.stdout)}

    r = wq("--url", urls, "status")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert sum(line.split()[1:2] == ["leader"] for line in lines[1:4]) == 1
    assert sum(line.split()[1:2] == ["follower"] for line in lines[1:4]) == 2
    assert f"leader: n{cluster.wait_leader()}" in r.stdout
    assert any(
        line.startswith(f"queue: 0 queued, 0 running, {done + 200} completed") for line in lines
    )


def test_a_node_killed_mid_submit_makes_no_job_twice(make_cluster, tmp_path):
    cluster = make_cluster()  # no workers: every job stays queued and countable
    victim = cluster.wait_leader()
    others = [i for i in range(3) if i != victim]
    files = write_files(tmp_path / "in", 200, lambda n: 256 * 1024)
    out = tmp_path / "ids.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "client",
            "--no-progress",
            "--concurrency",
            "2",
            "--url",
            ",".join(cluster.url(i) for i in [victim, *others]),
            "--output",
            str(out),
            "submit",
            *files,
            "--iterations",
            "5",
            "--batch-size",
            "5",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(
            lambda: out.exists() and len(out.read_text().splitlines()) >= 30,
            60,
            "30 files submitted",
        )
        cluster.kill_node(victim)
        done_before_kill = len(out.read_text().splitlines())
        assert done_before_kill < 200, "the submission ended before the node was killed"
        assert proc.wait(timeout=150) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    submitted = json_lines(out.read_text())
    assert sorted(s["file"] for s in submitted) == sorted(files)
    assert len({s["id"] for s in submitted}) == 200

    def queued_on_survivors():
        counts = [cluster.status(i)["queue"] for i in others]
        return (
            all(q["queued"] + q["running"] + q["completed"] + q["failed"] == 200 for q in counts)
            and counts
        )

    time.sleep(1)  # let late commits of the killed node's requests land
    wait_until(queued_on_survivors, 30, "exactly 200 jobs on both surviving nodes")


def test_no_answering_node_is_said_plainly(tmp_path):
    r = wq("--url", "http://127.0.0.1:9", "--deadline", "1", "status")
    assert r.returncode == 3
    assert "no node answered GET /dashboard/data" in r.stderr
    assert "127.0.0.1:9" in r.stderr and "Traceback" not in r.stderr


def test_bad_arguments_exit_2_with_usage(tmp_path):
    r = wq("submit", "--iterations", "0", str(tmp_path))
    assert r.returncode == 2 and "--iterations" in r.stderr
    r = wq("wait", str(tmp_path / "missing.jsonl"))
    assert r.returncode == 1 and "missing.jsonl" in r.stderr
