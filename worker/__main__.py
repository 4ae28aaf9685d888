"""`python -m worker`: lease jobs from the managers, compute them, report the results."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys

import aiohttp

from protocol.secrets import SecretUnreadable, read_secret
from protocol.wire import MAX_LEASE_JOBS
from worker.compute import LANES
from worker.managers import ManagerClient
from worker.runner import BATCH_SECONDS, Worker

log = logging.getLogger("worker")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m worker",
        description="Lease jobs from the managers, compute iterated SHA-512, report results. "
        "The cluster secret comes from WQ_SECRET or --secret-file.",
    )
    p.add_argument(
        "--managers",
        default=os.environ.get("WQ_MANAGERS"),
        help="manager URLs, comma separated; any of them will do (WQ_MANAGERS)",
    )
    p.add_argument("--id", help="worker id shown by the managers (default: <hostname>-<pid>)")
    p.add_argument(
        "--secret-file",
        default=os.environ.get("WQ_SECRET_FILE"),
        help="file holding the cluster secret (WQ_SECRET_FILE)",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=60.0,
        help="seconds without work before exiting; the managers may change it [default: 60]",
    )
    p.add_argument(
        "--orphan-timeout",
        type=float,
        default=30.0,
        help="seconds without any manager answering before exiting [default: 30]",
    )
    p.add_argument(
        "--max-jobs",
        type=int,
        default=MAX_LEASE_JOBS,
        help=f"most jobs leased and computed together, 1 to {MAX_LEASE_JOBS}. Leases "
        f"start at the kernel's lanes ({LANES} here) and grow while batches take "
        f"under {BATCH_SECONDS:g}s [default: {MAX_LEASE_JOBS}]",
    )
    p.add_argument(
        "--log-level",
        default=os.environ.get("WQ_LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING or ERROR (WQ_LOG_LEVEL) [default: INFO]",
    )
    args = p.parse_args(argv)
    args.id = args.id or f"{socket.gethostname()}-{os.getpid()}"
    if not args.managers:
        p.error("--managers (or WQ_MANAGERS) is required")
    if not 1 <= args.max_jobs <= MAX_LEASE_JOBS:
        p.error(f"--max-jobs: allowed 1 to {MAX_LEASE_JOBS}")
    if args.idle_timeout <= 0 or args.orphan_timeout <= 0:
        p.error("--idle-timeout and --orphan-timeout must be positive")
    return args


async def amain(args: argparse.Namespace, secret: str) -> str:
    urls = [u.strip().rstrip("/") for u in args.managers.split(",") if u.strip()]
    main = asyncio.current_task()
    assert main is not None  # running in asyncio.run
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    async with aiohttp.ClientSession() as session:
        worker = Worker(args, ManagerClient(urls, secret, session))
        try:
            return await worker.run()
        except asyncio.CancelledError:
            # Any job was released on the way here; a hash still running in its thread would
            # hold the interpreter's exit until it finished, so leave at once.
            log.info("exiting: stopped (SIGTERM)")
            logging.shutdown()
            os._exit(0)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s worker {args.id} %(levelname)s: %(message)s",
    )
    try:
        secret = read_secret(args.secret_file, "WQ_SECRET")
    except SecretUnreadable as e:
        print(f"python -m worker: --secret-file: {e}", file=sys.stderr)
        return 2
    if len(secret) < 16:
        print(
            "python -m worker: the cluster secret (WQ_SECRET or --secret-file, at least 16 "
            "characters) is required",
            file=sys.stderr,
        )
        return 2
    try:
        reason = asyncio.run(amain(args, secret))
    except KeyboardInterrupt:
        reason = "interrupted"
    log.info("exiting: %s", reason)
    return 0


if __name__ == "__main__":
    sys.exit(main())
