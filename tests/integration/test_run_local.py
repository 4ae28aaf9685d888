"""The README's first command: ./run_local.sh starts a working cluster, stops cleanly on
SIGTERM, and resumes with its data when run again; with TLS=1 it serves HTTPS that its own
CA verifies."""

import os
import signal
import subprocess
from pathlib import Path

import pytest
import requests

from bench.cluster import expected_digest, free_ports, processes_mentioning, wait_until

ROOT = Path(__file__).resolve().parents[2]


def free_base(count: int) -> int:
    """A port such that port..port+count-1 are all free."""
    return free_ports(count, consecutive=True)[0]


def start(tmp_path, http, raft, **extra):
    env = {
        **os.environ,
        "BASE_HTTP_PORT": str(http),
        "BASE_RAFT_PORT": str(raft),
        "CLUSTER_DIR": str(tmp_path / "cluster"),
        "MAX_WORKERS": "1",
        **extra,
    }
    env.pop("WQ_SECRET", None)
    log = open(tmp_path / "run_local.log", "ab")
    return subprocess.Popen(
        [str(ROOT / "run_local.sh")],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def healthy(urls, verify=True):
    return all(
        requests.get(u + "/healthz", timeout=2, verify=verify).status_code == 200 for u in urls
    )


def stop(proc):
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def test_run_local_starts_serves_stops_and_resumes(tmp_path):
    http, raft = free_base(3), free_base(3)
    urls = [f"http://127.0.0.1:{http + i}" for i in range(3)]
    proc = start(tmp_path, http, raft)
    try:
        wait_until(lambda: healthy(urls), 120, "three healthy nodes")
        secret_file = tmp_path / "cluster" / "secret"
        assert oct(secret_file.stat().st_mode & 0o777) == "0o600"
        payload = b"run_local payload"
        job_id = requests.put(
            urls[0] + "/enqueue?iterations=1000", data=payload, timeout=10
        ).json()["id"]
        wait_until(
            lambda: (
                requests.get(f"{urls[2]}/work/{job_id}", timeout=5).json().get("result")
                == expected_digest(payload, 1000)
            ),
            60,
            "the result",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        pattern = f"127.0.0.1:{http}"
        wait_until(lambda: not processes_mentioning(pattern), 20, "every node and worker to stop")

        proc = start(tmp_path, http, raft)
        wait_until(lambda: healthy(urls), 120, "three healthy nodes after the restart")
        job = requests.get(f"{urls[1]}/work/{job_id}", timeout=5).json()
        assert job["result"] == expected_digest(payload, 1000)
    finally:
        stop(proc)


def test_run_local_with_tls_serves_https_its_ca_verifies(tmp_path):
    http, raft, internal = free_base(3), free_base(3), free_base(3)
    urls = [f"https://127.0.0.1:{http + i}" for i in range(3)]
    proc = start(tmp_path, http, raft, TLS="1", BASE_INTERNAL_PORT=str(internal))
    ca = str(tmp_path / "cluster" / "tls" / "ca.pem")
    try:
        wait_until(lambda: os.path.exists(ca) and healthy(urls, ca), 120, "three healthy nodes")
        key = tmp_path / "cluster" / "tls" / "node.key"
        assert oct(key.stat().st_mode & 0o777) == "0o600"
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(urls[0] + "/healthz", timeout=5)
        # A job through HTTPS, computed by a local worker that reaches its node inside.
        payload = b"run_local TLS payload"
        r = requests.put(urls[0] + "/enqueue?iterations=10", data=payload, timeout=10, verify=ca)
        job_id = r.json()["id"]
        wait_until(
            lambda: (
                requests.get(f"{urls[1]}/work/{job_id}", timeout=5, verify=ca).json().get("result")
                == expected_digest(payload, 10)
            ),
            60,
            "the result",
        )
        assert "--cacert" in (tmp_path / "run_local.log").read_text()
    finally:
        stop(proc)
