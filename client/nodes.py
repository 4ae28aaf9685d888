"""The `wq` client's connection to a cluster: one HTTP session, requests that fail over
between the nodes until a deadline (protocol.failover), the API key on every request."""

from __future__ import annotations

import os
import ssl
from typing import Mapping

import aiohttp

from protocol.failover import Answer, Failover, NoNodeAnswers

__all__ = ["Answer", "NoNodeAnswers", "Nodes", "default_urls"]


def default_urls() -> list[str]:
    """WQ_URLS (comma-separated), else the three nodes of ./run_local.sh."""
    text = (
        os.environ.get("WQ_URLS")
        or "http://127.0.0.1:8001,http://127.0.0.1:8002,http://127.0.0.1:8003"
    )
    return [u.strip() for u in text.split(",") if u.strip()]


class Nodes:
    def __init__(
        self,
        urls: list[str],
        api_key: str = "",
        timeout: float = 30.0,
        deadline: float = 120.0,
        concurrency: int = 8,
        cacert: str | None = None,
    ):
        """`cacert`: a PEM file of the CA that signed the nodes' certificates (https:// URLs
        of a deployment with its own CA); default WQ_CACERT, else the system's CAs."""
        if not urls:
            raise ValueError("at least one node URL is required")
        self.urls = urls
        self.headers = {"X-API-Key": api_key} if api_key else {}
        self.timeout = timeout
        self.deadline = deadline
        self.concurrency = concurrency
        cafile = cacert if cacert is not None else os.environ.get("WQ_CACERT", "")
        self.tls = None
        if cafile:  # loaded now: a missing or broken file is an error here, not at a call
            try:
                self.tls = ssl.create_default_context(cafile=cafile)
            except (OSError, ssl.SSLError) as e:
                raise ValueError(f"cacert: cannot load {cafile}: {e}") from None
        self._session: aiohttp.ClientSession | None = None
        self._failover: Failover | None = None

    async def __aenter__(self) -> Nodes:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=self.concurrency * 2, ssl=self.tls if self.tls is not None else True
            ),
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
        timeout: float | None = None,
    ) -> Answer:
        if self._failover is None:
            raise RuntimeError("use Nodes as an async context manager")
        return await self._failover.request(
            method, path, data=data, params=params, headers=headers, timeout=timeout
        )
