"""Calls to the managers' worker API with the cluster secret, each tried once on every manager
in turn (protocol.failover); the worker decides itself when to try again."""

from __future__ import annotations

from typing import Any

import aiohttp

from protocol.failover import Failover


class CallFailed(Exception):
    """A manager refused the call (4xx): retrying it unchanged would not help."""

    def __init__(self, status: int, body: Any):
        super().__init__(f"HTTP {status}: {body}")
        self.status = status


class ManagerClient:
    def __init__(self, urls: list[str], secret: str, session: aiohttp.ClientSession):
        self._managers = Failover(urls, session, headers={"Authorization": f"Bearer {secret}"})

    @property
    def last_contact(self) -> float:
        """When a manager last answered anything (monotonic clock)."""
        return self._managers.last_contact

    async def call(
        self, method: str, path: str, *, json: Any = None, timeout: float = 30.0, raw: bool = False
    ) -> Any:
        """The decoded JSON answer (bytes with raw=True); CallFailed on a refusal,
        protocol.failover.NoNodeAnswers when every manager failed or asked to retry."""
        answer = await self._managers.request(method, path, json=json, timeout=timeout)
        if answer.status >= 400:
            raise CallFailed(answer.status, answer.error())
        return answer.raw if raw else answer.body
