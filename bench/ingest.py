"""`python -m bench ingest`: acknowledged enqueues per second and latency, 64 concurrent
clients, 16 KB and 256 KB bodies, nothing computed; the three-node cluster from this checkout,
with --fsync off and on, beside the single-node, non-replicated reference
(bench/baseline_server.py) in the same run, with the same load generator on the same machine."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import requests

from bench.cluster import Cluster, free_ports, wait_until
from bench.load import run_load
from node.config import NodeConfig

SIZES = {"16 KB": 16 * 1024, "256 KB": 256 * 1024}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clients", type=int, help="concurrent clients [default: 64; --quick: 16]")


def _baseline(root: Path, size: int, seconds: float, warmup: float, clients: int) -> dict:
    (port,) = free_ports(1)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.baseline_server",
            "--port",
            str(port),
            "--db",
            str(root / f"baseline-{size}.db"),
        ]
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: requests.put(url + "/enqueue", data=b"x", timeout=1).ok,
            20,
            "the baseline server",
        )
        return run_load([url], body_bytes=size, clients=clients, seconds=seconds, warmup=warmup)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _cluster(
    root: Path, size: int, seconds: float, warmup: float, clients: int, fsync: str
) -> dict:
    with Cluster(
        root / f"cluster-{size}-{fsync}",
        max_workers=0,
        request_timeout=10,
        max_body_bytes=1 << 20,
        max_queued=10**8,
        fsync=fsync,
    ) as cluster:
        return run_load(
            cluster.urls, body_bytes=size, clients=clients, seconds=seconds, warmup=warmup
        )


def run(args: argparse.Namespace) -> dict:
    # --quick is a smoke run of every row: a second of load each, after half a second, from
    # fewer clients, so that even on a busy machine many requests fit in the second.
    seconds, warmup = (1.0, 0.5) if args.quick else (10.0, 2.0)
    clients = args.clients or (16 if args.quick else 64)
    results = {"clients": clients, "seconds": seconds, "warmup": warmup, "rows": {}}
    with tempfile.TemporaryDirectory(prefix="wq-bench-ingest-") as tmp:
        for label, size in SIZES.items():
            results["rows"][f"baseline {label}"] = _baseline(
                Path(tmp), size, seconds, warmup, clients
            )
            for fsync in ("off", "on"):
                results["rows"][f"cluster {label} fsync {fsync}"] = _cluster(
                    Path(tmp), size, seconds, warmup, clients, fsync
                )
    return results


def print_table(results: dict) -> None:
    print(
        f"\n{results['clients']} clients, {results['seconds']:g}s measured after "
        f"{results['warmup']:g}s warm-up; "
        "cluster: 3 nodes on this machine, requests spread over them"
    )
    print(f"{'system':26} {'acked/s':>9} {'MB/s':>7} {'p50 ms':>8} {'p99 ms':>8}  errors")
    for name, r in results["rows"].items():
        print(
            f"{name:26} {r['per_second']:>9} {r['mb_per_second']:>7} {r['p50_ms']!s:>8} "
            f"{r['p99_ms']!s:>8}  {r['errors'] or ''}"
        )


def targets(results: dict) -> list[str]:
    rows = results["rows"]
    default = NodeConfig.fsync  # the targets hold for the default mode
    other = "off" if default == "on" else "on"
    small, large = rows[f"cluster 16 KB fsync {default}"], rows[f"cluster 256 KB fsync {default}"]
    checks = [
        (small["per_second"] >= 1000, f"16 KB: {small['per_second']}/s (target at least 1,000/s)"),
        ((small["p99_ms"] or 1e9) < 100, f"16 KB: p99 {small['p99_ms']} ms (target under 100 ms)"),
        (
            large["mb_per_second"] >= 40,
            f"256 KB: {large['mb_per_second']} MB/s (target at least 40)",
        ),
    ]
    for label in SIZES:
        ours, base = (
            rows[f"cluster {label} fsync {default}"]["per_second"],
            rows[f"baseline {label}"]["per_second"],
        )
        ratio = ours / base if base else 0
        checks.append(
            (
                ratio >= 0.5,
                f"{label}: {ratio:.2f} of the baseline's throughput (target at least 0.5)",
            )
        )
        alt = rows[f"cluster {label} fsync {other}"]["per_second"]
        checks.append(
            (
                True,
                f"{label}: --fsync {other} runs at {alt / ours if ours else 0:.2f} "
                f"of the default --fsync {default} (measured, no target)",
            )
        )
    return [("met    " if ok else "MISSED ") + text for ok, text in checks]
