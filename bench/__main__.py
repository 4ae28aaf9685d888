"""`python -m bench [name] [--quick] [--json FILE]`: run benchmarks, print tables, write JSON."""
from __future__ import annotations

import argparse
import json
import platform
import sys

from . import kernel, scaling

BENCHMARKS = {"kernel": kernel, "scaling": scaling}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("name", nargs="?", choices=sorted(BENCHMARKS), default="scaling",
                   help="which benchmark to run")
    p.add_argument("--quick", action="store_true", help="a short smoke run")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    for module in BENCHMARKS.values():
        module.add_arguments(p)
    args = p.parse_args(argv)
    module = BENCHMARKS[args.name]
    print(f"benchmark {args.name} on {platform.node()} ({platform.machine()}, "
          f"Python {platform.python_version()}){' --quick' if args.quick else ''}")
    results = module.run(args)
    module.print_table(results)
    verdicts = module.targets(results)
    if verdicts:
        print("\ntargets:")
        for line in verdicts:
            print("  " + line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": args.name, "quick": args.quick, "results": results,
                       "targets": verdicts}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
