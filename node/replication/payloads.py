"""The payload data plane: payload bytes go node to node over authenticated HTTP, never
through the Raft log.

`replicate` stores a payload here and on the peers and returns once a majority holds it (the
remaining copies finish in the background). Copies to a peer travel many per request: those
that arrive while a request to that peer is under way go together in the next one. `fetch`
returns a payload from here or, for a node that was down when it arrived, from a peer,
checking its digest before keeping the copy.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from typing import Awaitable, Callable, Generic, TypeVar

import aiohttp

from node.config import NodeConfig
from node.errors import NoQuorum
from node.storage.store import RunDb, Store
from protocol.ids import digest_of
from protocol.wire import MAX_BATCH_BYTES, MAX_BATCH_ITEMS, encode_batch

log = logging.getLogger(__name__)

# How long a peer whose payload copy failed is left out of new copies.
SUSPECT_SECONDS = 5.0
# Payloads written to the local store in one transaction.
MAX_WRITE_BYTES = 32 << 20

T = TypeVar("T")


class Batcher(Generic[T]):
    """Runs `flush` on groups of items: the items submitted while a flush is under way go
    together in the next one (up to max_items, and max_bytes unless one item is larger). Each
    submit returns once the flush carrying its item succeeded, and raises if it failed.

    Under load this turns a commit (or a request) per payload into one per group, and a
    single flush at a time avoids waiting on SQLite's write lock."""

    def __init__(self, flush: Callable[[list[T]], Awaitable[None]], max_items: int, max_bytes: int):
        self._flush = flush
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._pending: deque[tuple[T, int, asyncio.Future[None]]] = deque()
        self._running = False

    async def submit(self, item: T, size: int) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((item, size, done))
        if not self._running:
            self._running = True
            asyncio.ensure_future(self._drain())
        await done

    async def _drain(self) -> None:
        group: list[tuple[T, int, asyncio.Future[None]]] = []
        try:
            while self._pending:
                group, size = [], 0
                while (
                    self._pending
                    and len(group) < self._max_items
                    and (not group or size + self._pending[0][1] <= self._max_bytes)
                ):
                    group.append(self._pending.popleft())
                    size += group[-1][1]
                try:
                    await self._flush([item for item, _, _ in group])
                except Exception as e:
                    self._settle(group, e)
                else:
                    self._settle(group, None)
        finally:
            # Cancelled (the node is stopping): nobody may wait forever.
            self._settle(group + list(self._pending), NoQuorum("the node is stopping"))
            self._pending.clear()
            self._running = False

    @staticmethod
    def _settle(group: list[tuple[T, int, asyncio.Future[None]]], error: Exception | None) -> None:
        for *_, done in group:
            if not done.done():
                if error is None:
                    done.set_result(None)
                else:
                    done.set_exception(error)


class Payloads:
    def __init__(
        self,
        cfg: NodeConfig,
        store: Store,
        session: aiohttp.ClientSession,
        run_db: RunDb,
        sent: Callable[[int], None] = lambda n: None,
    ):
        self._cfg = cfg
        self._sent = sent  # told the payload bytes of each copy a peer stored
        self._store = store
        self._session = session
        self._db = run_db
        self._auth = {"Authorization": f"Bearer {cfg.secret}"}
        self._background: set[asyncio.Task[None]] = set()
        self._suspect_until: dict[str, float] = {}  # peer URL -> monotonic time
        self._writer: Batcher[tuple[str, bytes, float]] = Batcher(
            functools.partial(run_db, store.put_payloads), MAX_BATCH_ITEMS, MAX_WRITE_BYTES
        )
        self._pipes = {
            p.url: Batcher(functools.partial(self._send, p.url), MAX_BATCH_ITEMS, MAX_BATCH_BYTES)
            for p in cfg.peers
        }

    async def store_local(self, job_id: str, data: bytes) -> None:
        await self._writer.submit((job_id, data, time.time()), len(data))

    async def store_batch(self, items: list[tuple[str, bytes, str]]) -> None:
        """Store payloads sent by a peer (wire.decode_batch); they are committed together."""
        await asyncio.gather(*(self.store_local(job_id, data) for job_id, data, _ in items))

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
        tasks += [
            asyncio.ensure_future(self._pipes[url].submit((job_id, data, digest), len(data)))
            for url in peers
        ]
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
        raise NoQuorum(
            f"payload stored on {stored} of {self._cfg.cluster_size} nodes, a "
            f"majority ({self._cfg.majority}) is needed; retry later"
        )

    def _late_copy_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled():
            task.exception()  # already logged by _send; retrieved so asyncio does not warn

    async def _send(self, base: str, items: list[tuple[str, bytes, str]]) -> None:
        """Copy payloads to a peer in one request."""
        try:
            async with self._session.post(
                f"{base}/internal/payloads",
                data=encode_batch(items),
                headers=self._auth,
                timeout=aiohttp.ClientTimeout(total=self._cfg.request_timeout),
            ) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"{base} answered {resp.status}")
            self._sent(sum(len(data) for _, data, _ in items))
        except Exception as e:
            if self._suspect_until.get(base, 0) <= time.monotonic():
                log.warning(
                    "payload copy to %s failed (%s); leaving that peer out for %.0fs",
                    base,
                    type(e).__name__,
                    SUSPECT_SECONDS,
                )
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
                    f"{peer.url}/internal/payloads/{job_id}",
                    params={"local": "1"},
                    headers=self._auth,
                    timeout=aiohttp.ClientTimeout(total=self._cfg.request_timeout / 2),
                ) as resp:
                    if resp.status != 200:
                        continue
                    data = await resp.read()
            except (TimeoutError, aiohttp.ClientError) as e:
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
