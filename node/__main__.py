"""`python -m node`: run one manager node until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import logging
import resource
import signal
import sys

import uvloop

from node.app import Node
from node.config import load_config
from node.errors import ConfigError
from node.observability import logs
from node.replication.raft import RecoveryError


async def serve(node: Node) -> None:
    await node.start()
    # What is alive once the node serves (modules, tables, the app) stays alive: frozen, the
    # collector stops scanning it, and a full collection under load pauses every thread of
    # the node for about 1 ms instead of 35.
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logging.getLogger("node").info("stopping")
    await node.stop()


def raise_open_files_limit() -> None:
    """Every client connection holds a file descriptor; allow as many as the system lets us."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = load_config(argv)
    except ConfigError as e:
        print(f"python -m node: configuration error: {e}", file=sys.stderr)
        return 2
    logs.setup(cfg.log_level, cfg.log_format, cfg.node_id, cfg.log_file)
    raise_open_files_limit()
    try:
        node = Node(cfg)
    except OSError as e:
        print(f"python -m node: cannot open the data directory: {e}", file=sys.stderr)
        return 1
    # uvloop's event loop: the same asyncio API, about 14% more enqueues per second than the
    # standard loop on a loaded node (BENCHMARKS.md).
    try:
        uvloop.run(serve(node))
    except RecoveryError as e:
        print(f"python -m node: refusing to start: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
