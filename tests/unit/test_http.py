"""The HTTP layer over a fake service: parameters checked and named, errors mapped to their
status with a JSON body, authentication, forwarding to the leader, the request deadline.
Real aiohttp servers in this process; no Raft, no store."""

import asyncio
import hashlib
import json

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from node.config import load_config
from node.errors import JobNotFound, NoQuorum, NotLeader, QueueFull
from node.http import dashboard, internal, public
from node.http.middleware import make_auth_middleware, make_error_middleware
from protocol.wire import decode_batch

SECRET = "s" * 32
API_KEY = "k" * 32
AUTH = {"Authorization": f"Bearer {SECRET}"}
JOB = "ab" * 16
DIGEST = "cd" * 32
RESULT = "ef" * 64


class FakeService:
    """Records what the handlers asked for; answers or raises what a test sets."""

    def __init__(self, leader=True, leader_url=None, raises=None, delay=0.0):
        self.leader, self._leader_url, self.raises, self.delay = leader, leader_url, raises, delay
        self.calls = []

    async def _answer(self, name, *args, value=None):
        self.calls.append((name, *args))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.raises is not None:
            raise self.raises
        return value

    async def enqueue(self, data, iterations, key):
        return await self._answer("enqueue", data, iterations, key, value={"id": JOB, "after": 0})

    async def enqueue_batch(self, items, key):
        ids = [f"{n:032x}" for n in range(len(items))]
        return await self._answer("enqueue_batch", items, key, value={"ids": ids, "after": 0})

    async def job(self, job_id, wait=0.0):
        return await self._answer("job", job_id, wait, value={"id": job_id, "status": "queued"})

    async def completions(self, after, limit, wait=0.0):
        return await self._answer(
            "completions", after, limit, wait, value={"completions": [], "next": after, "last": 0}
        )

    async def completed(self, top):
        return await self._answer("completed", top, value=[{"id": JOB, "result": RESULT}])

    async def status(self):
        return await self._answer("status", value={"node": "n0"})

    def health(self):
        return (False, "no leader known") if self.raises else (True, "ok")

    async def metrics(self):
        return b"wq_up 1\n", "text/plain; version=0.0.4"

    def is_leader(self):
        return self.leader

    def leader_url(self):
        return self._leader_url

    async def lease(self, worker, info, max_jobs, wait, linger):
        return await self._answer(
            "lease", worker, info, max_jobs, wait, linger, value={"jobs": [], "lease_timeout": 30}
        )

    async def heartbeat(self, worker, info, jobs):
        return await self._answer("heartbeat", worker, info, jobs, value={"jobs": jobs})

    async def release(self, worker, jobs, reason):
        return await self._answer("release", worker, jobs, reason, value=jobs)

    async def complete(self, worker, results):
        return await self._answer("complete", worker, results, value=[j for j, _ in results])

    async def store_payloads(self, items):
        return await self._answer("store_payloads", items)

    async def payload(self, job_id, digest, *, local):
        return await self._answer("payload", job_id, digest, local, value=b"data")

    async def payloads(self, jobs):
        found = [(job_id, b"data", hashlib.sha256(b"data").hexdigest()) for job_id, _ in jobs]
        return await self._answer("payloads", jobs, value=found)

    def compact(self):
        self.calls.append(("compact",))

    async def member_status(self):
        return await self._answer("member_status", value={"node": "n0", "healthy": True})

    def history(self):
        return []


def config(*extra, api_key=""):
    env = {"WQ_SECRET": SECRET, "WQ_REQUEST_TIMEOUT": "0.5"}
    if api_key:
        env["WQ_API_KEY"] = api_key
    return load_config(
        ["--raft", "127.0.0.1:7001", "--http", "127.0.0.1:8001", "--data-dir", "/tmp/x", *extra],
        env,
    )


def call(service, method, path, *, cfg=None, **kwargs):
    """One request to an app with every route over `service`: (status, headers, body)."""
    cfg = cfg or config()

    async def go():
        async with aiohttp.ClientSession() as session:
            app = web.Application(
                middlewares=[
                    make_error_middleware(cfg.request_timeout, cfg.max_wait),
                    make_auth_middleware(cfg.secret, cfg.api_key),
                ]
            )
            app.add_routes(
                public.routes(service, cfg)
                + dashboard.routes(service, cfg, session)
                + internal.InternalRoutes(service, cfg, session).routes()
            )
            async with TestClient(TestServer(app)) as client:
                resp = await client.request(method, path, **kwargs)
                return resp.status, resp.headers, await resp.read()

    return asyncio.run(go())


def error_of(body):
    return json.loads(body)["error"]


@pytest.mark.parametrize(
    "query, body, field",
    [
        ("", b"x", "iterations"),
        ("?iterations=0", b"x", "iterations"),
        ("?iterations=abc", b"x", "iterations"),
        ("?iterations=1&iterations=2", b"x", "iterations"),
        ("?iterations=1&color=red", b"x", "color"),
    ],
)
def test_a_bad_enqueue_is_refused_naming_the_field_and_reaches_no_service(query, body, field):
    service = FakeService()
    status, _, answer = call(service, "PUT", "/enqueue" + query, data=body)
    assert status == 400 and error_of(answer).startswith(field + ":")
    assert service.calls == []


def test_an_enqueue_passes_payload_iterations_and_key_to_the_service():
    service = FakeService()
    status, _, answer = call(
        service, "PUT", "/enqueue?iterations=7", data=b"abc", headers={"Idempotency-Key": "k-1"}
    )
    assert (status, json.loads(answer)) == (200, {"id": JOB, "after": 0})
    assert service.calls == [("enqueue", b"abc", 7, "k-1")]


def test_a_payload_over_the_limit_is_refused_with_413():
    status, _, answer = call(
        FakeService(),
        "PUT",
        "/enqueue?iterations=1",
        data=b"x" * 11,
        cfg=config("--max-body-bytes", "10"),
    )
    assert status == 413 and error_of(answer).startswith("body:")


@pytest.mark.parametrize(
    "error, status, retry_after",
    [
        (QueueFull("queue: full"), 429, True),
        (NoQuorum("no majority"), 503, True),
        (NotLeader("not the leader"), 503, True),
        (JobNotFound("id: none"), 404, False),
        (RuntimeError("bug"), 500, False),
    ],
)
def test_service_errors_become_their_status_with_a_json_body(error, status, retry_after):
    got, headers, answer = call(
        FakeService(raises=error), "PUT", "/enqueue?iterations=1", data=b"x"
    )
    assert got == status and error_of(answer)
    assert ("Retry-After" in headers) == retry_after
    if status == 500:
        assert "bug" not in error_of(answer)  # internals stay in the node's log


def test_a_service_slower_than_the_request_timeout_is_answered_503():
    status, headers, answer = call(FakeService(delay=2), "GET", "/status")
    assert status == 503 and "request timeout" in error_of(answer) and headers["Retry-After"]


@pytest.mark.parametrize(
    "path, status",
    [(f"/work/{JOB}", 200), ("/work/not-a-job-id", 404), (f"/work/{JOB}?x=1", 400)],
)
def test_a_job_is_read_by_a_well_formed_id(path, status):
    service = FakeService()
    got, _, _ = call(service, "GET", path)
    assert got == status
    assert service.calls == ([("job", JOB, 0.0)] if status == 200 else [])


@pytest.mark.parametrize("top, status", [("1", 200), ("1000", 200), ("0", 400), ("1001", 400)])
def test_pull_completed_takes_top_within_its_range(top, status):
    got, _, answer = call(FakeService(), "POST", f"/pullCompleted?top={top}")
    assert got == status and (status == 200 or error_of(answer).startswith("top:"))


def test_health_is_503_with_the_reason_when_unhealthy():
    status, _, answer = call(FakeService(raises=NoQuorum("x")), "GET", "/healthz")
    assert (status, json.loads(answer)) == (503, {"healthy": False, "reason": "no leader known"})


@pytest.mark.parametrize(
    "path, headers, status",
    [
        ("/internal/status", {}, 401),
        ("/internal/status", {"Authorization": "Bearer wrong"}, 401),
        ("/internal/status", AUTH, 200),
        ("/status", {}, 401),
        ("/status", {"X-API-Key": API_KEY}, 200),
        ("/status", {"Authorization": f"Bearer {API_KEY}"}, 200),
        ("/healthz", {}, 200),
        ("/openapi.json", {}, 200),
        ("/", {}, 200),
    ],
)
def test_internal_routes_need_the_secret_and_public_ones_the_api_key(path, headers, status):
    got, _, _ = call(FakeService(), "GET", path, headers=headers, cfg=config(api_key=API_KEY))
    assert got == status


def test_a_lease_on_the_leader_goes_to_the_service_with_its_bounds_applied():
    service = FakeService()
    body = {"worker": "w-1", "max_jobs": 4, "wait": 30, "linger": 0.5, "info": {"host": "h"}}
    status, _, _ = call(service, "POST", "/internal/lease", json=body, headers=AUTH)
    # wait and linger end inside the request timeout (0.5 s here).
    assert status == 200 and service.calls == [("lease", "w-1", {"host": "h"}, 4, 0.4, 0.4)]


@pytest.mark.parametrize(
    "leader_url, headers, error",
    [
        (None, AUTH, "no leader is known"),
        ("http://127.0.0.1:9", AUTH, "did not answer"),
        ("http://x", {**AUTH, "X-WQ-Forwarded": "1"}, "not the leader"),
    ],
)
def test_a_follower_forwards_leader_calls_once_and_says_why_it_could_not(
    leader_url, headers, error
):
    service = FakeService(leader=False, leader_url=leader_url)
    status, _, answer = call(
        service, "POST", "/internal/heartbeat", json={"worker": "w", "jobs": [JOB]}, headers=headers
    )
    assert status == 503 and error in error_of(answer) and service.calls == []


@pytest.mark.parametrize(
    "results",
    [
        [],
        [{"id": JOB}],
        [{"id": "x", "result": RESULT}],
        [{"id": JOB, "result": "0" * 127}],
        "nope",
        [{"id": JOB, "result": RESULT}] * 65,
    ],
)
def test_malformed_completions_are_refused_naming_results(results):
    service = FakeService()
    status, _, answer = call(
        service,
        "POST",
        "/internal/complete",
        json={"worker": "w", "results": results},
        headers=AUTH,
    )
    assert status == 400 and error_of(answer).startswith("results:") and service.calls == []


def test_payloads_read_for_a_lease_come_back_in_the_batch_format():
    service = FakeService()
    body = {"jobs": [{"id": JOB, "digest": DIGEST}]}
    status, _, answer = call(service, "POST", "/internal/payloads/read", json=body, headers=AUTH)
    assert status == 200 and service.calls == [("payloads", [(JOB, DIGEST)])]
    assert decode_batch(answer) == [(JOB, b"data", hashlib.sha256(b"data").hexdigest())]


def test_a_malformed_peer_copy_is_refused_before_the_service():
    service = FakeService()
    status, _, answer = call(service, "POST", "/internal/payloads", data=b"[]\n", headers=AUTH)
    assert status == 400 and error_of(answer).startswith("body:") and service.calls == []


@pytest.mark.parametrize(
    "path, field",
    [
        (f"/work/{JOB}?wait=-1", "wait"),
        (f"/work/{JOB}?wait=61", "wait"),
        (f"/work/{JOB}?wait=nan", "wait"),
        (f"/work/{JOB}?wait=1&wait=2", "wait"),
        ("/completed?after=-1", "after"),
        ("/completed?after=x", "after"),
        ("/completed?limit=0", "limit"),
        ("/completed?limit=1001", "limit"),
        ("/completed?wait=inf", "wait"),
        ("/completed?top=3", "top"),
    ],
)
def test_bad_waits_and_feed_positions_are_refused_naming_the_field(path, field):
    service = FakeService()
    status, _, answer = call(service, "GET", path)
    assert status == 400 and error_of(answer).startswith(f"{field}:") and service.calls == []
    assert "allowed" in error_of(answer) or "from" in error_of(answer)


def test_waits_and_feed_positions_reach_the_service():
    service = FakeService()
    assert call(service, "GET", f"/work/{JOB}?wait=2.5")[0] == 200
    assert call(service, "GET", "/completed")[0] == 200
    assert call(service, "GET", "/completed?after=7&limit=3&wait=1")[0] == 200
    assert service.calls == [
        ("job", JOB, 2.5),
        ("completions", 0, 100, 0.0),
        ("completions", 7, 3, 1.0),
    ]


def test_a_request_that_waits_may_take_its_wait_beyond_the_request_timeout():
    # The request timeout is 0.5 s; the service answers after 1 s.
    assert call(FakeService(delay=1), "GET", f"/work/{JOB}?wait=2")[0] == 200
    assert call(FakeService(delay=1), "GET", f"/work/{JOB}")[0] == 503
    assert call(FakeService(delay=1), "GET", f"/work/{JOB}?wait=0.2")[0] == 503


def multipart(*parts, boundary="b0undary"):
    """A multipart/form-data body: each part (data, extra part headers)."""
    body = b""
    for n, (data, headers) in enumerate(parts):
        body += f"--{boundary}\r\n".encode()
        body += f'Content-Disposition: form-data; name="p"; filename="f{n}"\r\n'.encode()
        for name, value in headers.items():
            body += f"{name}: {value}\r\n".encode()
        body += b"\r\n" + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_a_batch_passes_each_part_with_its_iterations_and_the_key_to_the_service():
    service = FakeService()
    body, headers = multipart((b"one", {}), (b"", {"X-Iterations": "7"}), (b"three", {}))
    status, _, answer = call(
        service,
        "POST",
        "/enqueue/batch?iterations=5",
        data=body,
        headers={**headers, "Idempotency-Key": "k1"},
    )
    assert status == 200 and json.loads(answer)["ids"] == [f"{n:032x}" for n in range(3)]
    assert service.calls == [("enqueue_batch", [(b"one", 5), (b"", 7), (b"three", 5)], "k1")]


@pytest.mark.parametrize(
    "query, parts, raw, status, field",
    [
        ("", [(b"a", {})], None, 400, "iterations"),
        ("?iterations=0", [(b"a", {})], None, 400, "iterations"),
        ("?iterations=1", [(b"a", {"X-Iterations": "x"})], None, 400, "part 1"),
        ("?iterations=1", [(b"a", {}), (b"b", {"X-Iterations": "0"})], None, 400, "part 2"),
        ("?iterations=1", [(b"a", {})] * 3, None, 400, "parts"),
        ("?iterations=1", [], None, 400, "parts"),
        ("?iterations=1", [(b"a", {}), (b"x" * 101, {})], None, 413, "part 2"),
        ("?iterations=1", [(b"x" * 80, {}), (b"y" * 80, {})], None, 413, "body"),
        ("?iterations=1", None, (b"just bytes", "application/octet-stream"), 400, "body"),
        ("?iterations=1", None, (b"--x\r\nno end", "multipart/form-data; boundary=x"), 400, "body"),
        ("?iterations=1", None, (b"", "multipart/form-data"), 400, "body"),
        ("?iterations=1&x=1", [(b"a", {})], None, 400, "x"),
    ],
)
def test_a_bad_batch_is_refused_whole_naming_what_is_wrong(query, parts, raw, status, field):
    cfg = config("--max-batch-jobs", "2", "--max-body-bytes", "100", "--max-batch-bytes", "150")
    if raw is None:
        body, headers = multipart(*parts)
    else:
        body, headers = raw[0], {"Content-Type": raw[1]}
    service = FakeService()
    got, _, answer = call(
        service, "POST", f"/enqueue/batch{query}", cfg=cfg, data=body, headers=headers
    )
    assert (got, service.calls) == (status, []), answer
    assert error_of(answer).startswith(field), error_of(answer)
