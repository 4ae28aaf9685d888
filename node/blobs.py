"""The payload data plane: payload bytes go node to node over authenticated HTTP, never
through the Raft log.

`replicate` stores a payload here and on the peers and returns once a majority holds it (the
remaining copies finish in the background). `fetch` returns a payload from here or, for a node
that was down when it arrived, from a peer, checking its digest before keeping the copy.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Awaitable, Callable

import aiohttp

from .config import NodeConfig
from .errors import NoQuorum
from .store import Store

log = logging.getLogger(__name__)

DIGEST_HEADER = "X-Payload-SHA256"
# How long a peer whose payload copy failed is left out of new copies.
SUSPECT_SECONDS = 5.0


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Blobs:
    def __init__(self, cfg: NodeConfig, store: Store, session: aiohttp.ClientSession,
                 run_db: Callable[..., Awaitable]):
        self._cfg = cfg
        self._store = store
        self._session = session
        self._db = run_db
        self._auth = {"Authorization": f"Bearer {cfg.secret}"}
        self._background: set[asyncio.Task] = set()
        self._suspect_until: dict[str, float] = {}     # peer URL -> monotonic time

    async def store_local(self, job_id: str, data: bytes) -> None:
        await self._db(self._store.put_payload, job_id, data, time.time())

    async def replicate(self, job_id: str, data: bytes, digest: str) -> None:
        """Store on this node and the peers; return when a majority holds the payload.

        Peers that failed in the last few seconds are left out while the others can still
        make a majority: a paused or dead peer must not hold every enqueue up to its timeout.
        A peer left out fetches the payload later, if it ever needs it."""
        now = time.monotonic()
        peers = [p.url for p in self._cfg.peers if self._suspect_until.get(p.url, 0) <= now]
        if len(peers) + 1 < self._cfg.majority:
            peers = [p.url for p in self._cfg.peers]
        tasks = [asyncio.ensure_future(self.store_local(job_id, data))]
        tasks += [asyncio.ensure_future(self._push(url, job_id, data, digest)) for url in peers]
        stored, failed = 0, 0
        try:
            for next_done in asyncio.as_completed(tasks):
                try:
                    await next_done
                    stored += 1
                except Exception:
                    failed += 1
                if stored >= self._cfg.majority:
                    return
                if len(tasks) - failed < self._cfg.majority:
                    break
        finally:
            for t in tasks:
                if not t.done():
                    self._background.add(t)
                    t.add_done_callback(self._late_copy_done)
        raise NoQuorum(f"payload stored on {stored} of {self._cfg.cluster_size} nodes, a "
                       f"majority ({self._cfg.majority}) is needed; retry later")

    def _late_copy_done(self, task: asyncio.Task) -> None:
        self._background.discard(task)
        if not task.cancelled():
            task.exception()    # already logged by _push; retrieved so asyncio does not warn

    async def _push(self, base: str, job_id: str, data: bytes, digest: str) -> None:
        try:
            async with self._session.put(
                    f"{base}/internal/payloads/{job_id}", data=data,
                    headers={**self._auth, DIGEST_HEADER: digest},
                    timeout=aiohttp.ClientTimeout(total=self._cfg.request_timeout)) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"{base} answered {resp.status}")
        except Exception as e:
            if self._suspect_until.get(base, 0) <= time.monotonic():
                log.warning("payload copy to %s failed (%s); leaving that peer out for %.0fs",
                            base, type(e).__name__, SUSPECT_SECONDS)
            self._suspect_until[base] = time.monotonic() + SUSPECT_SECONDS
            raise
        self._suspect_until.pop(base, None)

    async def fetch(self, job_id: str, digest: str | None, from_peers: bool = True) -> bytes | None:
        """The payload from this node, or else from the first peer that has it."""
        data = await self._db(self._store.get_payload, job_id)
        if data is not None or not from_peers:
            return data
        for peer in self._cfg.peers:
            try:
                async with self._session.get(
                        f"{peer.url}/internal/payloads/{job_id}", params={"local": "1"},
                        headers=self._auth,
                        timeout=aiohttp.ClientTimeout(total=self._cfg.request_timeout / 2)) as resp:
                    if resp.status != 200:
                        continue
                    data = await resp.read()
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                log.debug("payload %s not fetched from %s: %s", job_id, peer.url, e)
                continue
            if digest is not None and digest_of(data) != digest:
                log.warning("payload %s from %s has a wrong digest; ignored", job_id, peer.url)
                continue
            await self.store_local(job_id, data)
            log.info("payload %s fetched from %s", job_id, peer.url)
            return data
        return None

    async def close(self) -> None:
        for t in list(self._background):
            t.cancel()
