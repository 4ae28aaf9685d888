"""Probe managers' /healthz from the operator's machine."""

from __future__ import annotations

import ssl
import time
import urllib.error
import urllib.request


def probe(url: str, timeout: float = 3.0, context: ssl.SSLContext | None = None) -> str:
    """ "healthy", "unhealthy (HTTP n)" or "unreachable". `context` verifies an https URL
    (the deployment's CA)."""
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=timeout, context=context) as reply:
            return "healthy" if reply.status == 200 else f"unhealthy (HTTP {reply.status})"
    except urllib.error.HTTPError as e:
        return f"unhealthy (HTTP {e.code})"
    except urllib.error.URLError as e:
        if isinstance(e.reason, ssl.SSLError):
            return f"TLS failed ({e.reason.reason or e.reason})"
        return "unreachable"
    except (OSError, ValueError):
        return "unreachable"


def wait_healthy(
    urls: list[str], timeout: float, interval: float = 5.0, context: ssl.SSLContext | None = None
) -> dict[str, str]:
    """Poll until every URL is healthy or `timeout` seconds pass; the last state of each."""
    deadline = time.monotonic() + timeout
    while True:
        states = {url: probe(url, context=context) for url in urls}
        if all(s == "healthy" for s in states.values()) or time.monotonic() >= deadline:
            return states
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
