"""`wq` (or `python -m client`): submit work to the cluster, wait for it, read results, see
the cluster's state."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import IO

from client import commands
from client.aio import AsyncClient
from client.errors import Unavailable
from client.nodes import Nodes, NoNodeAnswers, default_urls
from protocol.secrets import SecretUnreadable, read_secret

NO_NODE = 3

DESCRIPTION = """\
Client of the replicated work queue. Talks to any node and fails over to the next one on
errors; says so clearly when no node answers (exit code 3). Results and ids are written as
JSON lines to stdout (or --output), progress bars and errors to stderr.

commands:
  submit FILE...   upload each file as one job (iterated SHA-512, --iterations times),
                   --batch-size files per request; prints {"file", "id", "iterations",
                   "after"} per file. Each request keeps one Idempotency-Key across
                   retries, so a retry never makes a second job.
  wait JOBS...     wait until the jobs finish; JOBS are job ids or files of JSON lines as
                   submit prints them ('-' reads stdin). Prints {"id", "status", "result"}
                   per job; --verify recomputes each digest from its file here. Reads the
                   completion feed from the positions submit printed: no polling.
  follow           print the completion feed after --after, in order, as it grows.
  pull             the most recently completed jobs (POST /pullCompleted).
  status           members, roles and health, the leader, the queue, workers and scaling.

exit codes: 0 done; 1 some files or jobs failed (see stderr); 2 bad arguments; 3 no node
answered."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="wq", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--url",
        action="append",
        dest="urls",
        metavar="URL",
        help="a node's base URL; repeat it or separate with commas (WQ_URLS) "
        "[default: the three nodes of ./run_local.sh]",
    )
    p.add_argument("--api-key-file", help="file holding the API key (or set WQ_API_KEY)")
    p.add_argument(
        "--cacert",
        help="PEM file of the CA that signed the nodes' certificates, for https:// URLs "
        "(`python -m provision ca`, or .cluster/tls/ca.pem of `TLS=1 ./run_local.sh`; or set "
        "WQ_CACERT) [default: the system's CAs]",
    )
    p.add_argument(
        "--timeout", type=float, default=30.0, help="seconds per HTTP request [default: 30]"
    )
    p.add_argument(
        "--deadline",
        type=float,
        default=120.0,
        help="seconds one call keeps failing over and retrying before giving up [default: 120]",
    )
    p.add_argument(
        "--concurrency", type=int, default=8, help="requests in flight at once [default: 8]"
    )
    p.add_argument("--output", "-o", help="write JSON lines to this file [default: stdout]")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser(
        "submit",
        help="upload files as jobs",
        description="Upload each FILE as a job; print its id as a JSON line.",
    )
    s.add_argument("files", nargs="+", metavar="FILE")
    s.add_argument(
        "--iterations",
        "-n",
        type=int,
        required=True,
        help="SHA-512 iterations per job (1 to the cluster's --max-iterations)",
    )
    s.add_argument(
        "--batch-size",
        type=int,
        default=100,
        help="files per request (at most the cluster's --max-batch-jobs) [default: 100]",
    )

    w = sub.add_parser(
        "wait",
        help="wait for jobs and print their results",
        description="Wait until the jobs finish; print each result as a JSON "
        "line. JOBS: ids, or files of submit's JSON lines ('-': stdin).",
    )
    w.add_argument("jobs", nargs="+", metavar="JOBS")
    w.add_argument(
        "--verify",
        action="store_true",
        help="recompute each completed job's digest from its file (needs the "
        "'file' and 'iterations' that submit printed)",
    )
    w.add_argument(
        "--wait-timeout",
        type=float,
        help="give up after this many seconds (exit code 1) [default: never]",
    )

    f = sub.add_parser(
        "follow",
        help="print the completion feed",
        description="Print every completion and failure after a position of the completion "
        "feed, in order, as they happen; each line has the 'position' to resume from.",
    )
    f.add_argument("--after", type=int, default=0, help="the position to start after [default: 0]")
    f.add_argument("--count", type=int, help="stop after this many [default: never]")

    pl = sub.add_parser(
        "pull",
        help="most recently completed jobs",
        description="Print the most recently completed jobs, newest first.",
    )
    pl.add_argument("--top", type=int, default=100, help="how many (1-1000) [default: 100]")

    st = sub.add_parser(
        "status",
        help="members, leader, queue and workers",
        description="A table of the members (role, health, Raft term and "
        "applied index), the leader, queue counts, workers and "
        "scaling.",
    )
    st.add_argument("--json", action="store_true", help="print the raw JSON instead")
    return p


def _urls(args: argparse.Namespace) -> list[str]:
    given = args.urls or []
    urls = [u.strip() for item in given for u in item.split(",") if u.strip()]
    return urls or default_urls()


def _api_key(args: argparse.Namespace) -> str:
    return read_secret(args.api_key_file, "WQ_API_KEY")


async def run(args: argparse.Namespace, out: IO[str]) -> int:
    progress = not args.no_progress and sys.stderr.isatty()
    if args.command in ("submit", "wait", "follow"):
        async with AsyncClient(
            _urls(args),
            api_key=_api_key(args),
            cacert=args.cacert,
            timeout=args.timeout,
            deadline=args.deadline,
            concurrency=args.concurrency,
        ) as client:
            if args.command == "submit":
                return await commands.submit(
                    client,
                    args.files,
                    args.iterations,
                    out,
                    progress,
                    args.batch_size,
                    args.concurrency,
                )
            if args.command == "wait":
                return await commands.wait(
                    client,
                    commands.read_jobs(args.jobs),
                    out,
                    progress,
                    args.verify,
                    args.wait_timeout,
                )
            return await commands.follow(client, args.after, args.count, out)
    async with Nodes(
        _urls(args), _api_key(args), args.timeout, args.deadline, args.concurrency, args.cacert
    ) as nodes:
        if args.command == "pull":
            return await commands.pull(nodes, args.top, out)
        return await commands.status(nodes, out, args.json)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.timeout <= 0 or args.deadline <= 0:
        parser.error("--concurrency, --timeout and --deadline must be positive")
    if args.command == "submit" and (args.iterations < 1 or args.batch_size < 1):
        parser.error("--iterations and --batch-size: at least 1")
    if args.command == "follow" and (args.after < 0 or (args.count or 0) < 0):
        parser.error("--after and --count: at least 0")
    try:
        out = open(args.output, "a", encoding="utf-8") if args.output else sys.stdout
    except OSError as e:
        parser.error(f"--output: {e.strerror}")
    try:
        with out if args.output else contextlib.nullcontext():
            return asyncio.run(run(args, out))
    except (NoNodeAnswers, Unavailable) as e:
        print(f"wq: {e}", file=sys.stderr)
        return NO_NODE
    except (OSError, ValueError, SecretUnreadable) as e:
        print(f"wq: {e}", file=sys.stderr)
        return commands.FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
