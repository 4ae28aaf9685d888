"""Calls to the cluster through any of its nodes, failing over to the next on errors.

One retry rule for everything that talks to the managers (workers, the `wq` client): a call
goes to the node that answered last. A connection error, a timeout or an answer that says
"try elsewhere or later" (RETRY_STATUSES) moves it to the next node. Once every node failed,
the call waits (backing off, honouring Retry-After) and goes round again until its deadline,
then raises NoNodeAnswers naming what each node said; with no deadline it raises after one
round. Any other answer, an error included, goes back to the caller.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import logging
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Mapping, Sequence

import aiohttp

log = logging.getLogger(__name__)

# Worth trying on another node or later: timeouts, overload, no leader or quorum, and a
# node's internal error (every call the managers take is safe to repeat).
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
FIRST_BACKOFF = 0.2
MAX_BACKOFF = 5.0
MAX_RETRY_AFTER = 30.0


class NoNodeAnswers(Exception):
    """No node gave an answer other than "retry" before the call's deadline."""


@dataclass(frozen=True)
class Answer:
    status: int
    raw: bytes
    node: str  # the URL of the node that answered

    @cached_property
    def body(self) -> Any:
        """Parsed JSON; the text when the answer was not JSON; None when it was empty."""
        if not self.raw:
            return None
        try:
            return jsonlib.loads(self.raw)
        except ValueError:
            return self.raw.decode(errors="replace")

    def error(self) -> str:
        """What the answer says went wrong: its JSON "error", or the start of its text."""
        body = self.body
        if isinstance(body, dict) and "error" in body:
            return str(body["error"])
        return str(body)[:200] if body else ""

    def __str__(self) -> str:
        return f"{self.node} answered {self.status}: {self.error()}"


# How a TLS failure (an untrusted or mismatched certificate) is reported.
UNTRUSTED = "TLS: "


class Failover:
    def __init__(
        self,
        urls: Sequence[str],
        session: aiohttp.ClientSession,
        *,
        headers: Mapping[str, str] | None = None,
        deadline: float = 0.0,
    ):
        if not urls:
            raise ValueError("at least one node URL is required")
        self.urls = [u.rstrip("/") for u in urls]
        self.deadline = deadline
        self._session = session
        self._headers = dict(headers or {})
        self._current = 0
        # When a node last answered anything at all (monotonic clock).
        self.last_contact = time.monotonic()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Answer:
        give_up = time.monotonic() + self.deadline
        delay = FIRST_BACKOFF
        failures: dict[str, str] = {}
        extra: dict[str, Any] = {}
        if timeout is not None:
            extra["timeout"] = aiohttp.ClientTimeout(total=timeout)
        while True:
            retry_after = 0.0
            for _ in range(len(self.urls)):
                url = self.urls[self._current]
                try:
                    async with self._session.request(
                        method,
                        url + path,
                        json=json,
                        data=data,
                        params=params,
                        headers={**self._headers, **(headers or {})},
                        **extra,
                    ) as resp:
                        answer = Answer(resp.status, await resp.read(), url)
                        self.last_contact = time.monotonic()
                        if resp.status not in RETRY_STATUSES:
                            return answer
                        failures[url] = f"{resp.status} {answer.error()}"
                        retry_after = max(retry_after, _seconds(resp.headers.get("Retry-After")))
                except aiohttp.ClientSSLError as e:
                    failures[url] = f"{UNTRUSTED}{e}"
                except (TimeoutError, aiohttp.ClientError, OSError) as e:
                    failures[url] = type(e).__name__
                log.debug("%s %s%s failed: %s", method, url, path, failures[url])
                self._current = (self._current + 1) % len(self.urls)
            if len(failures) == len(self.urls) and all(
                why.startswith(UNTRUSTED) for why in failures.values()
            ):
                # Waiting does not make a certificate trusted: say so now.
                said = "; ".join(f"{u}: {why}" for u, why in failures.items())
                raise NoNodeAnswers(f"no node's certificate is trusted ({said})")
            if time.monotonic() + delay > give_up:
                said = "; ".join(f"{u}: {why}" for u, why in failures.items())
                within = f" within {self.deadline:g}s" if self.deadline else ""
                raise NoNodeAnswers(f"no node answered {method} {path}{within} ({said})")
            await asyncio.sleep(min(max(delay, retry_after), max(0.0, give_up - time.monotonic())))
            delay = min(delay * 2, MAX_BACKOFF)


def _seconds(value: str | None) -> float:
    """A Retry-After in seconds (capped); 0 when absent or not a number."""
    try:
        return min(float(value), MAX_RETRY_AFTER) if value else 0.0
    except ValueError:
        return 0.0
