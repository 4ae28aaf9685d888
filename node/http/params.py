"""Reading a request: query parameters, bodies and headers, each checked against its allowed
range; a bad one raises InvalidInput naming the field."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

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
            raise InvalidInput(
                f"{_shown(name)}: unknown query parameter; allowed: {', '.join(allowed) or 'none'}"
            )


def int_param(request: web.Request, name: str, lo: int, hi: int, default: int | None = None) -> int:
    """A decimal integer query parameter within [lo, hi]; InvalidInput names it otherwise."""
    allowed = f"a decimal integer from {lo} to {hi}"
    raw = _one(request, name, allowed)
    if raw is None:
        if default is None:
            raise InvalidInput(f"{name}: missing; {allowed} is required")
        return default
    if not _DECIMAL.fullmatch(raw):
        raise InvalidInput(f"{name}: {_shown(raw)!r} is not {allowed}")
    value = int(raw)
    if not lo <= value <= hi:
        raise InvalidInput(f"{name}: {value} is out of range; allowed {lo} to {hi}")
    return value


def seconds_param(request: web.Request, name: str, hi: float) -> float:
    """A number of seconds from 0 to `hi` (decimal, e.g. 2.5); 0 when absent."""
    allowed = f"a number of seconds from 0 to {hi:g}"
    raw = _one(request, name, allowed)
    if raw is None:
        return 0.0
    try:
        value = float(raw) if len(raw) <= 40 else math.nan
    except ValueError:
        value = math.nan
    if not 0 <= value <= hi:  # nan too
        raise InvalidInput(f"{name}: {_shown(raw)!r} is not {allowed}")
    return value


def _one(request: web.Request, name: str, allowed: str) -> str | None:
    """The query parameter's one value, None when absent; InvalidInput when given twice."""
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise InvalidInput(f"{name}: given {len(values)} times; give it once, {allowed}")
    return values[0] if values else None


def _shown(raw: str) -> str:
    """A client's text as an error quotes it: at most 40 characters."""
    return raw if len(raw) <= 40 else raw[:40] + "..."


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


async def payload_parts(
    request: web.Request, max_parts: int, max_part_bytes: int, max_bytes: int, max_iterations: int
) -> list[tuple[bytes, int | None]]:
    """The parts of a multipart/form-data body, each one payload: (its bytes, the
    iterations its `X-Iterations` part header gives, if any)."""
    if request.content_type != "multipart/form-data":
        raise InvalidInput(
            "body: multipart/form-data with one part per payload is required "
            "(curl -F p=@a.bin -F p=@b.bin)"
        )
    overhead = 1024 * (max_parts + 1)  # boundaries and part headers
    if request.content_length is not None and request.content_length > max_bytes + overhead:
        raise PayloadTooLarge(f"body: larger than the limit of {max_bytes} payload bytes")
    parts: list[tuple[bytes, int | None]] = []
    total = 0
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            n = len(parts) + 1
            if not isinstance(part, BodyPartReader):
                raise InvalidInput(f"part {n}: a nested multipart body is not a payload")
            if n > max_parts:
                raise InvalidInput(f"parts: more than {max_parts}; send 1 to {max_parts}")
            iterations = _part_iterations(part.headers.get("X-Iterations"), n, max_iterations)
            data = bytearray()
            while chunk := await part.read_chunk(1 << 16):
                data += chunk
                total += len(chunk)
                if len(data) > max_part_bytes:
                    raise PayloadTooLarge(
                        f"part {n}: larger than the limit of {max_part_bytes} bytes"
                    )
                if total > max_bytes:
                    raise PayloadTooLarge(
                        f"body: the parts hold more than the limit of {max_bytes} bytes"
                    )
            parts.append((bytes(data), iterations))
    except (ValueError, AssertionError, RuntimeError, LookupError, HttpProcessingError) as e:
        raise InvalidInput(f"body: not a valid multipart/form-data body ({e})"[:300]) from None
    if not parts:
        raise InvalidInput(f"parts: none; send 1 to {max_parts} payloads")
    return parts


def _part_iterations(raw: str | None, n: int, hi: int) -> int | None:
    if raw is None:
        return None
    if not _DECIMAL.fullmatch(raw.strip()) or not 1 <= int(raw) <= hi:
        raise InvalidInput(f"part {n}: X-Iterations {raw[:40]!r} is not an integer from 1 to {hi}")
    return int(raw)


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
