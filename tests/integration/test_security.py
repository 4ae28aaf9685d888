"""The cluster secret and the API key never leave the places they belong."""
import requests

from node.raft import raft_password

from .cluster import AUTH, SECRET, expected_digest, processes_mentioning

API_KEY = "public-api-key-" + "q" * 20


def test_secrets_never_appear_in_logs_status_errors_or_command_lines(make_cluster):
    c = make_cluster(max_workers=1, extra_env={"WQ_API_KEY": API_KEY})
    secrets = [SECRET, API_KEY, raft_password(SECRET)]
    bodies = []
    job_id = c.enqueue(0, b"secret test", 10).json()["id"]
    c.wait_completed(1, {job_id: expected_digest(b"secret test", 10)})
    for i in range(3):
        bodies.append(requests.get(c.url(i) + "/status", headers=c.headers, timeout=5).text)
        bodies.append(requests.get(c.url(i) + "/status", timeout=5).text)
        bodies.append(requests.get(c.url(i) + "/status",
                                   headers={"X-API-Key": API_KEY[:-1]}, timeout=5).text)
        bodies.append(requests.post(c.url(i) + "/internal/lease", timeout=5,
                                    headers={"Authorization": AUTH["Authorization"][:-1]}).text)
        bodies.append(requests.post(c.url(i) + "/internal/lease", headers=AUTH, data=b"{bad",
                                    timeout=5).text)
    logs = c.logs()
    for secret in secrets:
        assert secret not in logs
        assert not any(secret in body for body in bodies)
        assert processes_mentioning(secret) == []
