"""Reading a request: query parameters, bodies and headers, each checked against its allowed
range; a bad one raises InvalidInput naming the field."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from aiohttp import web

from node.errors import InvalidInput, PayloadTooLarge
from protocol.ids import JOB_ID
from protocol.wire import MAX_LEASE_JOBS

# A JSON object from a request body.
Json = dict[str, Any]

_DECIMAL = re.compile(r"[0-9]{1,19}")
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")


def only_params(request: web.Request, *allowed: str) -> None:
    """Refuse unknown query parameters, so a misspelt one is not silently ignored."""
    for name in request.query:
        if name not in allowed:
            shown = name if len(name) <= 40 else name[:40] + "..."
            raise InvalidInput(
                f"{shown}: unknown query parameter; allowed: {', '.join(allowed) or 'none'}"
            )


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


def seconds_param(request: web.Request, name: str, hi: float) -> float:
    """A number of seconds from 0 to `hi` (decimal, e.g. 2.5); 0 when absent."""
    values = request.query.getall(name, [])
    allowed = f"a number of seconds from 0 to {hi:g}"
    if not values:
        return 0.0
    if len(values) > 1:
        raise InvalidInput(f"{name}: given {len(values)} times; give it once, {allowed}")
    raw = values[0]
    try:
        value = float(raw) if len(raw) <= 40 else math.nan
    except ValueError:
        value = math.nan
    if not 0 <= value <= hi:  # nan too
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise InvalidInput(f"{name}: {shown!r} is not {allowed}")
    return value


def wait_allowance(request: web.Request, hi: float) -> float:
    """The `wait` a request asks for, for its deadline: 0 when absent or invalid (the
    handler then refuses it)."""
    try:
        return seconds_param(request, "wait", hi)
    except InvalidInput:
        return 0.0


async def read_body(request: web.Request, limit: int) -> bytes:
    too_large = PayloadTooLarge(
        f"body: larger than the limit of {limit} bytes; send 0 to {limit} bytes"
    )
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    chunks, total = [], 0
    async for chunk in request.content.iter_chunked(1 << 16):
        total += len(chunk)
        if total > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def idempotency_key(request: web.Request) -> str | None:
    values = request.headers.getall("Idempotency-Key", [])
    if not values:
        return None
    if len(values) > 1 or not _IDEMPOTENCY_KEY.fullmatch(values[0]):
        raise InvalidInput("Idempotency-Key: give one key of 1 to 255 visible ASCII characters")
    return values[0]


_WORKER_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


async def json_body(request: web.Request, limit: int = 1 << 20) -> Json:
    raw = await read_body(request, limit)
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, RecursionError):
        raise InvalidInput("body: not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidInput("body: a JSON object is required")
    return body


def worker_id(body: Json) -> str:
    worker = body.get("worker")
    if not isinstance(worker, str) or not _WORKER_ID.fullmatch(worker):
        raise InvalidInput("worker: 1 to 128 characters of letters, digits and _.:- required")
    return worker


def bounded_number(body: Json, name: str, lo: float, hi: float, default: float) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise InvalidInput(f"{name}: a number from {lo:g} to {hi:g} is required")
    return value


def job_ids(body: Json) -> list[str]:
    jobs = body.get("jobs", [])
    if (
        not isinstance(jobs, list)
        or len(jobs) > MAX_LEASE_JOBS
        or not all(isinstance(j, str) and JOB_ID.fullmatch(j) for j in jobs)
    ):
        raise InvalidInput(f"jobs: a list of up to {MAX_LEASE_JOBS} job ids is required")
    return jobs


def id_pairs(
    body: Json, name: str, key: str, pattern: re.Pattern[str], described: str
) -> list[tuple[str, str]]:
    """Field `name`: a list of 1 to MAX_LEASE_JOBS objects, each with a job 'id' and a `key`
    matching `pattern`; as (id, value) pairs."""
    items = body.get(name)
    if (
        not isinstance(items, list)
        or not 1 <= len(items) <= MAX_LEASE_JOBS
        or not all(
            isinstance(item, dict)
            and isinstance(item.get("id"), str)
            and JOB_ID.fullmatch(item["id"])
            and isinstance(item.get(key), str)
            and pattern.fullmatch(item[key])
            for item in items
        )
    ):
        raise InvalidInput(
            f"{name}: a list of 1 to {MAX_LEASE_JOBS} objects, each with an 'id' (32 hex) and "
            f"a '{key}' ({described}), is required"
        )
    return [(item["id"], item[key]) for item in items]
