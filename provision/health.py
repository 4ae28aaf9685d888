"""Ask managers over their public API from the operator's machine: /healthz here, and
/status for the rolling replacement (provision.rolling)."""

from __future__ import annotations

import ssl
import time
import urllib.error
import urllib.request

# How an https URL whose handshake failed is reported.
TLS_FAILED = "TLS failed"


def get(
    url: str,
    *,
    timeout: float = 3.0,
    context: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes, str]:
    """GET `url`: (HTTP status, body, ""), or (0, b"", why) when no HTTP answer came:
    "unreachable", or "TLS failed (...)". `context` verifies an https URL (the deployment's
    CA)."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as reply:
            return reply.status, reply.read(), ""
    except urllib.error.HTTPError as e:
        return e.code, e.read(), ""
    except urllib.error.URLError as e:
        if isinstance(e.reason, ssl.SSLError):
            return 0, b"", f"{TLS_FAILED} ({e.reason.reason or e.reason})"
        return 0, b"", "unreachable"
    except (OSError, ValueError):
        return 0, b"", "unreachable"


def probe(url: str, timeout: float = 3.0, context: ssl.SSLContext | None = None) -> str:
    """ "healthy", "unhealthy (HTTP n)", "unreachable" or "TLS failed (...)"."""
    code, _, why = get(f"{url}/healthz", timeout=timeout, context=context)
    if code == 0:
        return why
    return "healthy" if code == 200 else f"unhealthy (HTTP {code})"


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
