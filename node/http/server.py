"""The node's HTTP listeners: the public routes, and the internal ones on the same address or
on an address of their own (`--internal-http`), each behind the error and auth middlewares."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from node.config import NodeConfig
from node.http import dashboard, internal, public
from node.http.middleware import make_auth_middleware, make_error_middleware
from node.http.service import Service

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
    if cfg.internal_http:
        listeners = [(cfg.http, outside), (cfg.internal_http, inside)]
    else:
        listeners = [(cfg.http, outside + inside)]
    return [await _listen(cfg, address, routes) for address, routes in listeners]


async def _listen(cfg: NodeConfig, address: str, routes: list[web.RouteDef]) -> web.AppRunner:
    app = web.Application(
        client_max_size=cfg.max_body_bytes + 1,
        middlewares=[
            make_error_middleware(cfg.request_timeout),
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
    host, port = address.rsplit(":", 1)
    await web.TCPSite(runner, host, int(port), backlog=BACKLOG).start()
    return runner
