"""`python -m bench scaling`: the scaling policy against baselines on workload traces, in the
virtual-clock simulator (bench/simulator.py). Nothing real is started; runs in seconds."""

from __future__ import annotations

import argparse

from bench import traces
from bench.baselines import POLICIES
from bench.simulator import hindsight_bound, simulate
from node.scaling.policy import DEFAULT_TARGET, JOB_OVERHEAD, Limits

# Worker models: a local process starts in well under a second; an EC2 instance takes tens
# of seconds from RunInstances to a polling worker.
MODELS = {"local": 0.5, "ec2": 45.0}  # name -> boot delay, seconds
SPEED = 650_000.0  # iterations/s of one worker (hashlib loop, ~1.5 us per iteration here)
MAX_WORKERS = 16


def run(args: argparse.Namespace) -> dict:
    chosen = {name: f for name, f in traces.BUILTIN.items()}
    if args.quick:
        chosen = {
            "on-off": lambda: traces.on_off(duration=1800),
            "tiny": lambda: traces.tiny(jobs=10_000, spread=1.0),
        }
    loaded = {f"file:{path}": traces.load(path) for path in args.trace or []}
    results = {}
    for model, boot in MODELS.items():
        if args.boot is not None:
            model, boot = f"boot {args.boot:g}s", args.boot
        target = DEFAULT_TARGET.get(model, DEFAULT_TARGET["ec2"] if boot > 5 else 5.0)
        limits = Limits(
            max_workers=MAX_WORKERS,
            start_cost=boot,
            default_speed=args.speed,
            job_overhead=args.overhead,
            target_drain_seconds=target,
        )
        for name, trace in [(n, f()) for n, f in chosen.items()] + list(loaded.items()):
            key = f"{name} / {model}"
            rows = {
                p: simulate(
                    trace, policy, limits, boot_delay=boot, speed=args.speed, overhead=args.overhead
                ).row()
                for p, policy in POLICIES.items()
            }
            rows["hindsight bound"] = hindsight_bound(trace, args.speed, args.overhead)
            results[key] = {
                "jobs": len(trace),
                "boot_delay": boot,
                "target": target,
                "overhead": args.overhead,
                "speed": args.speed,
                "rows": rows,
            }
        if args.boot is not None:
            break
    return results


def print_table(results: dict) -> None:
    for key, res in results.items():
        print(
            f"\n{key}: {res['jobs']} jobs, boot delay {res['boot_delay']:g}s, "
            f"drain target {res['target']:g}s, at most {MAX_WORKERS} workers, "
            f"{res['overhead'] * 1000:g} ms per job besides computing"
        )
        print(
            f"  {'policy':<16} {'launches':>9} {'worker-s':>9} {'wait p50':>9} "
            f"{'wait p95':>9} {'wait max':>9}"
        )
        for policy, row in res["rows"].items():
            launches = "-" if row["launches"] is None else row["launches"]
            print(
                f"  {policy:<16} {launches:>9} {row['worker_seconds']:>9} "
                f"{row['wait_p50']:>9} {row['wait_p95']:>9} {row['wait_max']:>9}"
            )


def targets(results: dict) -> list[str]:
    """The autoscaling targets, checked on the on/off trace with the EC2 boot delay, and on
    the many tiny jobs."""
    checks = []
    for key, res in results.items():
        # More than one worker only helps when one cannot do the work within the target.
        work = res["jobs"] * (res["overhead"] + 1 / res["speed"])
        if key.startswith("tiny / ") and work > res["target"]:
            ours, blind = res["rows"]["ours"], res["rows"]["iterations-only"]
            checks.append(
                (
                    ours["launches"] > 1 and ours["wait_max"] < blind["wait_max"],
                    f"{key}: {res['jobs']:,} one-iteration jobs start {ours['launches']} "
                    f"workers, last job waits {ours['wait_max']}s (iterations alone: "
                    f"{blind['launches']} workers, {blind['wait_max']}s)",
                )
            )
    key = next((k for k in results if k.startswith("on-off / ec2")), None)
    if key is None:
        return [("met    " if ok else "MISSED ") + text for ok, text in checks]
    rows = results[key]["rows"]
    ours, fixed, slow = rows["ours"], rows["fixed-60s"], rows["10-min/15s"]
    checks += [
        (
            ours["launches"] <= fixed["launches"] / 2,
            f"launches {ours['launches']} <= half of fixed-60s ({fixed['launches']})",
        ),
        (
            ours["wait_p95"] <= fixed["wait_p95"],
            f"p95 wait {ours['wait_p95']}s <= fixed-60s ({fixed['wait_p95']}s)",
        ),
        (
            ours["worker_seconds"] <= 0.7 * slow["worker_seconds"],
            f"worker-seconds {ours['worker_seconds']} <= 70% of 10-min/15s "
            f"({slow['worker_seconds']})",
        ),
    ]
    return [("met    " if ok else "MISSED ") + text for ok, text in checks]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trace",
        action="append",
        help="a trace file (CSV: time,iterations); may be given several times",
    )
    p.add_argument("--boot", type=float, help="only this boot delay, seconds")
    p.add_argument("--speed", type=float, default=SPEED, help="iterations/s per worker")
    p.add_argument(
        "--overhead",
        type=float,
        default=JOB_OVERHEAD,
        help=f"seconds per job besides its iterations [default: {JOB_OVERHEAD}]",
    )
