"""The middlewares every route goes through: errors as JSON with their status, a deadline on
every request, and authentication (the cluster secret on internal routes, the API key on
public ones when set)."""

from __future__ import annotations

import asyncio
import hmac
import logging

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from node.errors import QueueError, Unauthorized
from node.http.params import wait_allowance

log = logging.getLogger(__name__)

# What a client is told of a fault of ours; the details go to the node's log only.
INTERNAL_ERROR = "internal error; see the node's log"


def json_error(status: int, message: str, retry_after: int | None = None) -> web.Response:
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return web.json_response({"error": message}, status=status, headers=headers)


def make_error_middleware(request_timeout: float, max_wait: float = 0.0) -> Middleware:
    """Errors as JSON; a deadline of `request_timeout` on every request, plus the `wait` (up
    to `max_wait`) of a request that asks to wait."""

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            async with asyncio.timeout(request_timeout + wait_allowance(request, max_wait)):
                return await handler(request)
        except QueueError as e:
            return json_error(e.status, e.message, e.retry_after)
        except TimeoutError:
            return json_error(
                503, f"no answer within the request timeout ({request_timeout:g}s); retry later", 1
            )
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
            return json_error(500, INTERNAL_ERROR)

    return errors


def _http_error_text(request: web.Request, e: web.HTTPException) -> str:
    if e.status == 404:
        return f"no route {request.path}"
    if e.status == 405:
        return (
            f"method {request.method} not allowed on {request.path}; allowed: "
            f"{', '.join(sorted(e.allowed_methods)) if hasattr(e, 'allowed_methods') else '?'}"
        )
    if e.status == 413:
        return "body: too large"
    return e.reason


# The dashboard page itself is static; the data it polls needs the key like the rest.
OPEN_PATHS = ("/healthz", "/openapi.json", "/")


def make_auth_middleware(secret: str, api_key: str) -> Middleware:
    """Internal routes need the cluster secret; with an API key set, public routes need it."""
    expected = f"Bearer {secret}".encode()
    expected_key = api_key.encode()

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/internal/"):
            given = request.headers.get("Authorization", "").encode(errors="replace")
            if not hmac.compare_digest(given, expected):
                raise Unauthorized(
                    "internal route: a valid 'Authorization: Bearer <cluster "
                    "secret>' header is required"
                )
        elif expected_key and request.path not in OPEN_PATHS:
            # X-API-Key, or the key as a bearer token (what Prometheus scrapers send).
            given = request.headers.get("X-API-Key", "").encode(errors="replace")
            bearer = request.headers.get("Authorization", "").encode(errors="replace")
            if not (
                hmac.compare_digest(given, expected_key)
                or hmac.compare_digest(bearer, b"Bearer " + expected_key)
            ):
                raise Unauthorized(
                    "X-API-Key: a valid API key is required (or the header "
                    "'Authorization: Bearer <API key>')"
                )
        return await handler(request)

    return auth
