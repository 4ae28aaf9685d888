"""Public HTTP API (DESIGN.md section 4) and the middlewares every route goes through."""
from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
import uuid
from typing import TYPE_CHECKING

from aiohttp import web

from . import commands as c, openapi
from .errors import InvalidInput, JobNotFound, KeyReused, PayloadTooLarge, QueueError, \
    QueueFull, Unauthorized
from .metrics import CONTENT_TYPE as metrics_content_type
from .openapi import DEFAULT_TOP, MAX_TOP
from .state import KeyConflict
from .wire import digest_of

if TYPE_CHECKING:
    from .app import Node

log = logging.getLogger(__name__)

_DECIMAL = re.compile(r"[0-9]{1,19}")
JOB_ID = re.compile(r"[0-9a-f]{32}")      # uuid4().hex, as enqueue makes them
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")


def json_error(status: int, message: str, retry_after: int | None = None) -> web.Response:
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return web.json_response({"error": message}, status=status, headers=headers)


def make_error_middleware(request_timeout: float):
    @web.middleware
    async def errors(request: web.Request, handler):
        try:
            async with asyncio.timeout(request_timeout):
                return await handler(request)
        except QueueError as e:
            return json_error(e.status, e.message, e.retry_after)
        except TimeoutError:
            return json_error(503, f"no answer within the request timeout ({request_timeout:g}s); "
                                   "retry later", 1)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            response = json_error(e.status, _http_error_text(request, e))
            if "Allow" in e.headers:
                response.headers["Allow"] = e.headers["Allow"]
            return response
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("internal error on %s %s", request.method, request.path)
            return json_error(500, "internal error; see the node's log")
    return errors


def _http_error_text(request: web.Request, e: web.HTTPException) -> str:
    if e.status == 404:
        return f"no route {request.path}"
    if e.status == 405:
        return f"method {request.method} not allowed on {request.path}; allowed: " \
               f"{', '.join(sorted(e.allowed_methods)) if hasattr(e, 'allowed_methods') else '?'}"
    if e.status == 413:
        return "body: too large"
    return e.reason


# The dashboard page itself is static; the data it polls needs the key like the rest.
OPEN_PATHS = ("/healthz", "/openapi.json", "/")


def make_auth_middleware(secret: str, api_key: str):
    """Internal routes need the cluster secret; with an API key set, public routes need it."""
    expected = f"Bearer {secret}".encode()
    expected_key = api_key.encode()

    @web.middleware
    async def auth(request: web.Request, handler):
        if request.path.startswith("/internal/"):
            given = request.headers.get("Authorization", "").encode(errors="replace")
            if not hmac.compare_digest(given, expected):
                raise Unauthorized("internal route: a valid 'Authorization: Bearer <cluster "
                                   "secret>' header is required")
        elif expected_key and request.path not in OPEN_PATHS:
            # X-API-Key, or the key as a bearer token (what Prometheus scrapers send).
            given = request.headers.get("X-API-Key", "").encode(errors="replace")
            bearer = request.headers.get("Authorization", "").encode(errors="replace")
            if not (hmac.compare_digest(given, expected_key) or
                    hmac.compare_digest(bearer, b"Bearer " + expected_key)):
                raise Unauthorized("X-API-Key: a valid API key is required (or the header "
                                   "'Authorization: Bearer <API key>')")
        return await handler(request)
    return auth


def only_params(request: web.Request, *allowed: str) -> None:
    """Refuse unknown query parameters, so a misspelt one is not silently ignored."""
    for name in request.query:
        if name not in allowed:
            shown = name if len(name) <= 40 else name[:40] + "..."
            raise InvalidInput(f"{shown}: unknown query parameter; allowed: "
                               f"{', '.join(allowed) or 'none'}")


def int_param(request: web.Request, name: str, lo: int, hi: int, default: int | None = None) -> int:
    """A decimal integer query parameter within [lo, hi]; InvalidInput names it otherwise."""
    values = request.query.getall(name, [])
    allowed = f"a decimal integer from {lo} to {hi}"
    if not values:
        if default is None:
            raise InvalidInput(f"{name}: missing; {allowed} is required")
        return default
    if len(values) > 1:
        raise InvalidInput(f"{name}: given {len(values)} times; give it once, {allowed}")
    raw = values[0]
    if not _DECIMAL.fullmatch(raw):
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise InvalidInput(f"{name}: {shown!r} is not {allowed}")
    value = int(raw)
    if not lo <= value <= hi:
        raise InvalidInput(f"{name}: {value} is out of range; allowed {lo} to {hi}")
    return value


async def read_body(request: web.Request, limit: int) -> bytes:
    too_large = PayloadTooLarge(f"body: larger than the limit of {limit} bytes; "
                                f"send 1 to {limit} bytes")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    chunks, total = [], 0
    async for chunk in request.content.iter_chunked(1 << 16):
        total += len(chunk)
        if total > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def routes(node: "Node") -> list[web.RouteDef]:
    cfg = node.cfg

    async def enqueue(request: web.Request) -> web.Response:
        started = time.perf_counter()
        only_params(request, "iterations")
        iterations = int_param(request, "iterations", 1, cfg.max_iterations)
        key = idempotency_key(request)
        data = await read_body(request, cfg.max_body_bytes)
        if not data:
            raise InvalidInput(f"body: empty; send the payload, 1 to {cfg.max_body_bytes} bytes")
        digest = digest_of(data)
        if key is not None:
            known = await node.run_db(node.store.idempotency_key, key)
            if known is not None:
                return web.json_response({"id": same_request(known, digest, iterations)})
        if node.machine.counts["queued"] >= cfg.max_queued:
            raise QueueFull(f"queue: at its capacity of {cfg.max_queued} queued jobs; retry later")
        node.check_quorum()
        job_id = uuid.uuid4().hex
        await node.blobs.replicate(job_id, data, digest)
        (result,) = await node.proposer.propose(c.Enqueue(
            (c.NewJob(job_id, iterations, len(data), digest, time.time(), key),),
            cfg.idempotency_window))
        if isinstance(result, KeyConflict):
            raise key_reused()
        if result == job_id:
            log.info("job %s enqueued (%d bytes, %d iterations)", job_id, len(data), iterations,
                     extra={"jobs": [job_id]})
        node.metrics.enqueue_seconds.observe(time.perf_counter() - started)
        return web.json_response({"id": result})

    async def pull_completed(request: web.Request) -> web.Response:
        only_params(request, "top")
        top = int_param(request, "top", 1, MAX_TOP, DEFAULT_TOP)
        return web.json_response(await node.run_db(node.store.completed, top))

    async def work(request: web.Request) -> web.Response:
        only_params(request)
        job_id = request.match_info["id"]
        job = await node.run_db(node.store.job, job_id) if JOB_ID.fullmatch(job_id) else None
        if job is None:
            raise JobNotFound(f"id: no job {job_id[:64]!r} on this node")
        return web.json_response(job_view(job))

    async def status(request: web.Request) -> web.Response:
        only_params(request)
        return web.json_response(await node.status())

    async def metrics(request: web.Request) -> web.Response:
        only_params(request)
        node.metrics.worker_states = await node.worker_states()
        return web.Response(body=node.metrics.render(),
                            headers={"Content-Type": metrics_content_type})

    spec = openapi.document(cfg)

    async def openapi_json(request: web.Request) -> web.Response:
        return web.json_response(spec)

    async def healthz(request: web.Request) -> web.Response:
        only_params(request)
        healthy, why = node.health()
        return web.json_response({"healthy": healthy, "reason": why}, status=200 if healthy else 503)

    return [
        web.put("/enqueue", enqueue),
        web.post("/pullCompleted", pull_completed),
        web.get("/work/{id}", work),
        web.get("/status", status),
        web.get("/healthz", healthz),
        web.get("/openapi.json", openapi_json),
        web.get("/metrics", metrics),
    ]


def idempotency_key(request: web.Request) -> str | None:
    values = request.headers.getall("Idempotency-Key", [])
    if not values:
        return None
    if len(values) > 1 or not _IDEMPOTENCY_KEY.fullmatch(values[0]):
        raise InvalidInput("Idempotency-Key: give one key of 1 to 255 visible ASCII characters")
    return values[0]


def key_reused() -> KeyReused:
    return KeyReused("Idempotency-Key: already used for a different payload or iterations; "
                     "use a new key for a new job")


def same_request(known: dict, digest: str, iterations: int) -> str:
    """The job id recorded for a key, if this request matches the one that created it."""
    if (known["digest"], known["iterations"]) != (digest, iterations):
        raise key_reused()
    return known["job_id"]


def job_view(job: dict) -> dict:
    view = {k: job[k] for k in ("id", "status", "iterations", "size", "enqueued_at", "attempts")}
    if job["status"] == "running":
        view["worker"] = job["worker"]
        view["leased_at"] = job["leased_at"]
    if job["status"] == "completed":
        view["result"] = job["result"]
        view["completed_at"] = job["finished_at"]
    if job["status"] == "failed":
        view["error"] = job["error"]
        view["failed_at"] = job["finished_at"]
    return view
