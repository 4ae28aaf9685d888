"""The node's HTTP listeners: the public routes, and the internal ones on the same address or
on an address of their own (`--internal-http`), each behind the error and auth middlewares."""

from __future__ import annotations

import logging
import ssl

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from node.config import NodeConfig, tls_context
from node.http import dashboard, internal, public
from node.http.middleware import (
    INTERNAL_ERROR,
    json_error,
    make_auth_middleware,
    make_error_middleware,
)
from node.http.service import Service

log = logging.getLogger(__name__)

# A burst of new connections larger than the accept queue makes the kernel drop handshakes
# the client already believes complete; 1024 (capped by somaxconn) absorbs bursts that
# aiohttp's default of 128 would not.
BACKLOG = 1024


async def serve(
    service: Service, cfg: NodeConfig, session: aiohttp.ClientSession
) -> list[web.AppRunner]:
    """Start listening; the runners to clean up at shutdown."""
    outside = public.routes(service, cfg) + dashboard.routes(service, cfg, session)
    inside = internal.InternalRoutes(service, cfg, session).routes()
    # The public API over TLS when configured; internal routes then on their own listener.
    tls = tls_context(cfg)
    if cfg.internal_http:
        listeners = [(cfg.http, outside, tls), (cfg.internal_http, inside, None)]
    else:
        listeners = [(cfg.http, outside + inside, None)]
    return [await _listen(cfg, address, routes, tls) for address, routes, tls in listeners]


async def _listen(
    cfg: NodeConfig, address: str, routes: list[web.RouteDef], tls: ssl.SSLContext | None
) -> web.AppRunner:
    app = web.Application(
        client_max_size=cfg.max_body_bytes + 1,
        middlewares=[
            make_error_middleware(cfg.request_timeout, cfg.max_wait),
            make_auth_middleware(cfg.secret, cfg.api_key),
        ],
    )
    app.add_routes(routes)
    # At shutdown, long-polls are answered at once (Scheduler.close); calls still open after
    # shutdown_timeout (e.g. forwarded to the leader) are cut, and workers retry.
    runner = web.AppRunner(
        app,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=1.0,
        keepalive_timeout=cfg.idle_connection_timeout,
    )
    await runner.setup()
    assert runner.server is not None  # set up
    runner.server.__class__ = _JsonErrorServer
    host, port = address.rsplit(":", 1)
    await web.TCPSite(runner, host, int(port), backlog=BACKLOG, ssl_context=tls).start()
    return runner


class _JsonErrorHandler(web.RequestHandler):
    """A connection whose requests that aiohttp's HTTP parser rejects (a malformed request
    line or header, a bad chunked body) are answered with a JSON error like every other one.
    These never reach the middlewares, and aiohttp has no hook for their answer
    (aio-libs/aiohttp#3287): this overrides the method that writes it."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # too late for an answer: aiohttp closes it
            return super().handle_error(request, status, exc, message)
        if status < 500:
            detail = exc.message if isinstance(exc, HttpProcessingError) else message
            log.info("refused a request from %s that is not valid HTTP: %s", request.remote, detail)
            text = f"request: not valid HTTP ({str(detail or 'malformed').strip()[:200]})"
        else:
            log.error("internal error on a request from %s", request.remote, exc_info=exc)
            text = INTERNAL_ERROR
        response = json_error(status, text)
        response.force_close()
        return response


class _JsonErrorServer(web.Server):
    """The listener's connection factory: each connection is a `_JsonErrorHandler`."""

    def __call__(self) -> web.RequestHandler:
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)
