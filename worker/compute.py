"""Computing the work (protocol/work.py defines it) fast.

The first hash covers the payload (hashlib: OpenSSL, any length); every later one hashes the
64-byte digest before it. The C kernel (worker/_sha512.c) does that for one chain about twice
as fast as a Python loop over hashlib, and for up to eight independent chains at once (one
per job) in AVX-512 lanes, several times faster again per chain. Without the built kernel,
the same loop runs in Python, one chain after the other.
"""

from __future__ import annotations

from types import ModuleType
from typing import Iterator

from protocol import work

_sha512: ModuleType | None
try:
    from worker import _sha512
except ImportError:  # not built (no C compiler at install time)
    _sha512 = None

KERNEL = "python" if _sha512 is None else ("c-avx512" if _sha512.VECTOR else "c")
# Jobs worth computing together: as many as the kernel has lanes.
LANES = _sha512.LANES if _sha512 is not None and _sha512.VECTOR else 1


rehash_python = work.rehash


def _lanes_python(digests: bytes, times: int) -> bytes:
    return b"".join(rehash_python(digests[i : i + 64], times) for i in range(0, len(digests), 64))


rehash = _sha512.rehash if _sha512 is not None else rehash_python
rehash_lanes = _sha512.rehash_lanes if _sha512 is not None else _lanes_python


def iterate_sha512(payload: bytes, iterations: int) -> str:
    """A job's result (protocol.work.iterate_sha512), with the fastest kernel built here."""
    return work.iterate_sha512(payload, iterations, rehash)


def rehash_batch(
    digests: list[bytes], times: list[int], lanes: int = 8
) -> Iterator[list[tuple[int, bytes]]]:
    """Rehash each digest its own number of times, up to `lanes` chains together; yields the
    (index, final digest) pairs of the chains that finish together, shortest first."""
    state, left = list(digests), list(times)
    active = sorted(range(len(digests)), key=lambda i: left[i])
    while active:
        group = active[:lanes]
        step = left[group[0]]
        if step:
            out = (
                rehash_lanes(b"".join(state[i] for i in group), step)
                if len(group) > 1
                else rehash(state[group[0]], step)
            )
            for j, i in enumerate(group):
                state[i] = out[64 * j : 64 * j + 64]
                left[i] -= step
        finished = []
        while active and left[active[0]] == 0:
            i = active.pop(0)
            finished.append((i, state[i]))
        yield finished
