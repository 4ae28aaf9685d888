"""Probe managers' /healthz from the operator's machine."""

from __future__ import annotations

import time
import urllib.error
import urllib.request


def probe(url: str, timeout: float = 3.0) -> str:
    """ "healthy", "unhealthy (HTTP n)" or "unreachable"."""
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=timeout) as reply:
            return "healthy" if reply.status == 200 else f"unhealthy (HTTP {reply.status})"
    except urllib.error.HTTPError as e:
        return f"unhealthy (HTTP {e.code})"
    except (OSError, ValueError):
        return "unreachable"


def wait_healthy(urls: list[str], timeout: float, interval: float = 5.0) -> dict[str, str]:
    """Poll until every URL is healthy or `timeout` seconds pass; the last state of each."""
    deadline = time.monotonic() + timeout
    while True:
        states = {url: probe(url) for url in urls}
        if all(s == "healthy" for s in states.values()) or time.monotonic() >= deadline:
            return states
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
