"""`python -m bench kernel`: nanoseconds per SHA-512 iteration of the worker's kernel, side by
side with the plain hashlib loop and with `openssl speed` on the same 64-byte input size.

The worker's kernel is the eight-lane one where the CPU has AVX-512 (the worker then
computes eight jobs at once), so its figure is per iteration of one chain, measured with all
lanes busy; the single-chain C figure is what one job alone gets."""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import statistics
import subprocess
import time

from worker import compute


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def _ns_per_iteration(rehash, iterations: int, rounds: int) -> list[float]:
    digest = hashlib.sha512(b"kernel benchmark").digest()
    out = []
    for _ in range(rounds):
        started = time.perf_counter()
        rehash(digest, iterations)
        out.append((time.perf_counter() - started) / iterations * 1e9)
    return out


def worker_kernel_ns(iterations: int) -> float:
    """ns per iteration of one chain in the worker's kernel, all its lanes busy."""
    digests = b"".join(hashlib.sha512(bytes([i])).digest() for i in range(compute.LANES))
    started = time.perf_counter()
    compute.rehash_lanes(digests, iterations)
    return (time.perf_counter() - started) / iterations / compute.LANES * 1e9


def _openssl_ns(seconds: int) -> float | None:
    """ns per 64-byte SHA-512 from `openssl speed -evp sha512 -bytes 64` (1000s of bytes/s)."""
    if shutil.which("openssl") is None:
        return None
    done = subprocess.run(
        ["openssl", "speed", "-evp", "sha512", "-bytes", "64", "-seconds", str(seconds)],
        capture_output=True,
        text=True,
    )
    match = re.search(r"^sha512\s+([\d.]+)k", done.stdout, re.MULTILINE)
    if done.returncode != 0 or not match:
        return None
    return 64 / (float(match.group(1)) * 1000) * 1e9


def run(args: argparse.Namespace) -> dict:
    iterations, rounds = (200_000, 3) if args.quick else (2_000_000, 5)
    # Interleaved rounds, so both loops see the same machine state.
    python_ns, native_ns, lanes_ns = [], [], []
    k = compute._sha512
    lanes = compute.LANES
    for _ in range(rounds):
        python_ns += _ns_per_iteration(compute.rehash_python, iterations, 1)
        if k is not None:
            native_ns += _ns_per_iteration(k.rehash, iterations, 1)
            if lanes > 1:
                lanes_ns.append(worker_kernel_ns(iterations))
    single = statistics.median(native_ns) if native_ns else None
    results = {
        "iterations_per_round": iterations,
        "rounds": rounds,
        "kernel": compute.KERNEL,
        "lanes": lanes,
        "hashlib_loop_ns": statistics.median(python_ns),
        "c_single_chain_ns": single,
        "c_lanes_ns": statistics.median(lanes_ns) if lanes_ns else None,
        "openssl_speed_ns": _openssl_ns(1 if args.quick else 3),
        "openssl_version": _openssl_version(),
    }
    results["kernel_ns"] = results["c_lanes_ns"] or single
    if results["kernel_ns"]:
        results["speedup_vs_hashlib"] = results["hashlib_loop_ns"] / results["kernel_ns"]
    return results


def _openssl_version() -> str | None:
    if shutil.which("openssl") is None:
        return None
    return subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout.strip()


def print_table(results: dict) -> None:
    print(
        f"\n{results['rounds']} rounds of {results['iterations_per_round']:,} iterations "
        f"(median); {results['openssl_version'] or 'openssl not found'}"
    )
    print(f"{'kernel':44} {'ns/iteration':>12}")
    rows = [
        (f"C, {results['lanes']} lanes (AVX-512), per chain", results["c_lanes_ns"]),
        ("C, one chain", results["c_single_chain_ns"]),
        ("hashlib loop (Python)", results["hashlib_loop_ns"]),
        ("openssl speed -evp sha512, 64 B", results["openssl_speed_ns"]),
    ]
    for name, ns in rows:
        print(f"{name:44} {'n/a' if ns is None else f'{ns:12.0f}'}")


def targets(results: dict) -> list[str]:
    if results["kernel_ns"] is None:
        return ["MISSED: the C kernel is not built here (no C compiler?)"]
    speedup = results["speedup_vs_hashlib"]
    verdict = "met" if speedup >= 3 else "MISSED"
    return [
        f"{verdict}: the worker's kernel ({results['kernel']}) is {speedup:.2f}x faster "
        "than the hashlib loop (target at least 3x)"
    ]
