"""The work: iterated SHA-512 (DESIGN.md section 1)."""
from __future__ import annotations

import hashlib


def iterate_sha512(payload: bytes, iterations: int) -> str:
    """sha512(payload), then sha512 of the previous digest `iterations - 1` more times; hex."""
    if iterations < 1:
        raise ValueError("iterations must be at least 1")
    sha512 = hashlib.sha512
    out = sha512(payload).digest()
    for _ in range(iterations - 1):
        out = sha512(out).digest()
    return out.hex()
