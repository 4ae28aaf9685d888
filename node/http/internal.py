"""Internal routes: the worker API and the peer API. All require the cluster secret.

Workers may talk to any node: lease, heartbeat and release calls are forwarded to the leader
(once), completions are proposed by whichever node receives them.
"""

from __future__ import annotations

import aiohttp
from aiohttp import web

from node.config import NodeConfig
from node.errors import InvalidInput, JobNotFound, NoQuorum, NotLeader
from node.http.params import (
    Json,
    bounded_number,
    id_pairs,
    job_ids,
    json_body,
    only_params,
    read_body,
    worker_id,
)
from node.http.service import Service
from protocol.ids import DIGEST, JOB_ID, RESULT
from protocol.wire import (
    MAX_BATCH_BYTES,
    MAX_LEASE_JOBS,
    MAX_MANIFEST_BYTES,
    MalformedBatch,
    decode_batch,
    encode_batch,
)

FORWARDED = "X-WQ-Forwarded"
MAX_WAIT = 30.0
MAX_LINGER = 1.0
WORKER_INFO = ("host", "pid", "backend", "speed", "overhead")


def worker_info(body: Json) -> dict[str, str]:
    info = body.get("info")
    if not isinstance(info, dict):
        return {}
    return {k: str(v)[:200] for k, v in info.items() if k in WORKER_INFO}


class InternalRoutes:
    """The handlers of the internal routes, over a Service; `routes()` lists them."""

    def __init__(self, service: Service, cfg: NodeConfig, session: aiohttp.ClientSession):
        self.service = service
        self.cfg = cfg
        self.session = session

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/internal/lease", self.lease),
            web.post("/internal/heartbeat", self.heartbeat),
            web.post("/internal/complete", self.complete),
            web.post("/internal/release", self.release),
            web.post("/internal/payloads", self.put_payloads),
            web.get("/internal/payloads/{id}", self.get_payload),
            web.post("/internal/payloads/read", self.read_payloads),
            web.post("/internal/compact", self.compact),
            web.get("/internal/status", self.status),
        ]

    async def to_leader(self, request: web.Request, body: Json, timeout: float) -> web.Response:
        """Forward a leader-only call; a forwarded call that misses the leader is answered 503."""
        if request.headers.get(FORWARDED):
            raise NotLeader("this node is not the leader; retry")
        url = self.service.leader_url()
        if url is None:
            raise NoQuorum("no leader is known right now; retry later")
        try:
            async with self.session.post(
                url + request.path,
                json=body,
                headers={"Authorization": request.headers["Authorization"], FORWARDED: "1"},
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                return web.json_response(await resp.json(), status=resp.status)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise NoQuorum(f"the leader did not answer ({type(e).__name__}); retry") from None

    async def lease(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        worker = worker_id(body)
        max_jobs = int(bounded_number(body, "max_jobs", 1, MAX_LEASE_JOBS, 1))
        wait = bounded_number(body, "wait", 0, MAX_WAIT, 10)
        linger = bounded_number(body, "linger", 0, MAX_LINGER, 0)
        # Both end well inside the request timeout, which would answer 503 instead.
        wait = min(wait, self.cfg.request_timeout * 0.8)
        linger = min(linger, self.cfg.request_timeout * 0.8)
        if not self.service.is_leader():
            return await self.to_leader(request, body, max(wait, linger) + self.cfg.request_timeout)
        return web.json_response(
            await self.service.lease(worker, worker_info(body), max_jobs, wait, linger)
        )

    async def heartbeat(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        worker = worker_id(body)
        jobs = job_ids(body)
        if not self.service.is_leader():
            return await self.to_leader(request, body, self.cfg.request_timeout)
        return web.json_response(await self.service.heartbeat(worker, worker_info(body), jobs))

    async def release(self, request: web.Request) -> web.Response:
        """A worker gives jobs back (it could not get their payload, or it is stopping)."""
        body = await json_body(request)
        worker = worker_id(body)
        jobs = job_ids(body)
        reason = str(body.get("reason", "released by the worker"))[:200]
        if not self.service.is_leader():
            return await self.to_leader(request, body, self.cfg.request_timeout)
        return web.json_response({"released": await self.service.release(worker, jobs, reason)})

    async def complete(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        worker = worker_id(body)
        pairs = id_pairs(body, "results", "result", RESULT, "128 lowercase hex")
        return web.json_response({"accepted": await self.service.complete(worker, pairs)})

    async def put_payloads(self, request: web.Request) -> web.Response:
        """Payload copies from a peer, many per request (protocol.wire.encode_batch)."""
        only_params(request)
        body = await read_body(
            request, max(self.cfg.max_body_bytes, MAX_BATCH_BYTES) + MAX_MANIFEST_BYTES
        )
        try:
            items = decode_batch(body)
        except MalformedBatch as e:
            raise InvalidInput(str(e)) from None
        await self.service.store_payloads(items)
        return web.json_response({"stored": len(items)})

    async def get_payload(self, request: web.Request) -> web.StreamResponse:
        """One payload; with local=1 (peers asking), only what this node holds."""
        job_id = request.match_info["id"]
        if not JOB_ID.fullmatch(job_id):
            raise JobNotFound(f"id: no payload {job_id[:64]!r}")
        digest = request.query.get("digest")
        if digest is not None and not DIGEST.fullmatch(digest):
            raise InvalidInput("digest: 64 lowercase hex characters (sha256) required")
        data = await self.service.payload(job_id, digest, local=request.query.get("local") == "1")
        return web.Response(body=data, content_type="application/octet-stream")

    async def read_payloads(self, request: web.Request) -> web.Response:
        """The payloads of several jobs in one body (protocol.wire.encode_batch), for a
        worker's lease: body {"jobs": [{"id", "digest"}, ...]}. Jobs whose payload cannot be
        had are left out; an empty body means none could."""
        body = await json_body(request)
        jobs = id_pairs(body, "jobs", "digest", DIGEST, "64 lowercase hex")
        found = await self.service.payloads(jobs)
        return web.Response(
            body=encode_batch(found) if found else b"", content_type="application/octet-stream"
        )

    async def compact(self, request: web.Request) -> web.Response:
        self.service.compact()
        return web.json_response({"compaction": "requested"})

    async def status(self, request: web.Request) -> web.Response:
        """This node's status and health, for the peers' dashboards."""
        return web.json_response(await self.service.member_status())
