"""The Celery side of `bench end-to-end`, run with the Python of the bench's own Celery
environment (.bench/celery-venv), never imported by the package.

`python celery_side.py worker BROKER` runs the task module's worker; `python celery_side.py
client BROKER JOBS BYTES ITERATIONS CLIENTS` enqueues the jobs from CLIENTS threads, waits
for every result and prints the timings as JSON.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from celery import Celery

app = Celery("wqbench", broker=sys.argv[2], backend=sys.argv[2])
# JSON, Celery's default: payloads travel base64-encoded (pickle would need C_FORCE_ROOT
# wherever the bench runs as root, and is not what a careful Celery user turns on).
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    broker_pool_limit=64,
    worker_hijack_root_logger=False,
)


@app.task(name="wqbench.work")
def work(payload_b64: str, iterations: int) -> str:
    """The same work as ours: sha512(payload), then of the digest, iterations - 1 more times."""
    digest = hashlib.sha512(base64.b64decode(payload_b64)).digest()
    for _ in range(iterations - 1):
        digest = hashlib.sha512(digest).digest()
    return digest.hex()


def client(jobs: int, size: int, iterations: int, clients: int) -> dict:
    payloads = [os.urandom(size) for _ in range(clients)]
    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        handles = list(
            pool.map(
                lambda n: work.delay(base64.b64encode(payloads[n % clients]).decode(), iterations),
                range(jobs),
            )
        )
    enqueued = time.monotonic()
    results = [h.get(timeout=600) for h in handles]
    finished = time.monotonic()
    expected = {}
    for n, result in enumerate(results[:50]):  # spot-check against hashlib here
        payload = payloads[n % clients]
        if payload not in expected:
            d = hashlib.sha512(payload).digest()
            for _ in range(iterations - 1):
                d = hashlib.sha512(d).digest()
            expected[payload] = d.hex()
        assert result == expected[payload], "celery computed a wrong digest"
    return {"enqueue_s": enqueued - started, "total_s": finished - started}


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        app.worker_main(
            [
                "worker",
                "--concurrency",
                sys.argv[3],
                "--pool",
                "prefork",
                "--loglevel",
                "WARNING",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ]
        )
    else:
        print(json.dumps(client(*(int(a) for a in sys.argv[3:7]))))
