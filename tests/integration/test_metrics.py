"""GET /metrics: Prometheus text that prometheus-client's own parser reads, and counters that
move by exactly the work done."""

import json
import os
import re

import requests
from prometheus_client.parser import text_string_to_metric_families

from bench.cluster import expected_digest, wait_until


def scrape(cluster, i: int) -> dict[str, float]:
    """Every sample of node i as {'name{label="v"}': value}."""
    r = requests.get(cluster.url(i) + "/metrics", headers=cluster.headers, timeout=5)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return samples


def delta(after: dict, before: dict, name: str) -> float:
    return after.get(name, 0) - before.get(name, 0)


def test_metrics_follow_the_work_done(working_cluster):
    cluster = working_cluster
    leader = cluster.wait_leader()
    before = [scrape(cluster, i) for i in range(3)]
    payloads = [os.urandom(1000 + n) for n in range(12)]
    expected = {}
    for n, payload in enumerate(payloads):
        r = cluster.enqueue(n % 3, payload, 50 + n)
        assert r.status_code == 200
        expected[r.json()["id"]] = expected_digest(payload, 50 + n)
    cluster.wait_completed(0, expected)
    size = sum(len(p) for p in payloads)

    def settled():
        after = [scrape(cluster, i) for i in range(3)]
        copied = sum(
            delta(a, b, "wq_payload_replicated_bytes_total")
            for a, b in zip(after, before, strict=True)
        )
        return (
            copied == 2 * size
            and all(
                delta(a, b, "wq_jobs_completed_total") == 12
                for a, b in zip(after, before, strict=True)
            )
            and after
        )

    after = wait_until(settled, 20, "every node to count the 12 jobs and 2 copies of each payload")

    for a, b in zip(after, before, strict=True):
        # Every replica applies every entry: each node counts the whole cluster's jobs.
        assert delta(a, b, "wq_jobs_enqueued_total") == 12
        assert delta(a, b, "wq_jobs_completed_total") == 12
        assert delta(a, b, "wq_jobs_failed_total") == 0
        leased = delta(a, b, "wq_jobs_leased_total")
        assert leased >= 12
        assert delta(a, b, "wq_job_queue_wait_seconds_count") == leased
        assert delta(a, b, "wq_job_compute_seconds_count") == 12
        assert a["wq_job_compute_seconds_sum"] > 0
        assert a["wq_jobs_queued"] == 0 and a["wq_jobs_running"] == 0
        assert (
            a["wq_raft_term"] >= 1 and a["wq_raft_commit_index"] >= a["wq_raft_applied_index"] > 0
        )
        assert (
            sum(a[f'wq_raft_role{{role="{r}"}}'] for r in ("leader", "follower", "candidate")) == 1
        )
    # Enqueue latency is observed where the request was served: 4 on each node.
    assert [
        delta(a, b, "wq_enqueue_duration_seconds_count") for a, b in zip(after, before, strict=True)
    ] == [4] * 3
    assert [a['wq_raft_role{role="leader"}'] for a in after] == [int(i == leader) for i in range(3)]
    lead = after[leader]
    assert lead['wq_worker_launches_total{backend="local"}'] >= 1
    assert lead['wq_scaling_decisions_total{action="launch"}'] >= 1
    assert lead['wq_workers{state="busy"}'] + lead['wq_workers{state="idle"}'] >= 1


def test_metric_names_follow_prometheus_conventions(idle_cluster):
    cluster = idle_cluster
    r = requests.get(cluster.url(0) + "/metrics", timeout=5)
    for family in text_string_to_metric_families(r.text):
        if family.name.startswith("process_"):  # prometheus-client's own
            continue
        assert re.fullmatch(r"wq_[a-z_]+", family.name), family.name
        for s in family.samples:
            if family.type == "counter":
                assert s.name.endswith("_total"), s.name
            if family.type == "histogram":
                assert family.name.endswith("_seconds"), family.name
        if "bytes" in family.name:
            assert family.name.endswith("_bytes"), family.name


def test_metrics_need_the_api_key_as_header_or_bearer_token(keyed_cluster):
    cluster = keyed_cluster
    key = cluster.extra_env["WQ_API_KEY"]
    url = cluster.url(0) + "/metrics"
    assert requests.get(url, timeout=5).status_code == 401
    assert (
        requests.get(url, headers={"Authorization": "Bearer wrong"}, timeout=5).status_code == 401
    )
    assert requests.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=5).ok
    assert requests.get(url, headers={"X-API-Key": key}, timeout=5).ok


def test_json_logs_carry_a_line_per_state_change_naming_the_jobs(working_cluster):
    cluster = working_cluster  # its nodes run with --log-format json
    r = cluster.enqueue(1, b"logged", 10)
    job_id = r.json()["id"]
    cluster.wait_completed(0, {job_id: expected_digest(b"logged", 10)})

    def lines():
        out = []
        for i in range(3):
            for line in (cluster.root / f"n{i}.log").read_text().splitlines():
                if line.startswith("{"):
                    out.append(json.loads(line))
        return out

    def kind(message: str) -> str:
        return next((k for k in ("enqueued", "leased", "completed") if f" {k} " in message), "")

    def changes():
        found = {(kind(e["message"]), e["node"]) for e in lines() if job_id in e.get("jobs", ())}
        return {"enqueued", "leased", "completed"} <= {k for k, _ in found} and found

    found = wait_until(changes, 10, "log lines of the job's state changes")
    assert ("enqueued", "n1") in found
    records = lines()
    assert all({"time", "level", "logger", "message", "node"} <= set(e) for e in records)
    leased = [e for e in records if job_id in e.get("jobs", ()) and kind(e["message"]) == "leased"]
    assert len(leased) == 1 and leased[0]["worker"] and leased[0]["level"] == "INFO"
    assert job_id in leased[0]["message"]
    assert any(e["logger"] == "node.scaling.loop" and e.get("workers") for e in records)
