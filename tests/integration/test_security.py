"""The cluster secret and the API key never leave the places they belong."""

import requests

from bench.cluster import AUTH, SECRET, expected_digest, processes_mentioning
from node.replication.raft import raft_password


def test_secrets_never_appear_in_logs_status_errors_or_command_lines(keyed_cluster):
    c = keyed_cluster  # one local worker; clients need the API key
    api_key = c.extra_env["WQ_API_KEY"]
    secrets = [SECRET, api_key, raft_password(SECRET)]
    bodies = []
    job_id = c.enqueue(0, b"secret test", 10).json()["id"]
    c.wait_completed(1, {job_id: expected_digest(b"secret test", 10)})
    for i in range(3):
        bodies.append(requests.get(c.url(i) + "/status", headers=c.headers, timeout=5).text)
        bodies.append(requests.get(c.url(i) + "/status", timeout=5).text)
        bodies.append(
            requests.get(c.url(i) + "/status", headers={"X-API-Key": api_key[:-1]}, timeout=5).text
        )
        bodies.append(
            requests.post(
                c.url(i) + "/internal/lease",
                timeout=5,
                headers={"Authorization": AUTH["Authorization"][:-1]},
            ).text
        )
        bodies.append(
            requests.post(c.url(i) + "/internal/lease", headers=AUTH, data=b"{bad", timeout=5).text
        )
    # Every line of every node's and worker's log, not only the tail Cluster.logs() shows.
    logs = "".join(p.read_text(errors="replace") for p in sorted(c.root.glob("*.log")))
    for secret in secrets:
        assert secret not in logs
        assert not any(secret in body for body in bodies)
        assert processes_mentioning(secret) == []


def test_internal_routes_can_be_kept_off_the_public_port(make_cluster):
    """With --internal-http, peers and workers use their own port: a firewall can open the
    public port to clients and the internal one to members only."""
    c = make_cluster(max_workers=1, separate_internal=True)
    payload = b"two ports"
    job_id = c.enqueue(0, payload, 50).json()["id"]  # replicated over internal ports
    c.wait_completed(2, {job_id: expected_digest(payload, 50)})  # a local worker used them too
    for i in range(3):
        public, internal = c.url(i), c.internal_url(i)
        assert (
            requests.post(
                public + "/internal/lease", headers=AUTH, json={"worker": "w"}, timeout=5
            ).status_code
            == 404
        )
        assert (
            requests.get(
                public + f"/internal/payloads/{job_id}", headers=AUTH, timeout=5
            ).status_code
            == 404
        )
        assert (
            requests.put(internal + "/enqueue?iterations=1", data=b"x", timeout=5).status_code
            == 404
        )
        assert requests.get(internal + "/status", timeout=5).status_code == 404
        assert (
            requests.post(internal + "/internal/lease", json={"worker": "w"}, timeout=5).status_code
            == 401
        )
        assert c.status(i)["url"] == internal
