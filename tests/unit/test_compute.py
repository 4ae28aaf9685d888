"""The work function against hashlib, computed here independently."""
import hashlib
import os

import pytest

from worker.compute import iterate_sha512


def reference(payload: bytes, iterations: int) -> str:
    digest = hashlib.new("sha512", payload).digest()
    n = 1
    while n < iterations:
        digest = hashlib.new("sha512", digest).digest()
        n += 1
    return digest.hex()


@pytest.mark.parametrize("payload,iterations", [
    (b"", 1), (b"a", 1), (b"abc", 2), (b"\x00" * 64, 3), (b"\xff" * 128, 10),
    (os.urandom(16 * 1024), 1), (os.urandom(256 * 1024), 7), (os.urandom(1000), 1000),
])
def test_iterated_sha512_matches_hashlib(payload, iterations):
    assert iterate_sha512(payload, iterations) == reference(payload, iterations)


def test_known_vector_for_abc():
    # FIPS 180-2 test vector for SHA-512("abc").
    assert iterate_sha512(b"abc", 1) == (
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
        "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f")


def test_result_is_128_lowercase_hex():
    out = iterate_sha512(b"x", 5)
    assert len(out) == 128 and out == out.lower()


def test_zero_iterations_is_refused():
    with pytest.raises(ValueError):
        iterate_sha512(b"x", 0)
