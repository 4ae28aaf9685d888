"""Calls to the managers' worker API, failing over from one manager to the next."""

from __future__ import annotations

import logging
import time
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

RETRYABLE = {408, 429, 500, 502, 503, 504}


class NoManager(Exception):
    """No manager answered the call."""


class CallFailed(Exception):
    """A manager refused the call (4xx): retrying it unchanged would not help."""

    def __init__(self, status: int, body: Any):
        super().__init__(f"HTTP {status}: {body}")
        self.status = status


class ManagerClient:
    def __init__(self, urls: list[str], secret: str, session: aiohttp.ClientSession):
        self._urls = urls
        self._current = 0
        self._session = session
        self._auth = {"Authorization": f"Bearer {secret}"}
        self.last_contact = time.monotonic()

    def _rotate(self) -> None:
        self._current = (self._current + 1) % len(self._urls)

    async def call(
        self, method: str, path: str, *, json: Any = None, timeout: float = 30.0, raw: bool = False
    ) -> Any:
        """One call, tried once on each manager in turn until one answers.

        Returns the decoded JSON (or bytes with raw=True); raises CallFailed on a 4xx and
        NoManager when every manager failed or asked to retry."""
        for _ in range(len(self._urls)):
            url = self._urls[self._current] + path
            try:
                async with self._session.request(
                    method,
                    url,
                    json=json,
                    headers=self._auth,
                    timeout=aiohttp.ClientTimeout(total=timeout),
                ) as resp:
                    self.last_contact = time.monotonic()
                    if resp.status in RETRYABLE:
                        log.debug("%s answered %d", url, resp.status)
                    elif resp.status >= 400:
                        raise CallFailed(resp.status, await resp.text())
                    else:
                        return await resp.read() if raw else await resp.json()
            except (TimeoutError, aiohttp.ClientError) as e:
                log.debug("%s failed: %s", url, e)
            self._rotate()
        raise NoManager(f"no manager answered {method} {path}")
