"""Bad input gets a 4xx with a JSON body naming the field; internal routes need the secret."""

import json
import socket

import pytest
import requests

from bench.cluster import AUTH


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from bench.cluster import Cluster

    c = Cluster(tmp_path_factory.mktemp("api"), max_body_bytes=4096, max_iterations=1000)
    try:
        yield c.start()
    finally:
        c.stop()


@pytest.mark.parametrize(
    "query,body,status,field",
    [
        ("iterations=abc", b"x", 400, "iterations"),
        ("iterations=1.5", b"x", 400, "iterations"),
        ("iterations=0", b"x", 400, "iterations"),
        ("iterations=-3", b"x", 400, "iterations"),
        ("iterations=1001", b"x", 400, "iterations"),
        ("iterations=99999999999999999999999", b"x", 400, "iterations"),
        ("iterations=", b"x", 400, "iterations"),
        ("iterations=1&iterations=2", b"x", 400, "iterations"),
        ("", b"x", 400, "iterations"),
        ("iterations=5", b"x" * 4097, 413, "body"),
    ],
)
def test_bad_enqueue_is_refused_naming_the_field(cluster, query, body, status, field):
    r = requests.put(f"{cluster.url(0)}/enqueue?{query}", data=body, timeout=10)
    assert r.status_code == status
    assert r.json()["error"].startswith(field + ":")


def test_errors_state_the_allowed_range(cluster):
    r = requests.put(f"{cluster.url(1)}/enqueue?iterations=0", data=b"x", timeout=10)
    assert "1 to 1000" in r.json()["error"]
    r = requests.put(f"{cluster.url(1)}/enqueue?iterations=1", data=b"x" * 5000, timeout=10)
    assert "4096" in r.json()["error"]


def test_a_chunked_body_over_the_limit_is_refused(cluster):
    def chunks():
        for _ in range(10):
            yield b"y" * 1000

    r = requests.put(f"{cluster.url(0)}/enqueue?iterations=1", data=chunks(), timeout=10)
    assert r.status_code == 413 and r.json()["error"].startswith("body:")


@pytest.mark.parametrize("top", ["abc", "0", "-1", "1001", "1e3", ""])
def test_bad_top_is_refused(cluster, top):
    r = requests.post(f"{cluster.url(2)}/pullCompleted?top={top}", timeout=10)
    assert r.status_code == 400
    assert r.json()["error"].startswith("top:") and "1 to 1000" in r.json()["error"]


def test_top_defaults_to_ten_and_an_empty_queue_answers_an_empty_list(cluster):
    r = requests.post(f"{cluster.url(2)}/pullCompleted", timeout=10)
    assert r.status_code == 200 and r.json() == []


@pytest.mark.parametrize("job_id", ["0" * 32, "nope", "x" * 500])
def test_unknown_job_is_404(cluster, job_id):
    r = requests.get(f"{cluster.url(0)}/work/{job_id}", timeout=10)
    assert r.status_code == 404 and r.json()["error"].startswith("id:")


def test_unknown_route_and_wrong_method_answer_json(cluster):
    r = requests.get(f"{cluster.url(0)}/nowhere", timeout=10)
    assert r.status_code == 404 and "error" in r.json()
    r = requests.get(f"{cluster.url(0)}/enqueue", timeout=10)
    assert r.status_code == 405 and "error" in r.json()


@pytest.mark.parametrize(
    "method,path",
    [
        ("POST", "/internal/lease"),
        ("POST", "/internal/heartbeat"),
        ("POST", "/internal/complete"),
        ("POST", "/internal/release"),
        ("POST", "/internal/payloads"),
        ("GET", "/internal/payloads/" + "0" * 32),
        ("POST", "/internal/payloads/read"),
        ("GET", "/internal/status"),
        ("POST", "/internal/compact"),
    ],
)
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-secret"}, {"Authorization": AUTH["Authorization"] + "x"}],
)
def test_internal_routes_refuse_calls_without_the_secret(cluster, method, path, headers):
    r = requests.request(method, cluster.url(0) + path, headers=headers, data=b"{}", timeout=10)
    assert r.status_code == 401
    assert "Authorization" in r.json()["error"]


@pytest.mark.parametrize(
    "body,field",
    [
        (b"not json", "body"),
        (b"[" * 100_000 + b"]" * 100_000, "body"),
        (b"[]", "body"),
        (b'{"worker": ""}', "worker"),
        (b'{"worker": "w", "max_jobs": 0}', "max_jobs"),
        (b'{"worker": "w", "wait": "long"}', "wait"),
        (b'{"worker": "w", "linger": 2}', "linger"),
    ],
)
def test_malformed_worker_calls_are_refused(cluster, body, field):
    r = requests.post(cluster.url(0) + "/internal/lease", headers=AUTH, data=body, timeout=10)
    assert r.status_code == 400 and r.json()["error"].startswith(field + ":")


def test_a_completion_must_carry_a_well_formed_result(cluster):
    r = requests.post(
        cluster.url(0) + "/internal/complete",
        headers=AUTH,
        timeout=10,
        json={"worker": "w", "results": [{"id": "0" * 32, "result": "ABC"}]},
    )
    assert r.status_code == 400 and r.json()["error"].startswith("results:")


def test_status_and_health_answer_on_every_node(cluster):
    for i in range(3):
        status = requests.get(cluster.url(i) + "/status", timeout=5).json()
        assert status["role"] in ("leader", "follower")
        assert set(status["queue"]) == {"queued", "running", "completed", "failed"}
        assert requests.get(cluster.url(i) + "/healthz", timeout=5).status_code == 200


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /status HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n",
        b"PUT /enqueue?iterations=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\n",
        b"GET /status HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 20000 + b"\r\n\r\n",
    ],
    ids=["malformed header", "bad chunk size", "header too long"],
)
def test_a_request_the_http_parser_rejects_gets_a_json_error(cluster, request_bytes):
    host, port = cluster.url(0).removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request_bytes)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].split(b" ")[1] == b"400", head
    assert b"Content-Type: application/json" in head
    assert json.loads(body)["error"].startswith("request: not valid HTTP")
