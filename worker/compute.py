"""The work: iterated SHA-512 (DESIGN.md section 1).

The first hash covers the payload (hashlib: OpenSSL, any length); every later one hashes the
64-byte digest before it, which the C kernel (worker/_sha512.c) does about five times faster
than a Python loop over hashlib. Without the built kernel, the same loop runs in Python.
"""
from __future__ import annotations

import hashlib

try:
    from ._sha512 import rehash as _native_rehash
except ImportError:          # not built (no C compiler at install time)
    _native_rehash = None

KERNEL = "c" if _native_rehash is not None else "python"


def rehash_python(digest: bytes, times: int) -> bytes:
    sha512 = hashlib.sha512
    for _ in range(times):
        digest = sha512(digest).digest()
    return digest


rehash = _native_rehash or rehash_python


def iterate_sha512(payload: bytes, iterations: int) -> str:
    """sha512(payload), then sha512 of the previous digest `iterations - 1` more times; hex."""
    if iterations < 1:
        raise ValueError("iterations must be at least 1")
    return rehash(hashlib.sha512(payload).digest(), iterations - 1).hex()
