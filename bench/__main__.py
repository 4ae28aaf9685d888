"""`python -m bench [name] [--quick] [--json FILE]`: run one benchmark or all of them, print
their tables and verdicts against the targets, and write the figures as JSON."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback

from bench import (
    capacity,
    endtoend,
    failover,
    ingest,
    kernel,
    overhead,
    scaleup,
    scaling,
    waiters,
)

BENCHMARKS = {
    "ingest": ingest,
    "end-to-end": endtoend,
    "kernel": kernel,
    "failover": failover,
    "scale-up": scaleup,
    "scaling": scaling,
    "overhead": overhead,
    "capacity": capacity,
    "waiters": waiters,
}


def machine() -> dict:
    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in open("/proc/cpuinfo")
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if os.path.exists("/proc/cpuinfo")
        else platform.processor()
    )
    return {
        "host": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "system": platform.platform(),
    }


def versions() -> dict:
    from importlib.metadata import version

    return {
        name: version(name)
        for name in ("replicated-work-queue", "pysyncobj", "aiohttp", "SQLAlchemy")
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument(
        "name",
        nargs="?",
        choices=sorted(BENCHMARKS),
        help="which benchmark to run [default: all, in the order " + ", ".join(BENCHMARKS) + "]",
    )
    p.add_argument("--quick", action="store_true", help="a short smoke run of each")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    for module in BENCHMARKS.values():
        module.add_arguments(p)
    args = p.parse_args(argv)
    names = [args.name] if args.name else list(BENCHMARKS)
    about = {"machine": machine(), "versions": versions(), "quick": args.quick}
    print(
        f"machine: {about['machine']['cpu']}, {about['machine']['cores']} cores, "
        f"Python {about['machine']['python']}"
    )
    print("versions: " + ", ".join(f"{k} {v}" for k, v in about["versions"].items()))
    report = {**about, "benchmarks": {}}
    failed = []
    for name in names:
        module = BENCHMARKS[name]
        print(f"\n=== {name}{' --quick' if args.quick else ''}", flush=True)
        started = time.monotonic()
        try:
            results = module.run(args)
        except Exception as e:  # one broken benchmark must not lose the others' figures
            traceback.print_exc()
            failed.append(name)
            report["benchmarks"][name] = {"error": f"{type(e).__name__}: {e}"}
            continue
        module.print_table(results)
        verdicts = module.targets(results)
        if verdicts:
            print("targets:")
            for line in verdicts:
                print("  " + line)
        report["benchmarks"][name] = {
            "results": results,
            "targets": verdicts,
            "seconds": round(time.monotonic() - started, 1),
        }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    if failed:
        print(f"\nfailed to run: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
