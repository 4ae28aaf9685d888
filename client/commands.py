"""The client's commands. Each returns the process exit code; records go to `out` as JSON
lines as they arrive, progress bars to stderr."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from typing import IO, Any, Iterable

from tqdm import tqdm

from client.nodes import Nodes
from protocol.ids import JOB_ID
from protocol.work import iterate_sha512

OK, FAILED = 0, 1
# One JSON line of input or output: a submitted job's record, a job as a node shows it.
Record = dict[str, Any]
# A node answers 404 for a job it has not applied yet (just submitted through another node);
# a job is reported unknown only once every answer said so for this long.
UNKNOWN_AFTER = 10.0


def _emit(out: IO[str], record: Record) -> None:
    out.write(json.dumps(record) + "\n")
    out.flush()


def _bar(total: int, desc: str, unit: str, show: bool) -> tqdm:
    return tqdm(
        total=total, desc=desc, unit=unit, file=sys.stderr, disable=not show, dynamic_ncols=True
    )


async def submit(
    nodes: Nodes, files: list[str], iterations: int, out: IO[str], progress: bool
) -> int:
    """Upload each file as a job. Every file gets one Idempotency-Key for all its attempts,
    so a retry (on this node or another) never creates a second job."""
    gate = asyncio.Semaphore(nodes.concurrency)
    bar = _bar(len(files), "submitted", "file", progress)
    failures = 0

    async def one(path: str) -> None:
        nonlocal failures
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            failures += 1
            bar.write(f"{path}: cannot read: {e.strerror}", file=sys.stderr)
            bar.update(1)
            return
        key = uuid.uuid4().hex
        async with gate:
            answer = await nodes.request(
                "PUT",
                "/enqueue",
                data=data,
                params={"iterations": str(iterations)},
                headers={"Idempotency-Key": key},
            )
        if answer.status == 200:
            _emit(out, {"file": path, "id": answer.body["id"], "iterations": iterations})
        else:
            failures += 1
            bar.write(f"{path}: not submitted: {answer}", file=sys.stderr)
        bar.update(1)

    try:
        await asyncio.gather(*(one(p) for p in files))
    finally:
        bar.close()
    if failures:
        print(f"{failures} of {len(files)} files not submitted", file=sys.stderr)
    return FAILED if failures else OK


def read_jobs(sources: Iterable[str]) -> list[Record]:
    """Jobs to wait for: ids, or files of JSON lines as `submit` writes them ('-': stdin)."""
    jobs: dict[str, Record] = {}
    for source in sources:
        if JOB_ID.fullmatch(source):
            jobs.setdefault(source, {"id": source})
            continue
        with open(source, encoding="utf-8") if source != "-" else sys.stdin as f:
            for n, line in enumerate(f, start=1):
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    record = {"id": line}
                if not isinstance(record, dict) or not JOB_ID.fullmatch(str(record.get("id"))):
                    raise ValueError(f"{source}:{n}: not a job id or a JSON line with an 'id'")
                jobs.setdefault(record["id"], record)
    return list(jobs.values())


def _verify(record: Record, result: str) -> bool | None:
    """Whether `result` is the iterated SHA-512 of the job's file, computed here."""
    path, iterations = record.get("file"), record.get("iterations")
    if not isinstance(path, str) or not isinstance(iterations, int):
        return None
    with open(path, "rb") as f:
        return iterate_sha512(f.read(), iterations) == result


async def wait(
    nodes: Nodes,
    jobs: list[Record],
    out: IO[str],
    progress: bool,
    verify: bool,
    interval: float,
    timeout: float | None,
) -> int:
    """Poll until every job completed or failed; one JSON line per finished job."""
    pending = {j["id"]: j for j in jobs}
    gate = asyncio.Semaphore(nodes.concurrency)
    bar = _bar(len(pending), "finished", "job", progress)
    give_up = None if timeout is None else time.monotonic() + timeout
    missing_since: dict[str, float] = {}
    bad = 0

    async def check(job_id: str) -> None:
        nonlocal bad
        async with gate:
            answer = await nodes.request("GET", f"/work/{job_id}")
        record = pending[job_id]
        if answer.status == 200 and answer.body["status"] in ("queued", "running"):
            return
        if (
            answer.status == 404
            and time.monotonic() - missing_since.setdefault(job_id, time.monotonic())
            < UNKNOWN_AFTER
        ):
            return
        del pending[job_id]
        bar.update(1)
        line: Record = {k: record[k] for k in ("file", "iterations") if k in record}
        if answer.status != 200:
            bad += 1
            _emit(out, {"id": job_id, "status": "unknown", "error": str(answer), **line})
            return
        job = answer.body
        line.update({"id": job_id, "status": job["status"]})
        if job["status"] == "completed":
            line["result"] = job["result"]
            if verify:
                line["verified"] = await asyncio.to_thread(_verify, record, job["result"])
                bad += line["verified"] is False
        else:
            bad += 1
            line["error"] = job.get("error")
        _emit(out, line)

    try:
        while pending:
            await asyncio.gather(*(check(job_id) for job_id in list(pending)))
            if not pending:
                break
            if give_up is not None and time.monotonic() >= give_up:
                print(f"{len(pending)} jobs still unfinished after {timeout:g}s", file=sys.stderr)
                return FAILED
            await asyncio.sleep(interval)
    finally:
        bar.close()
    if bad:
        print(f"{bad} of {len(jobs)} jobs failed, are unknown or did not verify", file=sys.stderr)
    return FAILED if bad else OK


async def pull(nodes: Nodes, top: int, out: IO[str]) -> int:
    answer = await nodes.request("POST", "/pullCompleted", params={"top": str(top)})
    if answer.status != 200:
        print(answer, file=sys.stderr)
        return FAILED
    for job in answer.body:
        _emit(out, job)
    return OK


async def status(nodes: Nodes, out: IO[str], as_json: bool) -> int:
    answer = await nodes.request("GET", "/dashboard/data")
    if answer.status != 200:
        print(answer, file=sys.stderr)
        return FAILED
    if as_json:
        _emit(out, answer.body)
        return OK
    members = answer.body["members"]
    rows = [("NODE", "ROLE", "HEALTH", "TERM", "APPLIED", "URL")]
    for m in members:
        if m["reachable"]:
            rows.append(
                (
                    m["node"],
                    m["role"],
                    "ok" if m["healthy"] else m["health"],
                    str(m["raft"]["term"]),
                    str(m["raft"]["last_applied"]),
                    m["url"],
                )
            )
        else:
            rows.append(("?", "unreachable", m["error"], "-", "-", m["url"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        out.write("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() + "\n")
    leader = next((m for m in members if m["reachable"] and m["role"] == "leader"), None)
    source = leader or next(m for m in members if m.get("self"))
    q, w = source["queue"], source["worker_states"]
    out.write(
        f"\nleader: {leader['node'] if leader else 'none'}\n"
        f"queue: {q['queued']} queued, {q['running']} running, {q['completed']} "
        f"completed, {q['failed']} failed\n"
        f"workers: {w['busy']} busy, {w['idle']} idle, {w['booting']} booting\n"
    )
    scaling = source.get("scaling")
    if scaling:
        idle = scaling["idle_timeout"]
        last = scaling["last_decision"]
        out.write(
            f"scaling: {scaling['backend']} backend, idle timeout "
            f"{'none' if idle is None else f'{idle:.0f}s'}"
            f"{', last decision: ' + last['reason'] if last else ''}\n"
        )
    return OK


def default_urls() -> list[str]:
    text = (
        os.environ.get("WQ_URLS")
        or "http://127.0.0.1:8001,http://127.0.0.1:8002,http://127.0.0.1:8003"
    )
    return [u.strip() for u in text.split(",") if u.strip()]
