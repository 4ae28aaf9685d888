"""The live dashboard: one self-contained page at `/` and the JSON it polls.

The page (static/dashboard.html: inline CSS and JavaScript, charts drawn as SVG, no outside
fetch) polls `/dashboard/data`. That holds this node's status, each member's status fetched
over the internal API (so a follower's dashboard shows the leader's scaling decisions), the
node's recent history sampled every few seconds, and the latest completions.
"""

from __future__ import annotations

import asyncio
import time
from importlib import resources
from typing import Any

import aiohttp
from aiohttp import web

from node.config import NodeConfig
from node.http.params import only_params
from node.http.service import Service

RECENT_COMPLETIONS = 10
MEMBER_TIMEOUT = 1.0
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
}


async def _member(session: aiohttp.ClientSession, url: str, secret: str) -> dict[str, Any]:
    try:
        async with session.get(
            f"{url}/internal/status",
            headers={"Authorization": f"Bearer {secret}"},
            timeout=aiohttp.ClientTimeout(total=MEMBER_TIMEOUT),
        ) as resp:
            if resp.status == 200:
                return {"reachable": True, **await resp.json()}
            return {"reachable": False, "url": url, "error": f"answered {resp.status}"}
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
        return {"reachable": False, "url": url, "error": type(e).__name__}


def routes(service: Service, cfg: NodeConfig, session: aiohttp.ClientSession) -> list[web.RouteDef]:
    page = resources.files(__package__).joinpath("static/dashboard.html").read_bytes()

    async def dashboard(request: web.Request) -> web.Response:
        only_params(request)
        return web.Response(
            body=page, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS
        )

    async def data(request: web.Request) -> web.Response:
        only_params(request)
        own, peers, recent = await asyncio.gather(
            service.member_status(),
            asyncio.gather(*(_member(session, p.url, cfg.secret) for p in cfg.peers)),
            service.completed(RECENT_COMPLETIONS),
        )
        return web.json_response(
            {
                "now": time.time(),
                "members": [{"reachable": True, "self": True, **own}, *peers],
                "history": service.history(),
                "recent": recent,
            }
        )

    return [web.get("/", dashboard), web.get("/dashboard/data", data)]
