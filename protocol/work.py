"""The work, defined: iterated SHA-512 of a payload.

sha512(payload), then sha512 of the previous digest `iterations - 1` more times. This is the
plain-Python definition; workers compute it with a faster kernel (worker/compute.py) and
clients use this one to check a result on their own.
"""

from __future__ import annotations

import hashlib
from typing import Callable


def rehash(digest: bytes, times: int) -> bytes:
    sha512 = hashlib.sha512
    for _ in range(times):
        digest = sha512(digest).digest()
    return digest


def iterate_sha512(
    payload: bytes, iterations: int, rehash: Callable[[bytes, int], bytes] = rehash
) -> str:
    """The result of a job, hex; `rehash` may be a faster equivalent of this module's."""
    if iterations < 1:
        raise ValueError("iterations must be at least 1")
    return rehash(hashlib.sha512(payload).digest(), iterations - 1).hex()
