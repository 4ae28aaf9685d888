"""Internal routes: the worker API and the peer API. All require the cluster secret.

Workers may talk to any node: lease and heartbeat calls are forwarded to the leader (once),
completions are proposed by whichever node receives them.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from . import commands as c
from .api import JOB_ID, only_params, read_body
from .errors import InvalidInput, JobNotFound, NoQuorum, NotLeader
from .wire import MAX_BATCH_BYTES, MAX_LEASE_JOBS, MAX_MANIFEST_BYTES, decode_batch, \
    encode_batch

if TYPE_CHECKING:
    from .app import Node

log = logging.getLogger(__name__)

FORWARDED = "X-WQ-Forwarded"
MAX_WAIT = 30.0
MAX_LINGER = 1.0
_RESULT = re.compile(r"[0-9a-f]{128}")
_DIGEST = re.compile(r"[0-9a-f]{64}")
_WORKER_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


async def json_body(request: web.Request, limit: int = 1 << 20) -> dict:
    raw = await read_body(request, limit)
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, RecursionError):
        raise InvalidInput("body: not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidInput("body: a JSON object is required")
    return body


def worker_id(body: dict) -> str:
    worker = body.get("worker")
    if not isinstance(worker, str) or not _WORKER_ID.fullmatch(worker):
        raise InvalidInput("worker: 1 to 128 characters of letters, digits and _.:- required")
    return worker


def bounded_number(body: dict, name: str, lo: float, hi: float, default: float) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise InvalidInput(f"{name}: a number from {lo:g} to {hi:g} is required")
    return value


def job_ids(body: dict) -> list[str]:
    jobs = body.get("jobs", [])
    if not isinstance(jobs, list) or len(jobs) > MAX_LEASE_JOBS or \
            not all(isinstance(j, str) and JOB_ID.fullmatch(j) for j in jobs):
        raise InvalidInput(f"jobs: a list of up to {MAX_LEASE_JOBS} job ids is required")
    return jobs


def routes(node: "Node") -> list[web.RouteDef]:
    cfg = node.cfg

    async def to_leader(request: web.Request, body: dict, timeout: float) -> web.Response:
        """Forward a leader-only call; a forwarded call that misses the leader is answered 503."""
        if request.headers.get(FORWARDED):
            raise NotLeader("this node is not the leader; retry")
        url = node.leader_url()
        if url is None:
            raise NoQuorum("no leader is known right now; retry later")
        try:
            async with node.session.post(
                    url + request.path, json=body,
                    headers={"Authorization": request.headers["Authorization"], FORWARDED: "1"},
                    timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                return web.json_response(await resp.json(), status=resp.status)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise NoQuorum(f"the leader did not answer ({type(e).__name__}); retry") from None

    def worker_info(request: web.Request, body: dict) -> dict:
        info = body.get("info") if isinstance(body.get("info"), dict) else {}
        return {k: str(v)[:200] for k, v in info.items()
                if k in ("host", "pid", "backend", "speed")}

    async def lease(request: web.Request) -> web.Response:
        body = await json_body(request)
        worker = worker_id(body)
        max_jobs = int(bounded_number(body, "max_jobs", 1, MAX_LEASE_JOBS, 1))
        wait = bounded_number(body, "wait", 0, MAX_WAIT, 10)
        linger = bounded_number(body, "linger", 0, MAX_LINGER, 0)
        # Both end well inside the request timeout, which would answer 503 instead.
        wait = min(wait, cfg.request_timeout * 0.8)
        linger = min(linger, cfg.request_timeout * 0.8)
        if not node.raft._isLeader():
            return await to_leader(request, body, max(wait, linger) + cfg.request_timeout)
        now = time.time()
        node.roster.touch(worker, worker_info(request, body), now)
        jobs = await node.scheduler.lease(worker, max_jobs, wait, linger)
        return web.json_response({
            "jobs": jobs,
            "lease_timeout": cfg.lease_timeout,
            "idle_timeout": node.idle_timeout(),
        })

    async def heartbeat(request: web.Request) -> web.Response:
        body = await json_body(request)
        worker = worker_id(body)
        jobs = job_ids(body)
        if not node.raft._isLeader():
            return await to_leader(request, body, cfg.request_timeout)
        node.roster.touch(worker, worker_info(request, body), time.time())
        held = await node.scheduler.heartbeat(worker, jobs)
        return web.json_response({"jobs": held, "lease_timeout": cfg.lease_timeout})

    async def complete(request: web.Request) -> web.Response:
        body = await json_body(request)
        worker = worker_id(body)
        results = body.get("results")
        if not isinstance(results, list) or not 1 <= len(results) <= MAX_LEASE_JOBS:
            raise InvalidInput(f"results: a list of 1 to {MAX_LEASE_JOBS} results is required")
        pairs = []
        for r in results:
            if not isinstance(r, dict) or not isinstance(r.get("id"), str) or \
                    not JOB_ID.fullmatch(r["id"]) or not isinstance(r.get("result"), str) or \
                    not _RESULT.fullmatch(r["result"]):
                raise InvalidInput("results: each needs an 'id' (32 hex) and a 'result' "
                                   "(128 lowercase hex)")
            pairs.append((r["id"], r["result"]))
        accepted = await node.proposer.propose(c.Complete(tuple(pairs), time.time(),
                                                          cfg.max_finished))
        if accepted:
            log.info("jobs completed by %s (%d): %s", worker, len(accepted), " ".join(accepted),
                     extra={"jobs": accepted, "worker": worker})
        return web.json_response({"accepted": accepted})

    async def put_payloads(request: web.Request) -> web.Response:
        """Payload copies from a peer, many per request (blobs.encode_batch)."""
        only_params(request)
        body = await read_body(request, max(cfg.max_body_bytes, MAX_BATCH_BYTES) +
                               MAX_MANIFEST_BYTES)
        items = decode_batch(body)
        await node.blobs.store_batch(items)
        return web.json_response({"stored": len(items)})

    async def payload_for(job_id: str, digest: str | None, known: dict | None,
                          held: bytes | None) -> bytes:
        """A queued or running job's payload: `held` here, or else fetched from a peer
        (`known` and `held` as Store.jobs_and_payloads gives them). Workers pass the digest from
        their lease, so a node that has not applied the enqueue yet can still serve it."""
        if known is not None and known["status"] not in ("queued", "running"):
            raise JobNotFound(f"id: job {job_id} is {known['status']}; its payload is gone")
        if known is not None:
            digest = known["digest"]
        elif digest is None:
            raise JobNotFound(f"id: no job {job_id!r} on this node (pass its digest)")
        data = held if held is not None else await node.blobs.fetch(job_id, digest)
        if data is None:
            raise JobNotFound(f"id: no node holds the payload of {job_id} right now")
        return data

    async def get_payload(request: web.Request) -> web.StreamResponse:
        """One payload; with local=1 (peers asking), only what this node holds."""
        job_id = request.match_info["id"]
        if not JOB_ID.fullmatch(job_id):
            raise JobNotFound(f"id: no payload {job_id[:64]!r}")
        digest = request.query.get("digest")
        if digest is not None and not _DIGEST.fullmatch(digest):
            raise InvalidInput("digest: 64 lowercase hex characters (sha256) required")
        if request.query.get("local") == "1":
            data = await node.blobs.fetch(job_id, digest, from_peers=False)
            if data is None:
                raise JobNotFound(f"id: no payload of {job_id} on this node")
        else:
            here = await node.run_db(node.store.jobs_and_payloads, [job_id])
            data = await payload_for(job_id, digest, *here[job_id])
        return web.Response(body=data, content_type="application/octet-stream")

    async def read_payloads(request: web.Request) -> web.Response:
        """The payloads of several jobs in one body (wire.encode_batch), for a worker's lease:
        body {"jobs": [{"id", "digest"}, ...]}. Jobs whose payload cannot be had are left
        out; an empty body means none could."""
        body = await json_body(request)
        jobs = body.get("jobs")
        if not isinstance(jobs, list) or not 1 <= len(jobs) <= MAX_LEASE_JOBS or not all(
                isinstance(j, dict) and isinstance(j.get("id"), str) and JOB_ID.fullmatch(j["id"])
                and isinstance(j.get("digest"), str) and _DIGEST.fullmatch(j["digest"])
                for j in jobs):
            raise InvalidInput(f"jobs: a list of 1 to {MAX_LEASE_JOBS} objects with an 'id' "
                               "(32 hex) and a 'digest' (64 hex) is required")

        here = await node.run_db(node.store.jobs_and_payloads, [j["id"] for j in jobs])

        async def one(job: dict) -> tuple[str, bytes, str] | None:
            try:
                data = await payload_for(job["id"], job["digest"], *here[job["id"]])
            except JobNotFound:
                return None
            return job["id"], data, job["digest"]
        found = [item for item in await asyncio.gather(*(one(j) for j in jobs)) if item]
        return web.Response(body=encode_batch(found) if found else b"",
                            content_type="application/octet-stream")

    async def release(request: web.Request) -> web.Response:
        """A worker gives jobs back (it could not get their payload, or it is stopping)."""
        body = await json_body(request)
        worker = worker_id(body)
        jobs = job_ids(body)
        reason = str(body.get("reason", "released by the worker"))[:200]
        if not node.raft._isLeader():
            return await to_leader(request, body, cfg.request_timeout)
        released = await node.scheduler.release(worker, jobs, reason)
        return web.json_response({"released": released})

    async def compact(request: web.Request) -> web.Response:
        node.raft.forceLogCompaction()
        return web.json_response({"compaction": "requested"})

    return [
        web.post("/internal/lease", lease),
        web.post("/internal/heartbeat", heartbeat),
        web.post("/internal/complete", complete),
        web.post("/internal/release", release),
        web.post("/internal/payloads", put_payloads),
        web.get("/internal/payloads/{id}", get_payload),
        web.post("/internal/payloads/read", read_payloads),
        web.post("/internal/compact", compact),
    ]
