"""The work function and both kernels against hashlib, computed here independently."""
import hashlib
import os
import random
import shutil

import pytest

from worker import compute
from worker.compute import iterate_sha512, rehash_python

KERNELS = [pytest.param(rehash_python, id="python"), pytest.param("native", id="c")]


def kernel(which):
    if which != "native":
        return which
    if compute._native_rehash is None:
        if shutil.which("cc") or shutil.which("gcc"):
            pytest.fail("a C compiler is here but the C kernel was not built")
        pytest.skip("no C compiler here: the C kernel is not built")
    return compute._native_rehash


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


@pytest.mark.parametrize("which", KERNELS)
def test_each_kernel_is_bit_identical_to_hashlib_on_many_vectors(which):
    rehash = kernel(which)
    rng = random.Random(512)
    for _ in range(300):
        digest = rng.randbytes(64)
        times = rng.choice([0, 1, 2, 3, rng.randint(4, 300)])
        expected = digest
        for _ in range(times):
            expected = hashlib.sha512(expected).digest()
        assert rehash(digest, times) == expected


@pytest.mark.parametrize("digest, times", [(b"x" * 63, 1), (b"x" * 65, 1), (b"", 0), (b"x" * 64, -1)])
def test_the_c_kernel_refuses_what_it_cannot_hash(digest, times):
    rehash = kernel("native")
    with pytest.raises(ValueError):
        rehash(digest, times)


def test_the_worker_uses_the_c_kernel_when_it_is_built():
    assert compute.rehash is (compute._native_rehash or rehash_python)
    assert compute.KERNEL == ("c" if compute._native_rehash else "python")
