"""The `wq` client's connection to a cluster: one HTTP session, requests that fail over
between the nodes until a deadline (protocol.failover), the API key on every request."""

from __future__ import annotations

from typing import Mapping

import aiohttp

from protocol.failover import Answer, Failover, NoNodeAnswers

__all__ = ["Answer", "NoNodeAnswers", "Nodes"]


class Nodes:
    def __init__(
        self,
        urls: list[str],
        api_key: str = "",
        timeout: float = 30.0,
        deadline: float = 120.0,
        concurrency: int = 8,
    ):
        if not urls:
            raise ValueError("at least one node URL is required")
        self.urls = urls
        self.headers = {"X-API-Key": api_key} if api_key else {}
        self.timeout = timeout
        self.deadline = deadline
        self.concurrency = concurrency
        self._session: aiohttp.ClientSession | None = None
        self._failover: Failover | None = None

    async def __aenter__(self) -> Nodes:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.concurrency * 2),
            timeout=aiohttp.ClientTimeout(total=self.timeout),
        )
        self._failover = Failover(
            self.urls, self._session, headers=self.headers, deadline=self.deadline
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        data: bytes | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        if self._failover is None:
            raise RuntimeError("use Nodes as an async context manager")
        return await self._failover.request(method, path, data=data, params=params, headers=headers)
