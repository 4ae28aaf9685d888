"""Requests to a cluster through any of its nodes, failing over to the next on errors.

A request goes to the node that answered last. A connection error, a timeout or an answer
that says "try again" (429, 502, 503, 504) moves it to the next node; once every node failed,
it waits (backing off, honouring Retry-After) and goes round again until its deadline, then
raises NoNodeAnswers naming what each node said. Other answers go back to the caller.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

RETRY_STATUSES = (429, 502, 503, 504)


class NoNodeAnswers(Exception):
    pass


@dataclass
class Answer:
    status: int
    body: Any  # parsed JSON, or text when the answer was not JSON
    node: str


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
        self.urls = [u.rstrip("/") for u in urls]
        self.headers = {"X-API-Key": api_key} if api_key else {}
        self.timeout = timeout
        self.deadline = deadline
        self.concurrency = concurrency
        self._current = 0
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Nodes:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.concurrency * 2),
            timeout=aiohttp.ClientTimeout(total=self.timeout),
        )
        return self

    async def __aexit__(self, *exc) -> None:
        await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        data: bytes | None = None,
        params: dict | None = None,
        headers: dict | None = None,
    ) -> Answer:
        give_up = time.monotonic() + self.deadline
        delay = 0.2
        failures: dict[str, str] = {}
        while True:
            retry_after = 0.0
            for _ in range(len(self.urls)):
                url = self.urls[self._current]
                try:
                    async with self._session.request(
                        method,
                        url + path,
                        data=data,
                        params=params,
                        headers={**self.headers, **(headers or {})},
                    ) as resp:
                        raw = await resp.read()
                        try:
                            body = await resp.json(content_type=None) if raw else None
                        except ValueError:
                            body = raw.decode(errors="replace")
                        if resp.status not in RETRY_STATUSES:
                            return Answer(resp.status, body, url)
                        failures[url] = f"{resp.status} {_error_text(body)}"
                        retry_after = max(retry_after, _seconds(resp.headers.get("Retry-After")))
                except (TimeoutError, aiohttp.ClientError, OSError) as e:
                    failures[url] = type(e).__name__
                self._current = (self._current + 1) % len(self.urls)
            if time.monotonic() + delay > give_up:
                said = "; ".join(f"{u}: {why}" for u, why in failures.items())
                raise NoNodeAnswers(
                    f"no node answered {method} {path} within {self.deadline:g}s ({said})"
                )
            await asyncio.sleep(min(max(delay, retry_after), max(0.0, give_up - time.monotonic())))
            delay = min(delay * 2, 5.0)


def _error_text(body: Any) -> str:
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])
    return str(body)[:200] if body else ""


def _seconds(value: str | None) -> float:
    try:
        return min(float(value), 30.0) if value else 0.0
    except ValueError:
        return 0.0


def error_text(answer: Answer) -> str:
    return f"{answer.node} answered {answer.status}: {_error_text(answer.body)}"
