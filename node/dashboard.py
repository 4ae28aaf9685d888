"""The live dashboard: one self-contained page at `/` and the JSON it polls.

The page (static/dashboard.html: inline CSS and JavaScript, charts drawn as SVG, no outside
fetch) polls `/dashboard/data`. That holds this node's status, each member's status fetched
over the internal API (so a follower's dashboard shows the leader's scaling decisions), the
node's recent history sampled every few seconds, and the latest completions.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from importlib import resources
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from .api import only_params

if TYPE_CHECKING:
    from .app import Node

log = logging.getLogger(__name__)

SAMPLE_SECONDS = 2.0
HISTORY_SAMPLES = 300           # ten minutes
RECENT_COMPLETIONS = 10
MEMBER_TIMEOUT = 1.0


class History:
    """Queue depth, rates and workers over the last minutes, sampled by this node."""

    def __init__(self, maxlen: int = HISTORY_SAMPLES):
        self.samples: deque[dict] = deque(maxlen=maxlen)
        self._last: tuple[float, dict[str, int]] | None = None

    def add(self, now: float, counts: dict[str, int], totals: dict[str, int],
            workers: dict[str, int]) -> None:
        rates = {"enqueued": 0.0, "completed": 0.0}
        if self._last is not None and now > self._last[0]:
            then, before = self._last
            rates = {k: round((totals[k] - before[k]) / (now - then), 2) for k in rates}
        self._last = (now, totals)
        self.samples.append({"t": round(now, 3), "queued": counts["queued"],
                             "running": counts["running"],
                             "enqueued_per_s": rates["enqueued"],
                             "completed_per_s": rates["completed"],
                             "workers": workers.get("busy", 0) + workers.get("idle", 0),
                             "busy": workers.get("busy", 0)})


async def sample_forever(node: "Node") -> None:
    while True:
        try:
            node.history.add(time.time(), node.machine.counts, node.metrics.totals,
                             await node.worker_states())
        except Exception:
            log.exception("dashboard sample failed")
        await asyncio.sleep(SAMPLE_SECONDS)


async def _status(node: "Node") -> dict:
    """This node's /status with its health, as peers ask for it over /internal/status."""
    status = await node.status()
    status["healthy"], status["health"] = node.health()
    return status


async def _member(node: "Node", url: str) -> dict:
    try:
        async with node.session.get(
                f"{url}/internal/status", headers={"Authorization": f"Bearer {node.cfg.secret}"},
                timeout=aiohttp.ClientTimeout(total=MEMBER_TIMEOUT)) as resp:
            if resp.status == 200:
                return {"reachable": True, **await resp.json()}
            return {"reachable": False, "url": url, "error": f"answered {resp.status}"}
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
        return {"reachable": False, "url": url, "error": type(e).__name__}


def routes(node: "Node") -> list[web.RouteDef]:
    page = resources.files(__package__).joinpath("static/dashboard.html").read_bytes()

    async def dashboard(request: web.Request) -> web.Response:
        only_params(request)
        return web.Response(body=page, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-cache",
                                     "Content-Security-Policy":
                                         "default-src 'none'; script-src 'unsafe-inline'; "
                                         "style-src 'unsafe-inline'; connect-src 'self'; "
                                         "img-src data:"})

    async def data(request: web.Request) -> web.Response:
        only_params(request)
        own, peers, recent = await asyncio.gather(
            _status(node), asyncio.gather(*(_member(node, p.url) for p in node.cfg.peers)),
            node.run_db(node.store.completed, RECENT_COMPLETIONS))
        return web.json_response({
            "now": time.time(),
            "members": [{"reachable": True, "self": True, **own}, *peers],
            "history": list(node.history.samples),
            "recent": recent,
        })

    async def internal_status(request: web.Request) -> web.Response:
        return web.json_response(await _status(node))

    return [web.get("/", dashboard), web.get("/dashboard/data", data),
            web.get("/internal/status", internal_status)]
