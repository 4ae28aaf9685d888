"""The public HTTP API: enqueue, results, status, health, metrics, OpenAPI."""

from __future__ import annotations

from aiohttp import web

from node.config import NodeConfig
from node.errors import InvalidInput, JobNotFound
from node.http import openapi
from node.http.openapi import (
    DEFAULT_FEED_LIMIT,
    DEFAULT_TOP,
    MAX_FEED_LIMIT,
    MAX_POSITION,
    MAX_TOP,
)
from node.http.params import (
    idempotency_key,
    int_param,
    only_params,
    payload_parts,
    read_body,
    seconds_param,
)
from node.http.service import Service
from protocol.ids import JOB_ID


def routes(service: Service, cfg: NodeConfig) -> list[web.RouteDef]:
    async def enqueue(request: web.Request) -> web.Response:
        only_params(request, "iterations")
        iterations = int_param(request, "iterations", 1, cfg.max_iterations)
        key = idempotency_key(request)
        data = await read_body(request, cfg.max_body_bytes)
        return web.json_response(await service.enqueue(data, iterations, key))

    async def enqueue_batch(request: web.Request) -> web.Response:
        only_params(request, "iterations")
        default = (
            int_param(request, "iterations", 1, cfg.max_iterations)
            if "iterations" in request.query
            else None
        )
        key = idempotency_key(request)
        parts = await payload_parts(
            request, cfg.max_batch_jobs, cfg.max_body_bytes, cfg.max_batch_bytes, cfg.max_iterations
        )
        items: list[tuple[bytes, int]] = []
        for n, (data, iterations) in enumerate(parts, start=1):
            its = iterations if iterations is not None else default
            if its is None:
                raise InvalidInput(
                    f"iterations: missing for part {n}; give ?iterations=N for every part or "
                    f"an X-Iterations header on the part, 1 to {cfg.max_iterations}"
                )
            items.append((data, its))
        return web.json_response(await service.enqueue_batch(items, key))

    async def pull_completed(request: web.Request) -> web.Response:
        only_params(request, "top")
        top = int_param(request, "top", 1, MAX_TOP, DEFAULT_TOP)
        return web.json_response(await service.completed(top))

    async def work(request: web.Request) -> web.Response:
        only_params(request, "wait")
        wait = seconds_param(request, "wait", cfg.max_wait)
        job_id = request.match_info["id"]
        job = await service.job(job_id, wait) if JOB_ID.fullmatch(job_id) else None
        if job is None:
            raise JobNotFound(f"id: no job {job_id[:64]!r} on this node")
        return web.json_response(job)

    async def completed_feed(request: web.Request) -> web.Response:
        only_params(request, "after", "limit", "wait")
        after = int_param(request, "after", 0, MAX_POSITION, 0)
        limit = int_param(request, "limit", 1, MAX_FEED_LIMIT, DEFAULT_FEED_LIMIT)
        wait = seconds_param(request, "wait", cfg.max_wait)
        return web.json_response(await service.completions(after, limit, wait))

    async def status(request: web.Request) -> web.Response:
        only_params(request)
        return web.json_response(await service.status())

    async def metrics(request: web.Request) -> web.Response:
        only_params(request)
        body, content_type = await service.metrics()
        return web.Response(body=body, headers={"Content-Type": content_type})

    spec = openapi.document(cfg)

    async def openapi_json(request: web.Request) -> web.Response:
        return web.json_response(spec)

    async def healthz(request: web.Request) -> web.Response:
        only_params(request)
        healthy, why = service.health()
        return web.json_response(
            {"healthy": healthy, "reason": why}, status=200 if healthy else 503
        )

    return [
        web.put("/enqueue", enqueue),
        web.post("/enqueue/batch", enqueue_batch),
        web.post("/pullCompleted", pull_completed),
        web.get("/work/{id}", work),
        web.get("/completed", completed_feed),
        web.get("/status", status),
        web.get("/healthz", healthz),
        web.get("/openapi.json", openapi_json),
        web.get("/metrics", metrics),
    ]
