"""The work function and both kernels against hashlib, computed here independently."""

import hashlib
import os
import random
import shutil

import pytest

from worker import compute
from worker.compute import iterate_sha512, rehash_python

KERNELS = [pytest.param(rehash_python, id="python"), pytest.param("native", id="c")]


def native():
    if compute._sha512 is None:
        if shutil.which("cc") or shutil.which("gcc"):
            pytest.fail("a C compiler is here but the C kernel was not built")
        pytest.skip("no C compiler here: the C kernel is not built")
    return compute._sha512


def kernel(which):
    return native().rehash if which == "native" else which


def chain(digest: bytes, times: int) -> bytes:
    for _ in range(times):
        digest = hashlib.sha512(digest).digest()
    return digest


def reference(payload: bytes, iterations: int) -> str:
    digest = hashlib.new("sha512", payload).digest()
    n = 1
    while n < iterations:
        digest = hashlib.new("sha512", digest).digest()
        n += 1
    return digest.hex()


@pytest.mark.parametrize(
    "payload,iterations",
    [
        (b"", 1),
        (b"a", 1),
        (b"abc", 2),
        (b"\x00" * 64, 3),
        (b"\xff" * 128, 10),
        (os.urandom(16 * 1024), 1),
        (os.urandom(256 * 1024), 7),
        (os.urandom(1000), 1000),
    ],
)
def test_iterated_sha512_matches_hashlib(payload, iterations):
    assert iterate_sha512(payload, iterations) == reference(payload, iterations)


def test_known_vector_for_abc():
    # FIPS 180-2 test vector for SHA-512("abc").
    assert iterate_sha512(b"abc", 1) == (
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
        "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
    )


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
        assert rehash(digest, times) == chain(digest, times)


@pytest.mark.parametrize(
    "digest, times", [(b"x" * 63, 1), (b"x" * 65, 1), (b"", 0), (b"x" * 64, -1)]
)
def test_the_c_kernel_refuses_what_it_cannot_hash(digest, times):
    rehash = kernel("native")
    with pytest.raises(ValueError):
        rehash(digest, times)


@pytest.mark.parametrize("lanes", [1, 2, 7, 8])
def test_the_lanes_kernel_is_bit_identical_on_many_vectors(lanes):
    """Eight chains at once in vector lanes (AVX-512 where the CPU has it) or one by one."""
    k = native()
    rng = random.Random(lanes)
    for _ in range(40):
        digests = [rng.randbytes(64) for _ in range(lanes)]
        times = rng.choice([0, 1, 2, rng.randint(3, 500)])
        out = k.rehash_lanes(b"".join(digests), times)
        assert out == b"".join(chain(d, times) for d in digests)


@pytest.mark.parametrize(
    "digests, times", [(b"", 1), (b"x" * 63, 1), (b"x" * 64 * 9, 1), (b"x" * 64, -1)]
)
def test_the_lanes_kernel_refuses_what_it_cannot_hash(digests, times):
    with pytest.raises(ValueError):
        native().rehash_lanes(digests, times)


@pytest.mark.parametrize("kernels", ["built", "python"])
@pytest.mark.parametrize("lanes", [1, 3, 8])
def test_a_batch_of_jobs_finishes_shortest_first_with_every_result_right(
    lanes, kernels, monkeypatch
):
    if kernels == "python":
        monkeypatch.setattr(compute, "rehash", rehash_python)
        monkeypatch.setattr(compute, "rehash_lanes", compute._lanes_python)
    rng = random.Random(99)
    digests = [rng.randbytes(64) for _ in range(13)]
    times = [rng.choice([0, 1, 5, 50, 300, 301]) for _ in digests]
    steps = list(compute.rehash_batch(digests, times, lanes=lanes))
    done = [pair for step in steps for pair in step]
    assert sorted(i for i, _ in done) == list(range(13))
    for step in steps:  # chains that finish together come out together
        assert len({times[i] for i, _ in step}) == 1
    assert [times[i] for i, _ in done] == sorted(times)
    for i, digest in done:
        assert digest == chain(digests[i], times[i])


def test_the_worker_uses_the_c_kernel_when_it_is_built():
    k = compute._sha512
    assert compute.rehash is (k.rehash if k else rehash_python)
    assert compute.KERNEL == ("python" if k is None else "c-avx512" if k.VECTOR else "c")
    assert compute.LANES == (8 if k is not None and k.VECTOR else 1)
