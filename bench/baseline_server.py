"""`python -m bench.baseline_server`: the single-node, non-replicated reference for `bench ingest`.

What a queue without replication needs per enqueue: aiohttp reads the body, SQLite (WAL,
synchronous=NORMAL, like the nodes' stores) inserts the job with its payload and commits,
and the client gets the job id. Nothing else: no Raft, no copies, no idempotency, no limits
beyond the body size.
"""

from __future__ import annotations

import argparse
import sqlite3
import time
import uuid

import uvloop
from aiohttp import web


def make_app(db_path: str) -> web.Application:
    db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(
        "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, iterations INTEGER, "
        "payload BLOB, enqueued_at REAL)"
    )

    async def enqueue(request: web.Request) -> web.Response:
        iterations = int(request.query.get("iterations", "1"))
        data = await request.read()
        job_id = uuid.uuid4().hex
        db.execute("INSERT INTO jobs VALUES (?, ?, ?, ?)", (job_id, iterations, data, time.time()))
        return web.json_response({"id": job_id})

    app = web.Application(client_max_size=64 << 20)
    app.add_routes([web.put("/enqueue", enqueue)])
    return app


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.baseline_server", description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--db", required=True, help="SQLite file")
    args = p.parse_args()
    # The same event loop as the nodes, so the comparison measures replication, not loops.
    web.run_app(
        make_app(args.db),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        backlog=1024,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
